//! A stream consumer's task: deliver while the consumer has credit, its
//! channel has room and the log has more; sleep until one of them changes.
//!
//! The log wakes it when a sync makes more records readable, an
//! acknowledgement when credit comes back, its channel (through
//! `Queue::dispatch`) when a congested connection drains. Reading from the
//! segments can touch the disk, so it runs as blocking work.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::StreamConsumer;
use crate::queue::locked::blocking;
use crate::queue::{Queue, QueuedMessage};
use crate::store::Stored;

/// Deliveries made before the task yields to others.
const BATCH: usize = 256;

/// How long a task out of credit sleeps before looking again, at first:
/// acks that bring back less than a batch's credit do not wake it (see
/// `StreamQueue::settle`). Doubled while nothing comes back, up to
/// `CREDIT_CHECK_MAX`, so a consumer that holds its whole prefetch for an
/// hour costs a wake-up a second, not a thousand.
const CREDIT_CHECK: Duration = Duration::from_millis(2);
const CREDIT_CHECK_MAX: Duration = Duration::from_secs(1);

pub(super) fn start(queue: Arc<Queue>, consumer: Arc<StreamConsumer>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!("a stream consumer needs the runtime; it gets nothing");
        return;
    };
    runtime.spawn(run(queue, consumer));
}

async fn run(queue: Arc<Queue>, c: Arc<StreamConsumer>) {
    let Some(stream) = queue.stream.clone() else {
        return;
    };
    let mut synced = stream.log.subscribe();
    let mut credit_check = CREDIT_CHECK;
    loop {
        if c.cancelled.load(Ordering::Acquire) {
            return;
        }
        let no_credit = match deliver_some(&queue, &c) {
            Progress::More => {
                credit_check = CREDIT_CHECK;
                tokio::task::yield_now().await;
                continue;
            }
            Progress::Wait => false,
            Progress::NoCredit => true,
        };
        // Out of credit, look again after a while whatever happens.
        let check = async {
            if no_credit {
                tokio::time::sleep(credit_check).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = c.wake.notified() => credit_check = CREDIT_CHECK,
            changed = synced.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = check => credit_check = (credit_check * 2).min(CREDIT_CHECK_MAX),
        }
    }
}

enum Progress {
    /// It delivered a batch and may deliver more.
    More,
    /// Out of credit.
    NoCredit,
    /// Out of room (the channel) or records.
    Wait,
}

fn deliver_some(queue: &Arc<Queue>, c: &StreamConsumer) -> Progress {
    let mut st = c.state.lock();
    let mut delivered = 0;
    while delivered < BATCH {
        // A waiting member of a group is woken when it becomes active.
        if st.credit == 0 {
            return Progress::NoCredit;
        }
        if c.cancelled.load(Ordering::Acquire) || !c.is_active() {
            return Progress::Wait;
        }
        // A channel that says no remembers the queue and pokes it (waking
        // this task) once it drains.
        if !c.consumer.channel.ready(queue, &c.consumer) {
            return Progress::Wait;
        }
        let want = (st.credit as usize).min(BATCH - delivered).min(64);
        let read = if st.cursor.needs_disk() {
            blocking(|| st.cursor.read(want))
        } else {
            st.cursor.read(want)
        };
        let records = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(queue = %queue.config.name, "cannot read the stream: {e}");
                return Progress::Wait;
            }
        };
        if records.is_empty() {
            return Progress::Wait;
        }
        for r in records {
            st.credit = st.credit.saturating_sub(1);
            st.outstanding.insert(r.offset);
            queue.stats.count_delivery(true, false, false);
            let m = QueuedMessage::new(r.offset, 0, r.message, Stored::No, 0);
            c.consumer.channel.deliver(queue, &c.consumer, m);
            delivered += 1;
        }
    }
    Progress::More
}
