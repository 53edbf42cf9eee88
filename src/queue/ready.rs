//! The ready list: messages waiting for a consumer, in delivery order.
//!
//! A queue with priorities has one level per priority, delivered highest
//! first; a plain queue has one level. Within a level messages are ordered by
//! sequence number.
//!
//! A bounded window of messages is in memory; once a queue grows past it
//! (or the broker's memory budget is spent), new messages stay only in the
//! store and the level records them as a region of sequence numbers. A
//! level's in-memory head always precedes its stored region, so its order is
//! `memory` then `stored`: delivering takes from the front of memory,
//! refilling reads the next page of the region, and a requeued message
//! (which came from the front) goes back into memory at its old position.
//!
//! A message removed from the middle (it expired where it sat) leaves a
//! tombstone, so removal never shifts the whole window; tombstones are
//! skipped when they reach the front and swept when they pile up.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use super::queued::QueuedMessage;
use crate::message::Message;

/// Stands in for a removed message's body in a tombstone.
static TOMBSTONE: LazyLock<Arc<Message>> = LazyLock::new(|| Arc::new(Message::empty()));

#[derive(Debug)]
pub(super) struct ReadyList {
    levels: Vec<Level>,
    /// Ready messages, in memory and stored (tombstones excluded).
    len: usize,
    in_memory: usize,
    /// Body bytes of all ready messages (`x-max-length-bytes`).
    bytes: u64,
    /// Body bytes of the ready messages in memory (the queue's owner
    /// accounts them against the broker's memory budget).
    memory_bytes: u64,
}

#[derive(Debug, Default)]
struct Level {
    memory: VecDeque<QueuedMessage>,
    tombstones: usize,
    stored: StoredRegion,
    /// While a page of this level is read (with the queue unlocked): the
    /// messages kept only in the store since the read began. The read
    /// cannot see them, so they are what is left when it comes back short.
    arrived: Option<StoredRegion>,
    /// Messages ever kept only in the store (a count made in the
    /// background adds those that arrived while it ran).
    pushed: u64,
}

/// Ready messages of one level that live only in the store: every stored
/// message of the level with sequence number `>= from` that is not in
/// memory.
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

/// Where a ready message is.
pub(super) enum Found {
    Memory(QueuedMessage),
    /// In the stored region: the caller reads it from the store.
    Stored,
    Missing,
}

impl ReadyList {
    pub fn new(levels: usize) -> ReadyList {
        ReadyList {
            levels: (0..levels.max(1)).map(|_| Level::default()).collect(),
            len: 0,
            in_memory: 0,
            bytes: 0,
            memory_bytes: 0,
        }
    }

    fn level(&self, level: u8) -> &Level {
        let i = usize::from(level).min(self.levels.len() - 1);
        &self.levels[i]
    }

    fn level_mut(&mut self, level: u8) -> &mut Level {
        let i = usize::from(level).min(self.levels.len() - 1);
        &mut self.levels[i]
    }

    /// The level a message of `priority` goes to (priorities above the
    /// queue's maximum count as the maximum).
    pub fn level_for(&self, priority: u8) -> u8 {
        priority.min((self.levels.len() - 1) as u8)
    }

    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    fn grow(&mut self, bytes: u64) {
        self.memory_bytes += bytes;
    }

    fn shrink(&mut self, bytes: u64) {
        self.memory_bytes -= bytes;
    }

    /// All ready messages, in memory and stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Ready persistent messages: in memory by their flag, in the store
    /// those with a durable entry.
    pub fn persistent(&self) -> u64 {
        self.levels
            .iter()
            .map(|l| {
                l.stored.durable
                    + l.memory
                        .iter()
                        .filter(|m| !m.gone && m.message.persistent)
                        .count() as u64
            })
            .sum()
    }

