//! The ready list: messages waiting for a consumer, in delivery order.
//!
//! A bounded window of messages is in memory; once a queue grows past it
//! (or the broker's memory budget is spent), new messages stay only in the
//! store and the list records them as a region of sequence numbers. The
//! in-memory head always precedes the stored region, so the queue's order is
//! `memory` then `stored`: delivering takes from the front of memory,
//! refilling reads the next page of the region, and a requeued message
//! (which came from the front) goes back into memory at its old position.

use std::collections::VecDeque;
use std::sync::Arc;

use super::QueuedMessage;
use super::env::MemoryBudget;

#[derive(Debug, Default)]
pub(super) struct ReadyList {
    memory: VecDeque<QueuedMessage>,
    memory_bytes: u64,
    stored: StoredRegion,
    /// The broker-wide count of bytes in memory, kept in step with
    /// `memory_bytes`.
    budget: Arc<MemoryBudget>,
}

/// Ready messages that live only in the store: every stored message of the
/// queue with sequence number `>= from` that is not in memory.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StoredRegion {
    pub from: u64,
    /// Exact while the broker runs; after a crash, estimated until counted.
    pub count: u64,
    /// Of `count`, how many are durable entries (the rest are paged-out
    /// transient messages).
    pub durable: u64,
    pub bytes: u64,
}

impl ReadyList {
    pub fn new(budget: Arc<MemoryBudget>) -> ReadyList {
        ReadyList {
            memory: VecDeque::new(),
            memory_bytes: 0,
            stored: StoredRegion::default(),
            budget,
        }
    }

    fn grow(&mut self, bytes: u64) {
        self.memory_bytes += bytes;
        self.budget.add(bytes);
    }

    fn shrink(&mut self, bytes: u64) {
        self.memory_bytes -= bytes;
        self.budget.release(bytes);
    }

    /// All ready messages, in memory and stored.
    pub fn len(&self) -> usize {
        self.memory.len() + self.stored.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.stored.count == 0
    }

    pub fn in_memory(&self) -> usize {
        self.memory.len()
    }

    /// Ready messages with a durable entry in the store: those that would
    /// come back after a restart.
    pub fn durable(&self) -> u64 {
        self.stored.durable
            + self
                .memory
                .iter()
                .filter(|m| m.stored != crate::store::Stored::No)
                .count() as u64
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub fn stored(&self) -> StoredRegion {
        self.stored
    }

    /// New messages must go to the store while part of the queue is there,
    /// to keep the memory window ahead of the stored region.
    pub fn is_paging(&self) -> bool {
        self.stored.count > 0
    }

    pub fn push_back(&mut self, m: QueuedMessage) {
        self.grow(m.message.body_size() as u64);
        self.memory.push_back(m);
    }

    /// Record a message kept only in the store.
    pub fn push_stored(&mut self, seq: u64, bytes: u64, durable: bool) {
        if self.stored.count == 0 {
            self.stored.from = seq;
        }
        self.stored.count += 1;
        self.stored.durable += durable as u64;
        self.stored.bytes += bytes;
    }

    /// Messages read back from the store join the memory window at its end.
    pub fn extend_from_store(
        &mut self,
        page: impl IntoIterator<Item = QueuedMessage>,
        next_from: u64,
    ) {
        for m in page {
            self.stored.count = self.stored.count.saturating_sub(1);
            if m.stored != crate::store::Stored::No {
                self.stored.durable = self.stored.durable.saturating_sub(1);
            }
            self.stored.bytes = self
                .stored
                .bytes
                .saturating_sub(m.message.body_size() as u64);
            self.push_back(m);
        }
        self.stored.from = next_from;
    }

    /// The store had nothing more: the region (an estimate) is exhausted.
    pub fn stored_exhausted(&mut self) {
        self.stored = StoredRegion::default();
    }

    /// Replace the region's count (the exact count after a crash recovery).
    pub fn set_stored(&mut self, region: StoredRegion) {
        self.stored = region;
    }

    /// Insert a returning message at its original position. Requeued
    /// messages are usually older than everything ready, so the search is
    /// short in practice.
    pub fn insert_ordered(&mut self, m: QueuedMessage) {
        self.grow(m.message.body_size() as u64);
        let pos = self.memory.partition_point(|x| x.seq < m.seq);
        self.memory.insert(pos, m);
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let m = self.memory.pop_front()?;
        self.shrink(m.message.body_size() as u64);
        Some(m)
    }

    /// Remove everything: the in-memory messages and the stored region.
    pub fn take_all(&mut self) -> (VecDeque<QueuedMessage>, StoredRegion) {
        self.shrink(self.memory_bytes);
        (
            std::mem::take(&mut self.memory),
            std::mem::take(&mut self.stored),
        )
    }
}

impl Drop for ReadyList {
    fn drop(&mut self) {
        self.budget.release(self.memory_bytes);
    }
}
