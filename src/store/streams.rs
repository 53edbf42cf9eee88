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
        if !self.logs.appended.swap(true, Ordering::AcqRel) {
            self.commit.wake();
        }
        offset
    }

    /// Remember consumer `tag`'s offset in `log`, written with the next
    /// group commit.
    pub fn track_offset(&self, log: &Log, tag: &str, offset: u64) {
        log.track(tag, offset);
        self.logs.tracked.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::message::Message;
    use crate::store::Store;
    use crate::store::log::Entry;

    fn append(store: &Store, log: &crate::store::log::Log) -> u64 {
        store.append_to_log(log, 1, |_, _| Entry {
            message: Arc::new(Message::empty()),
            filter: None,
        })
    }

    fn committed_soon(log: &crate::store::log::Log, want: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if log.committed() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// An ephemeral store flushes sled hourly; appends still sync at once,
    /// even after a tracked offset has been noted for the next flush.
    #[test]
    fn appends_sync_promptly_after_a_tracked_offset() {
        let store = Store::ephemeral();
        let log = store.open_log(7).unwrap();
        append(&store, &log);
        assert!(committed_soon(&log, 1));
        store.track_offset(&log, "consumer", 1);
        append(&store, &log);
        assert!(
            committed_soon(&log, 2),
            "the append after tracking was never synced"
        );
        store.close().unwrap();
    }

    /// A confirm for a stream publish means a consumer started after it
    /// sees the message, on an ephemeral broker too.
    #[test]
    fn a_flush_waiter_runs_after_the_append_is_readable() {
        let store = Store::ephemeral();
        let log = store.open_log(7).unwrap();
        for n in 1..=50 {
            append(&store, &log);
            let (tx, rx) = std::sync::mpsc::channel();
            let seen = log.clone();
            store.after_flush(Box::new(move |r| {
                let _ = tx.send((r.is_ok(), seen.committed()));
            }));
            let (ok, committed) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
            assert!(
                ok && committed >= n,
                "confirmed {n} with {committed} readable"
            );
        }
        store.close().unwrap();
    }
}
