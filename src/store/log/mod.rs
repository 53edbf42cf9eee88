//! Stream logs: each stream's messages appended to segment files, read by
//! offset or time, dropped from the head a whole segment at a time.
//!
//! | file | owns |
//! |---|---|
//! | `record` | the bytes of one record and one index entry (pure) |
//! | `segment` | one segment's data and index files: appending, checking at open |
//! | `log` | one stream: appends, the durable high-water mark, the in-memory tail, retention, tracked offsets |
//! | `cursor` | reading from an offset, with a filter |
//!
//! Logs live under `<data dir>/streams/<uid>/` (a temporary directory for
//! an ephemeral broker). They are synced by the group-commit thread in the
//! same cycle as the rest of the store, so a publisher's confirm waits for
//! exactly one sync whatever it published to; sled keeps only the offsets
//! consumers asked to have remembered.

mod cursor;
mod erase;
#[allow(clippy::module_inception)]
mod log;
mod record;
mod segment;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::RwLock;

pub use cursor::{Cursor, offset_at};
pub use log::{Log, TailRecord};

/// The key prefix of a log's tracked offsets in the messages tree.
pub(super) fn tracking_prefix(uid: u64) -> Vec<u8> {
    log::tracking_key(uid, "")
}

use super::{Backend, StoreResult};
use crate::message::Message;

/// What is appended: the message (its properties already carry its
/// `x-stream-offset`) and its filter value.
#[derive(Debug)]
pub struct Entry {
    pub message: Arc<Message>,
    pub filter: Option<Bytes>,
}

/// When whole segments are dropped from a log's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<u64>,
    /// A segment is closed and a new one started past this size.
    pub max_segment_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_bytes: None,
            max_age_ms: None,
            // RabbitMQ's default `x-stream-max-segment-size-bytes`.
            max_segment_bytes: 500_000_000,
        }
    }
}

/// Which records a consumer wants (`x-stream-filter`,
/// `x-stream-match-unfiltered`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub values: Vec<Bytes>,
    pub match_unfiltered: bool,
    /// The Bloom bits of `values`, to test a chunk's index entry.
    pub bloom: u64,
}

impl Filter {
    pub fn new(values: Vec<Bytes>, match_unfiltered: bool) -> Filter {
        let bloom = values.iter().fold(0, |b, v| b | record::bloom_bits(v));
        Filter {
            values,
            match_unfiltered,
            bloom,
        }
    }

    /// Exactly: a record with a filter value is accepted if the value is
    /// one of the consumer's; one without, if it asked for those too.
    pub fn accepts(&self, value: Option<&[u8]>) -> bool {
        match value {
            Some(v) => self.values.iter().any(|f| f.as_ref() == v),
            None => self.match_unfiltered,
        }
    }
}

/// Now, in ms since the epoch (record timestamps, retention by age).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every open log of a store.
#[derive(Debug)]
pub(super) struct Logs {
    dir: PathBuf,
    /// Seals records' properties and bodies (encryption at rest).
    keys: Option<Arc<super::sealed::Keyring>>,
    /// Remove `dir` when the store closes (an ephemeral broker's).
    temporary: bool,
    logs: RwLock<HashMap<u64, Arc<Log>>>,
    /// Some log has records to sync (a cycle was asked for); cleared by
    /// each sync.
    pub appended: AtomicBool,
    /// Some log has tracked offsets to write, which can wait for the next
    /// periodic flush. Kept apart from `appended` so that noting one never
    /// hides an append's request for a prompt cycle.
    pub tracked: AtomicBool,
    tail_bytes: usize,
}

impl Logs {
    pub fn new(dir: PathBuf, temporary: bool, tail_bytes: usize) -> Logs {
        Logs {
            dir,
            keys: None,
            temporary,
            logs: RwLock::new(HashMap::new()),
            appended: AtomicBool::new(false),
            tracked: AtomicBool::new(false),
            tail_bytes,
        }
    }

    /// Seal every record's properties and body under `keys`.
    pub fn sealed_with(mut self, keys: Option<Arc<super::sealed::Keyring>>) -> Logs {
        self.keys = keys;
        self
    }

    /// A temporary directory for an ephemeral broker's logs.
    pub fn temporary_dir() -> PathBuf {
        let mut rnd = [0u8; 8];
        rand::fill(&mut rnd);
        std::env::temp_dir().join(format!(
            "warren-streams-{}-{}",
            std::process::id(),
            u64::from_be_bytes(rnd)
        ))
    }

    pub fn open(&self, uid: u64, backend: &dyn Backend) -> StoreResult<Arc<Log>> {
        if let Some(l) = self.logs.read().get(&uid) {
            return Ok(l.clone());
        }
        let dir = self.dir.join(format!("{uid:016x}"));
        let log = Arc::new(Log::open(
            uid,
            dir,
            self.tail_bytes,
            backend,
            self.keys.clone(),
        )?);
        self.logs.write().insert(uid, log.clone());
        Ok(log)
    }

    pub fn any_open(&self) -> bool {
        !self.logs.read().is_empty()
    }

    pub fn remove(&self, uid: u64) {
        if let Some(l) = self.logs.write().remove(&uid) {
            l.destroy();
        }
    }

    /// Sync every log with something pending (the group-commit thread).
    pub fn sync(&self, backend: &dyn Backend) -> StoreResult<()> {
        let appended = self.appended.swap(false, Ordering::AcqRel);
        let tracked = self.tracked.swap(false, Ordering::AcqRel);
        if !appended && !tracked {
            return Ok(());
        }
        let logs: Vec<Arc<Log>> = self.logs.read().values().cloned().collect();
        let mut first_error = Ok(());
        for l in logs {
            if let Err(e) = l.sync(backend) {
                tracing::error!(stream = l.uid, "cannot write a stream: {e}");
                if first_error.is_ok() {
                    first_error = Err(e);
                }
            }
        }
        first_error
    }

    /// Retention on a timer, for logs nothing is appended to.
    pub fn retain(&self) {
        let now = now_ms();
        let logs: Vec<Arc<Log>> = self.logs.read().values().cloned().collect();
        for l in logs {
            l.apply_retention(now);
        }
    }

    pub fn close(&self) {
        if self.temporary
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests;
