//! Persistence: durable definitions, persistent messages, and paged-out
//! queue contents.
//!
//! A [`Backend`] is a small ordered key-value interface with three trees;
//! `sled_backend` implements it on sled (the only file that imports sled),
//! `memory_backend` in memory. [`Store`] puts Warren's key layout, record
//! formats and group commit on top, so the rest of the broker never sees
//! keys or bytes.
//!
//! | file | owns |
//! |---|---|
//! | `definitions` | the `definitions` tree: vhosts, users, permissions, policies, parameters, exchanges, queues, bindings |
//! | `definition_keys` | that tree's key layout, and the rewrite of format 2 and 3 keys |
//! | `records` | the `messages` tree's byte layout: keys, message records, batches, delivery states (pure functions) |
//! | `messages` | queue contents one message at a time: entries, paging out, delivery states, reading back, taking one where it sits |
//! | `batches` | queue messages a batch to a key, in memory until written: durable entries and paged-out transient messages |
//! | `unwritten` | everything queues handed over that the group commit has not written yet |
//! | `ranges` | queue contents by range: bounds, counts, purge and delete, clearing what earlier runs left |
//! | `cleanup` | the background worker that removes purged and deleted ranges |
//! | `group_commit` | the flush thread and its waiters |
//! | `sled_backend`, `memory_backend` | the two [`Backend`]s |
//!
//! Queue messages are handed over in memory and written by the
//! group-commit thread just before it flushes; definitions are written at
//! once. Durability comes from [`Store::after_flush`]: the group-commit
//! thread runs one flush for every change made before it started, then
//! completes all the waiters at once. Publisher confirms, `tx.commit-ok`,
//! `purge-ok` and `declare-ok` for durable entities wait for that flush.
//!
//! The on-disk layout is documented in `docs/storage.md`; its version is
//! checked at open, and an unknown version refuses to start.

mod backend;
mod batches;
mod cleanup;
mod definition_keys;
mod definitions;
mod epoch;
#[cfg(test)]
pub(crate) mod gated_backend;
mod group_commit;
pub mod log;
mod memory_backend;
mod messages;
mod meta;
#[cfg(test)]
mod race_test;
mod ranges;
mod records;
mod sealed;
mod sled_backend;
mod streams;
mod unwritten;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use backend::{Backend, Tree};
pub use definitions::{
    BindingRecord, Definitions, ExchangeRecord, GlobalParameterRecord, ParameterRecord,
    PermissionRecord, PolicyRecord, QueueRecord, TopicPermissionRecord, UserRecord,
    VhostLimitsRecord, VhostRecord,
};
pub use group_commit::Waiter;
pub use memory_backend::MemoryBackend;
pub use messages::{Recovered, Stored, TakenMessage};
pub use records::{DeliveryState, Slot};
pub use sealed::{Keyring, StoreKey};

use group_commit::GroupCommit;

/// Version of the on-disk layout this build writes. It reads versions 2
/// and 3 too: their definition keys are rewritten at open (format 4 keys
/// are length-prefixed, not NUL-joined), and the store is then marked 4, so
/// an older Warren refuses it rather than miss its records.
pub const FORMAT_VERSION: u32 = 4;
const READS_FORMATS: &[&[u8]] = &[b"2", b"3", b"4"];

/// The newest records of each stream kept in memory for consumers at the
/// tail, in body bytes.
const STREAM_TAIL_BYTES: usize = 8 << 20;

/// A storage failure. Cloneable so one flush error can complete many waiters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("corrupt {what} record: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(
        "the data directory {path} holds on-disk format version {found}, but this Warren reads \
         version {FORMAT_VERSION}; refusing to start rather than risk the data"
    )]
    Version { path: String, found: String },
    /// sled's files are damaged, or hold less than Warren made durable.
    #[error("the store is damaged: {0}")]
    Damaged(String),
    #[error(
        "the data directory is in use: another process holds the lock on {path} (is another \
         Warren running on it?)"
    )]
    Locked { path: String },
    #[error("the data directory is read-only: cannot write to {path}: {detail}")]
    ReadOnly { path: String, detail: String },
}

impl StoreError {
    fn corrupt(what: &'static str, detail: impl fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How the store behaves; from the `[storage]` config section.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Flush when this many waiters are queued, without waiting longer.
    pub group_commit_max_batch: usize,
    /// Wait up to this long for more waiters before flushing.
    pub group_commit_max_delay: Duration,
    /// sled's page cache.
    pub cache_bytes: u64,
    /// Writes nobody waits for are flushed at least this often.
    pub flush_interval: Duration,
    /// Once this much waits to be written (the disk cannot keep up),
    /// connections publishing persistent messages are held back until it
    /// is down to half.
    pub flow_unwritten_bytes: usize,
    /// A write and flush that takes longer counts as a failure: its
    /// publishes are nacked and the disk alarm raised (sled can wait
    /// forever on a write that failed).
    pub write_stall: Duration,
}

/// Run when the store stops being able to write.
pub struct FailureHook(Box<dyn Fn() + Send + Sync>);

impl fmt::Debug for FailureHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FailureHook")
    }
}

