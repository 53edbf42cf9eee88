//! The store's side of streams: opening, appending to and deleting a
//! stream's log (`log`), and the offsets consumers ask to have remembered.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::log::{Entry, Log};
use super::{Store, StoreResult};

impl Store {
    /// The log of stream `uid`, opened (and checked) or created.
    pub fn open_log(&self, uid: u64) -> StoreResult<Arc<Log>> {
        self.note(self.logs.open(uid, self.backend.as_ref()))
    }

    /// Append to `log` (see [`Log::append`]) and have the next group
    /// commit write and sync it: at once, since consumers only see what
    /// is synced.
    pub fn append_to_log(
        &self,
        log: &Log,
        now_ms: u64,
        make: impl FnOnce(u64, u64) -> Entry,
    ) -> u64 {
        let offset = log.append(now_ms, make);
        if !self.logs.wanted.swap(true, Ordering::AcqRel) {
            self.commit.wake();
        }
        offset
    }

    /// Remember consumer `tag`'s offset in `log`, written with the next
    /// group commit.
    pub fn track_offset(&self, log: &Log, tag: &str, offset: u64) {
        log.track(tag, offset);
        self.logs.wanted.store(true, Ordering::Release);
        self.commit.touch();
    }

    /// Forget a deleted stream's log and remove its files.
    pub fn delete_log(&self, uid: u64) {
        self.logs.remove(uid);
        let prefix = super::log::tracking_prefix(uid);
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let keys = self
            .backend
            .scan(super::Tree::Messages, &prefix, &end, usize::MAX)
            .unwrap_or_default();
        for (k, _) in keys {
            let _ = self.note(self.backend.remove(super::Tree::Messages, &k));
        }
    }

    /// Drop what retention says of every log (run on a timer).
    pub fn retain_logs(&self) {
        self.logs.retain();
    }
}