    /// Up to `n` ready messages from the head, in delivery order, left
    /// where they are. Only what is in memory: the walk stops where a
    /// level continues in the store.
    pub fn peek(&self, n: usize) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        for level in self.levels.iter().rev() {
            for m in level.memory.iter().filter(|m| !m.gone) {
                if out.len() == n {
                    return out;
                }
                out.push(m.clone());
            }
            if level.stored.count > 0 {
                break;
            }
        }
        out
    }

    /// (level, seq) of every ready message in memory `keep` selects.
    pub fn find_in_memory(&self, keep: impl Fn(&Message) -> bool) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        for (level, l) in self.levels.iter().enumerate() {
            for m in l.memory.iter().filter(|m| !m.gone && keep(&m.message)) {
                out.push((level as u8, m.seq));
            }
        }
        out
    }

    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    /// When the oldest ready message in memory was received (ms since the
    /// epoch), over every level's head. A level whose head is paged out
    /// does not count (its time is in the store); neither do messages whose
    /// time is not known.
    pub fn oldest_received_ms(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter_map(|l| l.memory.iter().find(|m| !m.gone))
            .map(|m| m.message.received_ms)
            .filter(|&t| t != 0)
            .min()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// Ready messages with a durable entry in the store, per level: those
    /// that would come back after a restart.
    pub fn durable_by_level(&self) -> Vec<u64> {
        self.levels
            .iter()
            .map(|l| {
                l.stored.durable
                    + l.memory
                        .iter()
                        .filter(|m| !m.gone && m.stored.is_durable())
                        .count() as u64
            })
            .collect()
    }

    pub fn stored(&self, level: u8) -> StoredRegion {
        self.level(level).stored
    }

    /// Messages kept only in the store, across levels.
    pub fn stored_count(&self) -> u64 {
        self.levels.iter().map(|l| l.stored.count).sum()
    }

    /// New messages of `level` must go to the store while part of the level
    /// is there, to keep its memory window ahead of its stored region.
    pub fn is_paging(&self, level: u8) -> bool {
        self.level(level).stored.count > 0
    }

    /// The highest level with ready messages.
    pub fn top_level(&self) -> Option<u8> {
        self.levels
            .iter()
            .rposition(|l| l.memory.len() > l.tombstones || l.stored.count > 0)
            .map(|i| i as u8)
    }

    /// Whether `level` should read its next page from the store: memory is
    /// down to less than `batch` live messages and the store holds more.
    pub fn wants_page(&self, level: u8, batch: usize) -> Option<StoredRegion> {
        let l = self.level(level);
        (l.stored.count > 0 && l.memory.len() - l.tombstones < batch).then_some(l.stored)
    }

    pub fn push_back(&mut self, m: QueuedMessage) {
        let bytes = m.message.body_size() as u64;
        self.grow(bytes);
        self.len += 1;
        self.in_memory += 1;
        self.bytes += bytes;
        self.level_mut(m.level).memory.push_back(m);
    }

    /// Record a message kept only in the store.
    pub fn push_stored(&mut self, level: u8, seq: u64, bytes: u64, durable: bool) {
        let l = self.level_mut(level);
        l.pushed += 1;
        for region in std::iter::once(&mut l.stored).chain(l.arrived.as_mut()) {
            if region.count == 0 {
                region.from = seq;
            }
            region.count += 1;
            region.durable += durable as u64;
            region.bytes += bytes;
        }
        self.len += 1;
        self.bytes += bytes;
    }

    /// How many messages of `level` were ever kept only in the store.
    pub fn pushed(&self, level: u8) -> u64 {
        self.level(level).pushed
    }

    /// A read of `level`'s stored messages begins: note what arrives
    /// while it is under way.
    pub fn begin_read(&mut self, level: u8) {
        self.level_mut(level).arrived = Some(StoredRegion::default());
    }

    /// The read of `level` is over: what arrived in the store meanwhile.
    pub fn end_read(&mut self, level: u8) -> StoredRegion {
        self.level_mut(level).arrived.take().unwrap_or_default()
    }

    /// Messages read back from the store join the level's memory window at
    /// its end.
    pub fn extend_from_store(
        &mut self,
        level: u8,
        page: impl IntoIterator<Item = QueuedMessage>,
        next_from: u64,
    ) {
        for m in page {
            let bytes = m.message.body_size() as u64;
            let region = &mut self.level_mut(level).stored;
            // After a crash the region's count is an estimate and its bytes
            // unknown (0): only what it accounted for leaves the totals.
            let counted = region.count > 0;
            region.count = region.count.saturating_sub(1);
            if m.stored.is_durable() {
                region.durable = region.durable.saturating_sub(1);
            }
            let accounted = bytes.min(region.bytes);
            region.bytes -= accounted;
            if counted {
                self.len -= 1;
            }
            self.bytes -= accounted;
            self.push_back(m);
        }
        self.level_mut(level).stored.from = next_from;
    }

    /// A message of the stored region was removed from the store where it
    /// sat (it expired).
    pub fn remove_stored(&mut self, level: u8, bytes: u64, durable: bool) {
        let region = &mut self.level_mut(level).stored;
        if region.count == 0 {
            return;
        }
        region.count -= 1;
        region.durable = region.durable.saturating_sub(durable as u64);
        let accounted = bytes.min(region.bytes);
        region.bytes -= accounted;
        self.len -= 1;
        self.bytes -= accounted;
    }

    /// Replace a level's region (recovery and its exact count later; after
    /// a short page, what arrived while it was read).
    pub fn set_stored(&mut self, level: u8, region: StoredRegion) {
        let old = std::mem::replace(&mut self.level_mut(level).stored, region);
        self.len = self.len.saturating_sub(old.count as usize) + region.count as usize;
        self.bytes = self.bytes.saturating_sub(old.bytes) + region.bytes;
    }

    /// Insert a returning message at its original position. Requeued
    /// messages are usually older than everything ready, so the search is
    /// short in practice.
    pub fn insert_ordered(&mut self, m: QueuedMessage) {
        let bytes = m.message.body_size() as u64;
        self.grow(bytes);
        self.len += 1;
        self.in_memory += 1;
        self.bytes += bytes;
        let memory = &mut self.level_mut(m.level).memory;
        let pos = memory.partition_point(|x| x.seq < m.seq);
        memory.insert(pos, m);
    }

    /// Take the head of `level`'s memory window.
    pub fn pop_front(&mut self, level: u8) -> Option<QueuedMessage> {
        let l = self.level_mut(level);
        let m = loop {
            let m = l.memory.pop_front()?;
            if !m.gone {
                break m;
            }
            l.tombstones -= 1;
        };
        self.took(&m);
        Some(m)
    }

    fn took(&mut self, m: &QueuedMessage) {
        let bytes = m.message.body_size() as u64;
        self.shrink(bytes);
        self.len -= 1;
        self.in_memory -= 1;
        self.bytes -= bytes;
    }

    /// Take message `seq` of `level` out of the list wherever it is.
    pub fn remove(&mut self, level: u8, seq: u64) -> Found {
        let l = self.level_mut(level);
        let pos = l.memory.partition_point(|x| x.seq < seq);
        match l.memory.get_mut(pos) {
            Some(m) if m.seq == seq && !m.gone => {
                let taken = if pos == 0 {
                    l.memory.pop_front()
                } else {
                    let body = std::mem::replace(&mut m.message, TOMBSTONE.clone());
                    let mut taken = m.clone();
                    taken.message = body;
                    m.gone = true;
                    l.tombstones += 1;
                    Some(taken)
                };
                if l.tombstones > 64 && l.tombstones * 2 > l.memory.len() {
                    l.memory.retain(|m| !m.gone);
                    l.tombstones = 0;
                }
                match taken {
                    Some(m) => {
                        self.took(&m);
                        Found::Memory(m)
                    }
                    None => Found::Missing,
                }
            }
            _ if l.stored.count > 0 && seq >= l.stored.from => Found::Stored,
            _ => Found::Missing,
        }
    }

    /// Remove everything: the in-memory messages and the stored regions.
    pub fn take_all(&mut self) -> (Vec<QueuedMessage>, Vec<(u8, StoredRegion)>) {
        self.shrink(self.memory_bytes);
        self.len = 0;
        self.in_memory = 0;
        self.bytes = 0;
        let mut memory = Vec::new();
        let mut regions = Vec::new();
        for (i, l) in self.levels.iter_mut().enumerate() {
            memory.extend(
                std::mem::take(&mut l.memory)
                    .into_iter()
                    .filter(|m| !m.gone),
            );
            l.tombstones = 0;
            let region = std::mem::take(&mut l.stored);
            if region.count > 0 {
                regions.push((i as u8, region));
            }
        }
        (memory, regions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeliveryState, Stored};

    fn msg(seq: u64, level: u8) -> QueuedMessage {
        QueuedMessage {
            seq,
            level,
            message: Arc::new(Message::empty()),
            redelivered: false,
            gone: false,
            stored: Stored::No,
            expires_at: 0,
            delivery: DeliveryState::default(),
        }
    }

    #[test]
    fn highest_level_first_fifo_within() {
        let mut r = ReadyList::new(3);
        for (seq, level) in [(1, 0), (2, 2), (3, 1), (4, 2)] {
            r.push_back(msg(seq, r.level_for(level)));
        }
        r.push_back(msg(5, r.level_for(9)));
        let mut order = Vec::new();
        while let Some(level) = r.top_level() {
            order.push(r.pop_front(level).unwrap().seq);
        }
        assert_eq!(order, vec![2, 4, 5, 3, 1]);
        assert!(r.is_empty());
    }

    #[test]
    fn removal_from_the_middle_leaves_order_intact() {
        let mut r = ReadyList::new(1);
        for seq in 0..200 {
            r.push_back(msg(seq, 0));
        }
        for seq in (1..200).step_by(2) {
            assert!(matches!(r.remove(0, seq), Found::Memory(m) if m.seq == seq));
        }
        assert!(matches!(r.remove(0, 3), Found::Missing));
        assert_eq!(r.len(), 100);
        r.insert_ordered(msg(201, 0));
        let mut seqs = Vec::new();
        while let Some(m) = r.pop_front(0) {
            seqs.push(m.seq);
        }
        assert_eq!(seqs.len(), 101);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert!(seqs.iter().take(100).all(|s| s % 2 == 0));
    }
}