/// Warren's persistence: key layout, records and group commit over a
/// [`Backend`].
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// False for `--ephemeral`: nothing is persisted and queues never page.
    durable: bool,
    /// The store was created by this boot (no definitions to recover).
    fresh: bool,
    /// The previous run shut down cleanly.
    clean: bool,
    commit: GroupCommit,
    /// What queues handed over that is not written yet.
    unwritten: Arc<unwritten::Unwritten>,
    cleanup: cleanup::Cleanup,
    /// The first queue uid of this run: keys below it with no queue are
    /// what earlier runs left.
    first_uid: u64,
    next_queue_uid: AtomicU64,
    /// Queue uids below this are reserved on disk.
    uids_reserved: AtomicU64,
    uid_reservation: parking_lot::Mutex<()>,
    /// Whether the store can write (the group commit keeps it current).
    health: Arc<group_commit::Health>,
    /// The epoch file of an on-disk store (`epoch.rs`).
    epochs: Option<Arc<epoch::Epochs>>,
    /// How long a write may take before it counts as failed.
    write_stall: Duration,
    /// Stream logs (segment files), synced by the group commit.
    logs: Arc<log::Logs>,
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path, options: &StoreOptions) -> StoreResult<Store> {
        Store::open_sealed(dir, options, None)
    }

    /// Open the store in `dir`, its records sealed under `keys` if given
    /// (`sealed.rs`): a store made with a key refuses to open without it.
    pub fn open_sealed(
        dir: &Path,
        options: &StoreOptions,
        keys: Option<sealed::Keyring>,
    ) -> StoreResult<Store> {
        let sled: Arc<dyn Backend> = Arc::new(sled_backend::SledBackend::open(dir, options)?);
        let keys = keys.map(Arc::new);
        let backend: Arc<dyn Backend> = match keys.clone() {
            Some(keys) => {
                let rotating = keys.old.is_some();
                let sealed = Arc::new(sealed::SealedBackend::open(sled, keys)?);
                if rotating {
                    sealed::retire_in_background(sealed.clone(), dir.join("streams"));
                }
                sealed
            }
            None => {
                sealed::SealedBackend::check_unencrypted(sled.as_ref())?;
                sled
            }
        };
        let epochs = epoch::Epochs::open(dir)?;
        let logs = log::Logs::new(dir.join("streams"), false, STREAM_TAIL_BYTES).sealed_with(keys);
        Store::with_backend(backend, true, options, dir, Some(epochs), logs)
    }

    /// A store that keeps nothing: for `--ephemeral` brokers.
    pub fn ephemeral() -> Store {
        let options = StoreOptions {
            group_commit_max_batch: 1,
            group_commit_max_delay: Duration::ZERO,
            cache_bytes: 0,
            flush_interval: Duration::from_secs(3600),
            flow_unwritten_bytes: 64 << 20,
            write_stall: Duration::from_secs(10),
        };
        let backend: Arc<dyn Backend> = Arc::new(memory_backend::MemoryBackend::default());
        let logs = log::Logs::new(log::Logs::temporary_dir(), true, STREAM_TAIL_BYTES);
        let dir = Path::new("<memory>");
        match Store::with_backend(backend, false, &options, dir, None, logs) {
            Ok(s) => s,
            Err(e) => unreachable!("a fresh memory store cannot fail to open: {e}"),
        }
    }

    /// A persistent store kept in memory: the same code paths as on disk,
    /// for tests.
    pub fn in_memory_for_tests() -> Store {
        let backend: Arc<dyn Backend> = Arc::new(memory_backend::MemoryBackend::default());
        match Store::over(backend) {
            Ok(s) => s,
            Err(e) => unreachable!("a fresh memory store cannot fail to open: {e}"),
        }
    }

    /// A persistent store over any backend (tests inject failing ones).
    pub fn over(backend: Arc<dyn Backend>) -> StoreResult<Store> {
        let options = StoreOptions {
            group_commit_max_batch: 64,
            group_commit_max_delay: Duration::ZERO,
            cache_bytes: 0,
            flush_interval: Duration::from_millis(100),
            flow_unwritten_bytes: 64 << 20,
            write_stall: Duration::from_secs(10),
        };
        Store::over_with(backend, &options)
    }

    /// A persistent store over any backend, with these options.
    pub fn over_with(backend: Arc<dyn Backend>, options: &StoreOptions) -> StoreResult<Store> {
        let logs = log::Logs::new(log::Logs::temporary_dir(), true, STREAM_TAIL_BYTES);
        let dir = Path::new("<custom backend>");
        Store::with_backend(backend, true, options, dir, None, logs)
    }

    fn with_backend(
        backend: Arc<dyn Backend>,
        durable: bool,
        options: &StoreOptions,
        dir: &Path,
        epochs: Option<(epoch::Epochs, Option<u64>)>,
        logs: log::Logs,
    ) -> StoreResult<Store> {
        let logs = Arc::new(logs);
        let path = dir.display().to_string();
        let version = backend.get(Tree::Meta, b"format")?;
        // Before anything is written: a store that lost writes must stay
        // as it was found.
        if let Some((epochs, recorded)) = &epochs {
            let sled_path = dir.join("warren.sled").display().to_string();
            epochs.check(*recorded, backend.as_ref(), version.is_some(), &sled_path)?;
        }
        let epochs = epochs.map(|(e, _)| Arc::new(e));
        let fresh = match version {
            None => {
                backend.insert(Tree::Meta, b"format", FORMAT_VERSION.to_string().as_bytes())?;
                backend.flush()?;
                true
            }
            Some(v) if READS_FORMATS.contains(&v.as_slice()) => {
                let current = FORMAT_VERSION.to_string();
                if v != current.as_bytes() {
                    let moved = definition_keys::migrate(backend.as_ref())?;
                    // The rewrite is durable before the marker says so.
                    backend.flush()?;
                    tracing::info!(
                        "upgraded the store from format {} to {current}: {moved} definition keys \
                         rewritten",
                        String::from_utf8_lossy(&v)
                    );
                }
                backend.insert(Tree::Meta, b"format", current.as_bytes())?;
                false
            }
            Some(v) => {
                return Err(StoreError::Version {
                    path,
                    found: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        };
        let reserved = backend
            .get(Tree::Meta, b"uids")?
            .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let next_queue_uid = definitions::last_queue_uid(backend.as_ref())?
            .map_or(1, |u| u + 1)
            .max(reserved + 1);
        // Page under the key kind the previous run did not use, so its
        // leftovers can be cleared while this run pages.
        let paged_kind = match backend.get(Tree::Meta, b"paged")?.as_deref() {
            Some([kind]) => ranges::other_kind(*kind),
            _ => b'u',
        };
        let unwritten = Arc::new(unwritten::Unwritten::new(
            paged_kind,
            options.flow_unwritten_bytes,
        ));
        let health = Arc::new(group_commit::Health::default());
        let commit = GroupCommit::start(
            backend.clone(),
            unwritten.clone(),
            logs.clone(),
            epochs.clone(),
            health.clone(),
            options,
        )?;
        let cleanup = cleanup::Cleanup::start()?;
        backend.insert(Tree::Meta, b"paged", &[paged_kind])?;
        // A clean shutdown leaves this mark; it is removed at once so that a
        // crash later in this run is recognised as one.
        let clean = backend.get(Tree::Meta, b"clean")?.is_some();
        if clean {
            backend.remove(Tree::Meta, b"clean")?;
        }
        let epoch = epochs
            .as_ref()
            .map(|e| e.advance(backend.as_ref()))
            .transpose()?;
        backend.flush()?;
        if let (Some(epochs), Some(epoch)) = (&epochs, epoch) {
            epochs.durable(epoch, false);
        }
        Ok(Store {
            backend,
            durable,
            fresh,
            clean,
            commit,
            unwritten,
            cleanup,
            first_uid: next_queue_uid,
            // Runtime-only (transient) queues take uids from the same
            // counter so their paged keys never collide with durable ones.
            next_queue_uid: AtomicU64::new(next_queue_uid),
            uids_reserved: AtomicU64::new(next_queue_uid),
            uid_reservation: parking_lot::Mutex::new(()),
            health,
            epochs,
            write_stall: options.write_stall,
            logs,
        })
    }

    /// Bytes of messages handed over and not written yet.
    pub fn unwritten_bytes(&self) -> u64 {
        self.unwritten.held_bytes() as u64
    }

    /// Whether so much waits to be written (the disk cannot keep up) that
    /// connections publishing persistent messages should be held back.
    pub fn is_backlogged(&self) -> bool {
        self.unwritten.is_backlogged()
    }

    /// Resolves once the store is no longer backlogged.
    pub async fn backlog_released(&self) {
        self.unwritten.backlog_released().await
    }

    /// Whether this store keeps anything (false for `--ephemeral`).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// True on the first boot of a data directory.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// True if the previous run shut down cleanly (or there was none).
    pub fn was_clean(&self) -> bool {
        self.clean || self.fresh
    }

    /// True while the store cannot write: since a write or flush failed,
    /// until a group commit writes and flushes everything it had.
    pub fn has_failed(&self) -> bool {
        self.health.has_failed()
    }

    fn note<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        match &r {
            Ok(_) => self.commit.touch(),
            Err(e) => {
                tracing::error!("storage failure: {e}");
                self.health.fail(e);
                // The group commit's retry is what finds out that the
                // store writes again.
                self.commit.touch();
            }
        }
        r
    }

    /// Look for failures nobody would report (the broker's resource watcher
    /// calls this every second): a write that has stalled, files removed
    /// from under the store. Either raises the failure (and with it the
    /// disk alarm) until a group commit completes.
    pub fn check(&self) {
        if !self.durable {
            return;
        }
        self.commit.check_stall(&self.health);
        if let Err(e) = self.backend.check() {
            self.health.fail(&e);
            self.commit.touch();
        }
    }

    /// Run `hook` each time the store stops being able to write.
    pub fn on_failure(&self, hook: Box<dyn Fn() + Send + Sync>) {
        self.health.set_hook(FailureHook(hook));
    }

    /// A uid for a new queue. Uids are reserved on disk in blocks, so after
    /// a crash no new queue reuses the uid of an old transient queue whose
    /// paged-out messages are still being cleared.
    pub fn new_queue_uid(&self) -> u64 {
        const BLOCK: u64 = 1024;
        let uid = self.next_queue_uid.fetch_add(1, Ordering::Relaxed);
        if self.durable && uid >= self.uids_reserved.load(Ordering::Acquire) {
            let _guard = self.uid_reservation.lock();
            if uid >= self.uids_reserved.load(Ordering::Acquire) {
                let through = uid + BLOCK;
                let _ = self.note(self.backend.insert(
                    Tree::Meta,
                    b"uids",
                    through.to_string().as_bytes(),
                ));
                self.uids_reserved.store(through, Ordering::Release);
            }
        }
        uid
    }

    /// Run `waiter` once everything written so far is durable.
    /// An ephemeral store has nothing to flush, but a stream's appends
    /// only become readable with a group-commit cycle: a publisher's
    /// confirm waits for that, so a consumer started after it sees the
    /// message.
    pub fn after_flush(&self, waiter: Waiter) {
        if self.durable || self.logs.any_open() {
            self.commit.after_flush(waiter);
        } else {
            waiter(Ok(()))
        }
    }

    /// A future that resolves once everything written so far is durable.
    pub fn synced(&self) -> tokio::sync::oneshot::Receiver<StoreResult<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_flush(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx
    }

    /// Flush now, on this thread (boot-time writes).
    pub fn flush_now(&self) -> StoreResult<()> {
        if self.durable {
            self.note(self.unwritten.write(self.backend.as_ref(), true))?;
            self.note(self.backend.flush())
        } else {
            Ok(())
        }
    }

    /// Flush, mark the shutdown clean, and stop the group-commit thread.
    pub fn close(&self) -> StoreResult<()> {
        if !self.commit.stop() {
            // A write is stuck: the store cannot be written in order
            // after it. The next start recovers as after a crash.
            self.logs.close();
            return Err(StoreError::Io(
                "a write to the disk is stuck; the store was not closed cleanly".into(),
            ));
        }
        self.cleanup.stop();
        let synced = self.logs.sync(self.backend.as_ref());
        self.logs.close();
        synced?;
        if !self.durable {
            return Ok(());
        }
        // On a thread of its own, waited for no longer than a write may
        // stall: after a failed write sled can wait forever in a flush,
        // and a shutdown must not.
        let (backend, unwritten, epochs) = (
            self.backend.clone(),
            self.unwritten.clone(),
            self.epochs.clone(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("warren-store-close".into())
            .spawn(move || {
                let _ = tx.send(final_write(backend.as_ref(), &unwritten, epochs.as_deref()));
            })
            .map_err(|e| StoreError::Io(format!("cannot start the final write: {e}")))?;
        rx.recv_timeout(self.write_stall).unwrap_or_else(|_| {
            Err(StoreError::Io(
                "the final write to the disk is stuck; the store was not closed cleanly".into(),
            ))
        })
    }
}

/// A clean shutdown's last write: everything left, the clean mark and the
/// next epoch, one flush, then what the next open checks.
fn final_write(
    backend: &dyn Backend,
    unwritten: &unwritten::Unwritten,
    epochs: Option<&epoch::Epochs>,
) -> StoreResult<()> {
    unwritten.write(backend, true)?;
    backend.insert(Tree::Meta, b"clean", b"1")?;
    let epoch = epochs.map(|e| e.advance(backend)).transpose()?;
    backend.flush()?;
    if let (Some(epochs), Some(epoch)) = (epochs, epoch) {
        epochs.durable(epoch, true);
    }
    backend.seal()
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
