//! The ready list: messages waiting for a consumer, in delivery order.

use std::collections::VecDeque;

use super::QueuedMessage;

#[derive(Debug, Default)]
pub(super) struct ReadyList {
    messages: VecDeque<QueuedMessage>,
    bytes: u64,
}

impl ReadyList {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    #[allow(dead_code)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn push_back(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body_size() as u64;
        self.messages.push_back(m);
    }

    /// Insert a returning message at its original position. Requeued
    /// messages are usually older than everything ready, so the search is
    /// short in practice.
    pub fn insert_ordered(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body_size() as u64;
        let pos = self.messages.partition_point(|x| x.seq < m.seq);
        self.messages.insert(pos, m);
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let m = self.messages.pop_front()?;
        self.bytes -= m.message.body_size() as u64;
        Some(m)
    }

    /// Remove everything; returns how many messages were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.messages.len();
        self.messages.clear();
        self.bytes = 0;
        n
    }
}
