//! Write-behind for queue entries.
//!
//! A persistent message that stays in its queue's memory window need not be
//! written the moment it is published: it must be on disk only before its
//! publisher is confirmed, which happens after the next group commit. Its
//! entry waits here until then; the group-commit thread writes every waiting
//! entry just before it flushes. If the message is acknowledged first (a
//! consumer that keeps up), its entry is simply dropped from here and the
//! store never sees it — the same shortcut RabbitMQ takes: a confirm means
//! "persisted, or already consumed and acknowledged".

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{Backend, StoreResult, Tree};

/// Entries waiting to be written, by key (so they are written in key order).
#[derive(Debug, Default)]
pub struct WriteBehind {
    pending: Mutex<BTreeMap<super::records::Key, Vec<u8>>>,
}

impl WriteBehind {
    pub fn put(&self, key: super::records::Key, value: Vec<u8>) {
        self.pending.lock().insert(key, value);
    }

    /// Drop a waiting entry; false if it was not waiting (it is already in
    /// the backend, or never existed).
    pub fn cancel(&self, key: &super::records::Key) -> bool {
        self.pending.lock().remove(key).is_some()
    }

    /// Drop every waiting entry whose key starts with `prefix` (a deleted
    /// queue's).
    pub fn cancel_prefix(&self, prefix: &[u8]) {
        self.pending.lock().retain(|k, _| !k.starts_with(prefix));
    }

    /// Write every waiting entry to the backend (called before a flush).
    pub fn write_to(&self, backend: &dyn Backend) -> StoreResult<()> {
        let batch = std::mem::take(&mut *self.pending.lock());
        for (k, v) in &batch {
            backend.insert(Tree::Messages, k, v)?;
        }
        Ok(())
    }
}
