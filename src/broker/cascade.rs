//! Dead letters that set off more dead letters.
//!
//! Enqueueing a dead letter can kill another message at once (a full
//! `drop-head` queue, a TTL of 0), and that one is dead-lettered in turn,
//! from inside the enqueue. Those cascades do not recurse: the outermost
//! [`VHost::dead_letter`] call on a thread drains a work list that the
//! nested calls only append to, so the stack stays flat however long the
//! chain of queues, and dead letters are routed in the order they died.
//!
//! They are also bounded. The cycle rule (`DeadLetter::is_cycle`, as
//! RabbitMQ's) ends every chain of automatic deaths within one death per
//! queue, so no loop goes on for ever; and one death sets off at most
//! [`CASCADE_ALLOWANCE`] more further dead letters than the vhost has
//! queues. A chain through every queue fits; only a topology that
//! multiplies messages gets there — a fanout dead-letter exchange feeding
//! queues that die back into it makes a copy for every path through them,
//! factorial in their number — and what is beyond the budget is dropped,
//! with a warning (dead-lettering is at most once).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::types::ShortString;

use super::VHost;
use super::dead_letter::dead_lettered;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::queue::args::DeadLetterTarget;
use crate::queue::{Queue, Reason};

/// How many more dead letters than the vhost has queues one death may set
/// off while it is being dead-lettered.
pub const CASCADE_ALLOWANCE: usize = 1_000;

/// Messages that died in one queue, waiting to be routed.
struct Batch {
    vhost: Arc<VHost>,
    queue: ShortString,
    target: DeadLetterTarget,
    dead: Vec<(Arc<Message>, Reason)>,
    now_ms: u64,
}

/// The dead letters the outermost [`VHost::dead_letter`] call on a thread
/// has still to route.
struct Drain {
    pending: VecDeque<Batch>,
    /// Cascaded dead letters still allowed.
    budget: usize,
    /// Cascaded dead letters dropped for want of budget.
    dropped: usize,
}

thread_local! {
    static DRAIN: RefCell<Option<Drain>> = const { RefCell::new(None) };
}

/// Ends the drain of this thread, even if routing panicked, so that later
/// dead letters on the thread are routed rather than queued for nobody.
struct DrainGuard;

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if let Some(drain) = DRAIN.with_borrow_mut(Option::take)
            && drain.dropped > 0
        {
            tracing::warn!(
                dropped = drain.dropped,
                "dead letters dropped: one death set off {CASCADE_ALLOWANCE} more further \
                 dead letters than the vhost has queues (a dead-letter topology that \
                 multiplies messages)"
            );
        }
    }
}

impl VHost {
    /// Dead-letter what died in `queue`: rewrite each message for `target`,
    /// then route it through the dead-letter exchange. A letter for a
    /// missing exchange is dropped, as RabbitMQ drops it; queues that would
    /// close a dead-letter cycle are skipped. Dead letters this sets off
    /// are routed before it returns, iteratively.
    pub fn dead_letter(
        self: &Arc<Self>,
        metrics: &Metrics,
        queue: &Queue,
        target: &DeadLetterTarget,
        dead: Vec<(Arc<Message>, Reason)>,
        now_ms: u64,
    ) {
        for (_, reason) in &dead {
            metrics.count(dead_lettered(*reason), 1);
        }
        let batch = Batch {
            vhost: self.clone(),
            queue: queue.name().into(),
            target: target.clone(),
            dead,
            now_ms,
        };
        let first = DRAIN.with_borrow_mut(|drain| match drain {
            Some(drain) => {
                drain.append(batch);
                None
            }
            None => {
                let per_death = CASCADE_ALLOWANCE + self.queue_count();
                *drain = Some(Drain {
                    pending: VecDeque::new(),
                    budget: batch.dead.len().saturating_mul(per_death),
                    dropped: 0,
                });
                Some(batch)
            }
        });
        // A nested call (from a queue this drain enqueued into) has
        // appended its batch; the outermost call routes it.
        let Some(first) = first else {
            return;
        };
        let _guard = DrainGuard;
        let mut next = Some(first);
        while let Some(batch) = next {
            batch.vhost.route_dead(
                batch.queue.as_str(),
                &batch.target,
                batch.dead,
                batch.now_ms,
            );
            next = DRAIN.with_borrow_mut(|d| d.as_mut().and_then(|d| d.pending.pop_front()));
        }
    }
}

impl Drain {
    /// Queue a cascaded batch, as far as the budget goes.
    fn append(&mut self, mut batch: Batch) {
        if batch.dead.len() > self.budget {
            self.dropped += batch.dead.len() - self.budget;
            batch.dead.truncate(self.budget);
        }
        self.budget -= batch.dead.len();
        if !batch.dead.is_empty() {
            self.pending.push_back(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Message {
        Message {
            exchange: "".into(),
            routing_key: "work".into(),
            properties: crate::message::encode(&Default::default()),
            body: bytes::Bytes::from_static(b"body"),
            persistent: false,
            priority: 0,
            expiration_ms: None,
            received_ms: 0,
        }
    }

    fn to_dlx(routing_key: Option<&str>) -> DeadLetterTarget {
        DeadLetterTarget {
            exchange: "dlx".into(),
            routing_key: routing_key.map(str::to_string),
        }
    }

    #[test]
    fn a_cascade_is_cut_at_its_budget() {
        let vhost = Arc::new(VHost::new(
            "/",
            crate::queue::QueueEnv::for_tests(),
            Default::default(),
        ));
        let m = Arc::new(published());
        let batch = |n: usize| Batch {
            vhost: vhost.clone(),
            queue: "q".into(),
            target: to_dlx(None),
            dead: vec![(m.clone(), Reason::MaxLen); n],
            now_ms: 0,
        };
        let mut drain = Drain {
            pending: VecDeque::new(),
            budget: 5,
            dropped: 0,
        };
        drain.append(batch(3));
        drain.append(batch(3));
        drain.append(batch(1));
        let kept: Vec<usize> = drain.pending.iter().map(|b| b.dead.len()).collect();
        assert_eq!((kept, drain.budget, drain.dropped), (vec![3, 2], 0, 2));
    }
}
