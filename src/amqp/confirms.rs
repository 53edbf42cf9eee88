//! Publisher confirms for one channel.
//!
//! Sequence numbers are assigned as messages are published, and each is
//! held from then on: no confirm goes past it until its outcome is known.
//! A message that was only enqueued in memory (or routed nowhere) is then
//! released at once; one written to the store stays held until the group
//! commit that makes it durable completes (or fails, and is then nacked).
//! Confirms go out in order, as one `basic.ack` with `multiple` for every
//! contiguous run of settled messages, so a burst of publishes costs a
//! handful of frames.
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
    /// Not yet routed, or routed and held until durable.
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

    /// Assign the next publish sequence number, held until its outcome
    /// is known: a message written to the store stays held until
    /// [`settle`](Self::settle) says it is durable; any other is
    /// [`release`](Self::release)d or [`nack`](Self::nack)ed once routed.
    /// (Held only once routed, it could be confirmed by the group-commit
    /// thread settling the messages before it, before it is even stored.)
    pub fn next(&self) -> u64 {
        let mut inner = self.inner.lock();
        inner.published += 1;
        let seq = inner.published;
        inner.pending.insert(seq);
        seq
    }

    /// `seq` has nothing to wait for (enqueued in memory, or unroutable).
    pub fn release(&self, seq: u64) {
        self.inner.lock().pending.remove(&seq);
    }

    /// `seq` could not be enqueued.
    pub fn nack(&self, seq: u64) {
        let mut inner = self.inner.lock();
        inner.pending.remove(&seq);
        inner.nacked.insert(seq);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn tracker() -> Arc<ConfirmTracker> {
        let broker = Broker::ephemeral(Config::ephemeral());
        let outbox = Outbox::new(1 << 20, Duration::from_secs(1));
        let vhost = broker.add_vhost("/");
        let deliveries =
            Deliveries::new(1, 1, outbox.clone(), 131_072, broker.clone(), vhost, false);
        ConfirmTracker::new(1, outbox, broker, deliveries)
    }

    /// The group-commit thread settles and confirms the messages before
    /// one the channel is still routing: that one is not confirmed with
    /// them (it may not be stored yet).
    #[test]
    fn a_message_being_routed_is_not_confirmed_with_those_before_it() {
        let t = tracker();
        let stored = t.next();
        let routing = t.next();
        t.settle(&[stored], true);
        t.flush();
        assert_eq!(t.unconfirmed(), 1, "only the stored one is confirmed");
        t.release(routing); // enqueued in memory after all
        t.flush();
        assert_eq!(t.unconfirmed(), 0);
        let refused = t.next();
        t.nack(refused);
        t.flush();
        assert_eq!(t.unconfirmed(), 0, "a nack settles it too");
    }
}
