//! What a queue writes to the store, and how it comes back at boot.
//!
//! A persistent message in a durable queue is handed to the store as it is
//! enqueued — written by the next group commit, or never if it is
//! acknowledged first — and removed when it leaves the queue. A message
//! kept only in the store because the queue is long (see `paging`) is
//! handed over the same way, transient ones too. Returned messages have
//! their delivery state recorded so they come back flagged redelivered (and
//! counted, and delayed) after a restart. None of this does I/O under the
//! queue's lock: the store writes on its own thread. Purges and deletes of
//! long queues are recorded at once and cleared in the background.
//!
//! At boot a durable queue is rebuilt from the first and last stored key of
//! each priority level; its messages stay in the store until consumers
//! need them.

use std::sync::Arc;

use super::args::{AppliedPolicies, QueueType};
use super::state::{Admission, Now, QueueCore, StoreOp};
use super::{DeliveryTarget, Queue, QueueConfig, QueueEnv, QueuedMessage, Shell};
use crate::message::Message;
use crate::store::{Slot, Stored};

impl Queue {
    /// A durable queue coming back after a restart. `counts`, per level,
    /// are exact when known (after a clean shutdown); otherwise they are
    /// estimated from the stored range until [`Queue::set_recovered_count`]
    /// corrects them.
    pub fn recover(
        config: QueueConfig,
        env: Arc<QueueEnv>,
        policies: AppliedPolicies<'_>,
        counts: Option<&[(u8, u64)]>,
    ) -> Arc<Queue> {
        let levels = config.args.levels();
        let queue = Queue::new(config, env, policies);
        let clean = queue.env.store.was_clean();
        let mut st = queue.lock();
        for level in 0..levels {
            let level = level as u8;
            let bounds = match queue.env.store.entry_bounds(queue.config.uid, level) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(queue = %queue.config.name, "cannot read the queue's messages: {e}");
                    None
                }
            };
            let Some((first, last)) = bounds else {
                continue;
            };
            let count = counts
                .and_then(|c| c.iter().find(|(l, _)| *l == level))
                .map_or(last - first + 1, |(_, n)| *n);
            st.core.restore_level(level, first, last, count);
        }
        for level in 0..levels {
            if let Err(e) = queue.env.store.resume_purges(queue.config.uid, level as u8) {
                tracing::error!(queue = %queue.config.name, "cannot resume a purge: {e}");
            }
        }
        let store = &queue.env.store;
        let uid = queue.config.uid;
        match store.redelivered_through(uid) {
            Ok(Some(seq)) => st.core.set_redelivered_through(seq),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(queue = %queue.config.name, "cannot read the redelivery mark: {e}")
            }
        }
        if !clean && let Some(last) = st.core.last_seq() {
            st.core.set_redelivered_through(last);
            if let Err(e) = store.set_redelivered_through(uid, last) {
                tracing::error!(queue = %queue.config.name, "cannot keep the redelivery mark: {e}");
            }
        }
        // Messages that expire are only known once read: read the heads now
        // so the timer sees them.
        if st.core.settings().message_ttl.is_some() {
            let clock = queue.now();
            queue.page_in_heads(&mut st, &Now::new(&clock));
        }
        drop(st);
        queue
    }

    fn persists(&self, message: &Message) -> bool {
        // Quorum queues keep every message, as RabbitMQ's do.
        let wanted = message.persistent || self.config.args.queue_type == QueueType::Quorum;
        wanted && self.config.survives_restart() && self.env.store.is_durable()
    }

    /// Whether a message published here would be written to the store.
    pub fn would_persist(&self, message: &Message) -> bool {
        self.persists(message)
    }

    /// Hand an admitted message to the store where it must be: a durable
    /// entry if it persists, a paged-out copy if it is kept only in the
    /// store. Returns whether the store has a durable entry for it and
    /// whether it is paged (kept only in the store).
    pub(super) fn write(&self, st: &Shell, a: Admission, message: &Arc<Message>) -> (Stored, bool) {
        let slot = Slot {
            uid: self.config.uid,
            level: a.level,
            seq: a.seq,
        };
        let store = &self.env.store;
        let paging = self.should_page(st, a.level);
        if self.persists(message) {
            (store.put_entry(slot, a.expires_at, message), paging)
        } else if paging {
            store.page_out(slot, a.expires_at, message);
            (Stored::No, true)
        } else {
            (Stored::No, false)
        }
    }

    /// Remove the records of messages that left the queue.
    pub(super) fn forget(&self, messages: &[QueuedMessage]) {
        for m in messages {
            self.remove_record(m.slot(self.config.uid), m.stored, m.redelivered);
        }
    }

    fn remove_record(&self, slot: Slot, stored: Stored, marked: bool) {
        if let Err(e) = self.env.store.remove(slot, stored, marked) {
            tracing::error!(queue = %self.config.name, "cannot remove a stored message: {e}");
        }
    }

    /// Carry out the store changes the core decided, in order. Runs under
    /// the queue's lock: a later change to the same message (an ack after a
    /// requeue) must not overtake an earlier one.
    pub(super) fn apply_store_effects(&self, core: &mut QueueCore<Arc<dyn DeliveryTarget>>) {
        let uid = self.config.uid;
        for op in core.effects.store.drain(..) {
            match op {
                StoreOp::Remove {
                    level,
                    seq,
                    stored,
                    marked,
                } => self.remove_record(Slot { uid, level, seq }, stored, marked),
                StoreOp::Mark { level, seq, state } => {
                    self.env.store.set_delivery(Slot { uid, level, seq }, state)
                }
            }
        }
    }

    /// Everything the queue ever stored, including entries of messages still
    /// unacknowledged in channels (a deleted queue).
    pub(super) fn forget_everything(&self) {
        let store = &self.env.store;
        store.drop_queue(self.config.uid);
        if let Some(d) = &self.dedup {
            d.drop_kept();
        }
        if let Err(e) = store.forget_redelivered_through(self.config.uid) {
            tracing::error!(queue = %self.config.name, "cannot remove the redelivery mark: {e}");
        }
    }

    /// Purge stored ranges `(level, from, to)`: gone for reads at once,
    /// durable once the store next flushes, cleared in the background.
    pub(super) fn purge_stored(&self, ranges: Vec<(u8, u64, u64)>) {
        for (level, from, to) in ranges {
            if let Err(e) = self.env.store.purge_range(self.config.uid, level, from, to) {
                tracing::error!(queue = %self.config.name, "cannot purge stored messages: {e}");
            }
        }
    }
}
