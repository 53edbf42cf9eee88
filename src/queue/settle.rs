//! Settling deliveries: what a consuming channel's ack, reject or nack
//! does to the queue they came from.

use std::sync::Arc;

use super::state::Now;
use super::{ConsumerId, Queue, QueueEvent, QueuedMessage, Return};

impl Queue {
    /// Acknowledge delivered messages: they leave the queue for good.
    pub fn ack(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        if let Some(st) = &self.stream {
            self.stats.count(QueueEvent::Ack, messages.len() as u64);
            return st.settle(consumer, &messages, true);
        }
        self.forget(&messages);
        self.stats.count(QueueEvent::Ack, messages.len() as u64);
        let clock = self.now();
        let now = Now::new(&clock);
        let mut st = self.lock();
        st.core.settle(consumer, messages.len() as u32, &now);
        st.core.erasures_done();
        self.dispatch_locked(&mut st, &now);
    }

    /// Reject delivered messages without requeueing: they are dropped, or
    /// dead-lettered with reason `rejected`.
    pub fn discard(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        if let Some(st) = &self.stream {
            return st.settle(consumer, &messages, true);
        }
        let clock = self.now();
        let now = Now::new(&clock);
        let mut st = self.lock();
        st.core.discard(consumer, messages, &now);
        self.dispatch_locked(&mut st, &now);
    }

    /// Put delivered messages back at their original positions, marked
    /// redelivered — unless they are past the delivery limit (then they are
    /// dead-lettered) or must wait out a retry delay first.
    pub fn requeue(
        self: &Arc<Self>,
        consumer: Option<ConsumerId>,
        messages: Vec<QueuedMessage>,
        why: Return,
    ) {
        if let Some(st) = &self.stream {
            return st.settle(consumer, &messages, false);
        }
        let clock = self.now();
        let now = Now::new(&clock);
        let mut st = self.lock();
        st.core.requeue(consumer, messages, why, &now);
        if !st.core.is_deleted() {
            self.dispatch_locked(&mut st, &now);
        }
    }
}
