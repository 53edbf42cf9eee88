//! Long queues: the parts that live only in the store.
//!
//! A queue keeps a window of ready messages in memory; past it (or once the
//! broker's memory budget is spent) new messages are kept only in the store
//! and read back a page at a time as consumers catch up. The core says when
//! it needs a page ([`PageRequest`]) or a message taken out of the store
//! where it sits (it expired there); this module does the reads and hands
//! the results back.

use std::sync::Arc;

use super::state::{Now, PageRequest, StoredFrom};
use super::{Locked, Queue, Shell};

/// How reading a page went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Paged {
    Read,
    /// Another thread is reading one of this queue's pages.
    Busy,
    /// The store could not be read; go on with what is in memory.
    Failed,
}

impl Queue {
    /// Whether a new message of `level` is kept only in the store: the level
    /// is already paging, or the memory window (or the broker's budget) is
    /// full.
    pub(super) fn should_page(&self, st: &Shell, level: u8) -> bool {
        self.env.can_page()
            && !st.core.is_last_value()
            && (st.core.is_paging(level)
                || st.core.in_memory() >= self.env.window
                || self.env.budget.exhausted())
    }

    /// Read the page the core asked for, with the queue unlocked.
    pub(super) fn page_in(
        self: &Arc<Self>,
        st: &mut Locked,
        request: PageRequest,
        now: &Now,
    ) -> Paged {
        let Some(ticket) = st.core.begin_page(request.level) else {
            return Paged::Busy;
        };
        let store = &self.env.store;
        let uid = self.config.uid;
        let PageRequest { level, from, count } = request;
        let read = st.unlocked(|| store.page_in_before(uid, level, from, ticket.before, count));
        let page = match read {
            Ok(page) => Some(page),
            Err(e) => {
                tracing::error!(queue = %self.config.name, "cannot read stored messages: {e}");
                None
            }
        };
        let outcome = if page.is_some() {
            Paged::Read
        } else {
            Paged::Failed
        };
        for (level, seq) in st.core.end_page(request, ticket, page, now) {
            if let Some((level, seq)) = st.core.expire(level, seq) {
                self.take_stored(st, level, seq);
            }
        }
        self.page_done.notify_all();
        outcome
    }

    /// Take message `seq` of `level` out of the store where it sits (it
    /// expired there); it is read only if it is to be dead-lettered.
    /// Taken like a page is read: with the queue unlocked, one store read
    /// per queue at a time (while another is in flight, the expiry waits
    /// for it).
    pub(super) fn take_stored(&self, st: &mut Locked, level: u8, seq: u64) {
        let read = st.core.settings().dead_letter.is_some();
        self.take_from_store(st, level, seq, read);
    }

    /// Take message `seq` of `level` out of the store where it sits, read
    /// if `read`; then expire what came due meanwhile. Whether it was
    /// there.
    pub(super) fn take_from_store(&self, st: &mut Locked, level: u8, seq: u64, read: bool) -> bool {
        let transient_only = !(self.config.survives_restart() && self.env.store.is_durable());
        let mut was_there = None;
        let mut due = vec![(level, seq)];
        while let Some((level, seq)) = due.pop() {
            let Some(ticket) = st.core.begin_page(level) else {
                st.core.defer_expiry(level, seq);
                continue;
            };
            let slot = crate::store::Slot {
                uid: self.config.uid,
                level,
                seq,
            };
            let store = &self.env.store;
            let taken = match st.unlocked(|| store.take_stored(slot, read, transient_only)) {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::error!(queue = %self.config.name, "cannot remove a stored message: {e}");
                    None
                }
            };
            was_there.get_or_insert(taken.is_some());
            for (level, seq) in st.core.end_take(level, ticket, taken) {
                due.extend(st.core.expire(level, seq));
            }
        }
        self.page_done.notify_all();
        was_there.unwrap_or(false)
    }

    /// Drop messages from the head while the queue is over its length
    /// limits, reading pages as the head needs them.
    pub(super) fn enforce_limits(self: &Arc<Self>, st: &mut Locked, now: &Now) {
        let mut may_page = true;
        while let Err(request) = st.core.enforce_limits(may_page) {
            may_page = self.page_in(st, request, now) == Paged::Read;
        }
    }

    /// Read the heads of every level that has stored messages, so the
    /// expiry index (and with it the timer) sees their expiry times.
    pub(super) fn page_in_heads(self: &Arc<Self>, st: &mut Locked, now: &Now) {
        for level in 0..st.core.level_count() {
            if let Some(request) = st.core.wants_page(level as u8) {
                self.page_in(st, request, now);
            }
        }
    }
}

/// What a queue holds in memory and in the store.
impl Queue {
    /// Memory and stored counts of ready messages, for diagnostics.
    pub fn ready_split(&self) -> (usize, u64) {
        let st = self.state.lock();
        (st.core.in_memory(), st.core.stored_count())
    }

    /// Bytes of ready message bodies this queue holds in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.state.lock().core.memory_bytes()
    }

    /// Ready messages that would survive a restart, per level (for the
    /// clean-shutdown snapshot, taken once connections have returned what
    /// they held).
    pub fn durable_ready(&self) -> Vec<(u8, u64)> {
        self.state.lock().core.durable_ready()
    }

    /// Where each level's stored region starts (for the recovery count).
    pub fn stored_from(&self) -> Vec<StoredFrom> {
        self.state.lock().core.stored_from()
    }

    /// Replace a recovered level's estimated size with a count made in the
    /// background from `at`, if nothing has been read from the store since.
    pub fn set_recovered_count(self: &Arc<Self>, at: StoredFrom, count: u64) {
        self.lock().core.set_recovered_count(at, count);
    }
}
