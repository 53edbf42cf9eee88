//! What queues have handed the store and the group-commit thread has not
//! written yet: durable entries and paged-out transient messages (each in
//! their [`BatchSpace`]) and delivery states of returned messages.
//!
//! Queues change these in memory, under their own lock, without I/O;
//! [`Unwritten::write`] — on the group-commit thread before each flush, or
//! at boot and shutdown — writes them. One write runs at a time, so a later
//! change to a record never lands before an earlier one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::batches::BatchSpace;
use super::records::{DeliveryState, Slot, encode_delivery, key};
use super::{Backend, StoreResult, Tree};

#[derive(Debug)]
pub(super) struct Unwritten {
    pub entries: BatchSpace,
    pub paged: BatchSpace,
    /// Delivery states to write (`Some`) or delete (`None`).
    marks: Mutex<HashMap<Slot, Option<DeliveryState>>>,
    writing: Mutex<()>,
    /// Past this many bytes waiting, the store is backlogged (flow control
    /// for the disk) until it is down to half.
    flow_bytes: usize,
    backlogged: AtomicBool,
    released: Notify,
}

impl Unwritten {
    pub fn new(paged_kind: u8, flow_bytes: usize) -> Unwritten {
        Unwritten {
            entries: BatchSpace::new(b'b', true),
            paged: BatchSpace::new(paged_kind, false),
            marks: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
            flow_bytes,
            backlogged: AtomicBool::new(false),
            released: Notify::new(),
        }
    }

    fn pending_bytes(&self) -> usize {
        self.entries.pending_bytes() + self.paged.pending_bytes()
    }

    /// Bytes of messages held in memory until written, being written
    /// included.
    pub fn held_bytes(&self) -> usize {
        self.entries.held_bytes() + self.paged.held_bytes()
    }

    /// Whether so much waits to be written that publishers of persistent
    /// messages should be held back.
    pub fn is_backlogged(&self) -> bool {
        if self.backlogged.load(Ordering::Acquire) {
            return true;
        }
        let over = self.flow_bytes > 0 && self.pending_bytes() > self.flow_bytes;
        if over {
            self.backlogged.store(true, Ordering::Release);
        }
        over
    }

    /// After a write: release the publishers once it is down to half.
    fn refresh_backlog(&self) {
        if self.backlogged.load(Ordering::Acquire) && self.pending_bytes() <= self.flow_bytes / 2 {
            self.backlogged.store(false, Ordering::Release);
            self.released.notify_waiters();
        }
    }

    /// Resolves once the store is no longer backlogged.
    pub async fn backlog_released(&self) {
        loop {
            let released = self.released.notified();
            if !self.backlogged.load(Ordering::Acquire) {
                return;
            }
            released.await;
        }
    }

    /// Keep (`Some`) or forget (`None`) a stored message's delivery state.
    pub fn mark(&self, slot: Slot, state: Option<DeliveryState>) {
        self.marks.lock().insert(slot, state);
    }

    /// A delivery state not written yet: `Some(None)` if it was forgotten.
    pub fn mark_of(&self, slot: Slot) -> Option<Option<DeliveryState>> {
        self.marks.lock().get(&slot).copied()
    }

    /// Forget the unwritten delivery states of a deleted queue.
    pub fn drop_marks(&self, uid: u64) {
        self.marks.lock().retain(|s, _| s.uid != uid);
    }

    /// Write what is due (everything, with `everything`: boot, shutdown,
    /// an explicit flush).
    pub fn write(&self, b: &dyn Backend, everything: bool) -> StoreResult<()> {
        let _one_at_a_time = self.writing.lock();
        let entries = self.entries.commit(b, everything);
        let paged = self.paged.commit(b, everything);
        let marks = std::mem::take(&mut *self.marks.lock());
        let mut result = entries.and(paged);
        let mut failed = Vec::new();
        for (slot, state) in marks {
            let k = key(b'd', slot);
            let r = match state {
                Some(state) => b.insert(Tree::Messages, &k, &encode_delivery(state)),
                None => b.remove(Tree::Messages, &k),
            };
            if r.is_err() {
                failed.push((slot, state));
            }
            result = result.and(r);
        }
        if !failed.is_empty() {
            // Written by the next try, unless a newer state came meanwhile.
            let mut marks = self.marks.lock();
            for (slot, state) in failed {
                marks.entry(slot).or_insert(state);
            }
        }
        self.refresh_backlog();
        result
    }
}
