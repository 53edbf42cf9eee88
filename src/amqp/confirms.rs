//! Publisher confirms for one channel.
//!
//! Sequence numbers are assigned as messages are published. A message that
//! was only enqueued in memory is settled at once; one written to the store
//! is held until the group commit that makes it durable completes (or
//! fails, and is then nacked). Confirms go out in order, as one `basic.ack`
//! with `multiple` for every contiguous run of settled messages, so a burst
//! of publishes costs a handful of frames.
//!
//! The tracker is shared with the group-commit thread, which settles held
//! messages and sends their confirms itself.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::channel_status::ChannelEvent;
use super::codec;
use super::deliveries::Deliveries;
use super::outbox::Outbox;
use crate::broker::Broker;
use crate::metrics::MessageEvent;

#[derive(Debug)]
pub struct ConfirmTracker {
    channel: u16,
    outbox: Arc<Outbox>,
    broker: Arc<Broker>,
    /// Where confirms are counted for operators.
    deliveries: Arc<Deliveries>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last sequence number assigned.
    published: u64,
    /// Held until durable.
    pending: BTreeSet<u64>,
    /// Settled negatively, not yet sent.
    nacked: BTreeSet<u64>,
    /// Everything up to here has been confirmed to the client.
    sent_through: u64,
    /// The channel is gone: nothing more may be sent on it.
    closed: bool,
}

impl ConfirmTracker {
    pub fn new(
        channel: u16,
        outbox: Arc<Outbox>,
        broker: Arc<Broker>,
        deliveries: Arc<Deliveries>,
    ) -> Arc<ConfirmTracker> {
        Arc::new(ConfirmTracker {
            channel,
            outbox,
            broker,
            deliveries,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Publishes not yet confirmed to the client.
    pub fn unconfirmed(&self) -> u64 {
        let inner = self.inner.lock();
        inner.published.saturating_sub(inner.sent_through)
    }

    /// Assign the next publish sequence number.
    pub fn next(&self) -> u64 {
        let mut inner = self.inner.lock();
        inner.published += 1;
        inner.published
    }

    /// Hold `seq` until [`settle`](Self::settle) says it is durable.
    pub fn hold(&self, seq: u64) {
        self.inner.lock().pending.insert(seq);
    }

    /// `seq` could not be enqueued.
    pub fn nack(&self, seq: u64) {
        self.inner.lock().nacked.insert(seq);
    }

    /// Held messages became durable (`ok`) or failed to.
    pub fn settle(&self, seqs: &[u64], ok: bool) {
        let mut inner = self.inner.lock();
        for seq in seqs {
            inner.pending.remove(seq);
            if !ok {
                inner.nacked.insert(*seq);
            }
        }
    }

    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// Send the confirms that are due: everything settled, in order, up to
    /// the first message still held.
    pub fn flush(&self) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        let through = match inner.pending.first() {
            Some(first) => first - 1,
            None => inner.published,
        };
        if through <= inner.sent_through {
            return;
        }
        let mut frames = Vec::new();
        let mut from = inner.sent_through + 1;
        let nacks: Vec<u64> = inner.nacked.range(from..=through).copied().collect();
        for nack in nacks {
            if nack > from {
                frames.push((true, nack - 1, nack - 1 > from));
            }
            frames.push((false, nack, false));
            inner.nacked.remove(&nack);
            from = nack + 1;
        }
        if from <= through {
            frames.push((true, through, through > from));
        }
        let acked = through - inner.sent_through;
        inner.sent_through = through;
        self.broker.metrics.count(MessageEvent::Confirmed, acked);
        self.deliveries.status.count(ChannelEvent::Confirm, acked);
        self.outbox.send(|buf| {
            for (ack, tag, multiple) in frames {
                codec::encode_confirm(buf, self.channel, ack, tag, multiple);
            }
        });
    }
}
