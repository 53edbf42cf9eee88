//! The epoch: how far sled's history reached, kept outside sled, so a
//! store that lost the end of its history is noticed.
//!
//! sled recovers its log up to the first record it cannot read and takes
//! that as the end of a crash: a truncated or corrupted `db` file, or files
//! removed, open as a shorter history — or as an empty store — without an
//! error, and confirmed messages are gone. So every group commit writes a
//! counter, the epoch, into sled's `meta` tree before its flush, and once
//! the flush succeeded writes the same number to `<data_dir>/warren.epoch`.
//! The file therefore never claims more than sled made durable; at open,
//! a file ahead of sled means sled lost writes that were durable, and the
//! store is refused (see [`check`]).
//!
//! The file is written in place without fsync at run time (a fixed-width
//! line, one `pwrite`): after a process crash the page cache still has it;
//! after a power loss it may be older than sled, which is never mistaken
//! for damage. A clean shutdown syncs it. An unreadable file is reported
//! and the check skipped; removing it is how an operator accepts a store
//! that lost writes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Backend, StoreError, StoreResult, Tree};

/// The epoch's key in the `meta` tree.
const KEY: &[u8] = b"epoch";
/// The file, in the data directory (beside sled's, not inside it, so that
/// losing sled's directory is noticed too).
pub const FILE_NAME: &str = "warren.epoch";
/// `{epoch:020}\n`: a fixed width, so an update is one write in place.
const WIDTH: usize = 21;

/// The epoch file of a data directory, and the epoch in force.
#[derive(Debug)]
pub(super) struct Epochs {
    path: PathBuf,
    file: File,
    /// The last epoch written to sled (durable once its flush returns).
    current: AtomicU64,
    /// A failure to write the file was reported (once: it recurs with
    /// every group commit).
    warned: AtomicBool,
}

impl Epochs {
    /// Open (or create) the epoch file of `dir`; what it records, if it
    /// can be read.
    pub fn open(dir: &Path) -> StoreResult<(Epochs, Option<u64>)> {
        let path = dir.join(FILE_NAME);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                    StoreError::ReadOnly {
                        path: path.display().to_string(),
                        detail: e.to_string(),
                    }
                }
                _ => StoreError::Io(format!("cannot open {}: {e}", path.display())),
            })?;
        let mut text = String::new();
        let recorded = match std::io::Read::read_to_string(&mut &file, &mut text) {
            // Created, or created and not yet written when a crash came.
            Ok(_) if text.is_empty() => None,
            Ok(_) => match text.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(
                        "{} is unreadable ({text:?}): cannot check that the store lost no writes",
                        path.display()
                    );
                    None
                }
            },
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; cannot check that the store lost no writes",
                    path.display()
                );
                None
            }
        };
        let epochs = Epochs {
            path,
            file,
            current: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        };
        Ok((epochs, recorded))
    }

    /// Refuse a store whose history is shorter than the file says was
    /// durable: `has_store` is false when sled holds no store at all.
    pub fn check(
        &self,
        recorded: Option<u64>,
        b: &dyn Backend,
        has_store: bool,
        sled_path: &str,
    ) -> StoreResult<()> {
        let stored = stored(b)?;
        let Some(recorded) = recorded else {
            self.current.store(stored, Ordering::Relaxed);
            return Ok(());
        };
        let file = self.path.display();
        if !has_store {
            return Err(StoreError::Damaged(format!(
                "{sled_path} holds no store, but {file} records that Warren wrote one there \
                 (epoch {recorded}): sled's files were removed, emptied, or corrupted from \
                 their start. Restore the data directory from a backup, or remove {file} to \
                 start with an empty store"
            )));
        }
        if recorded > stored {
            return Err(StoreError::Damaged(format!(
                "{sled_path} holds writes up to epoch {stored}, but Warren made writes up to \
                 epoch {recorded} durable ({file}): sled lost the end of its log (a truncated \
                 or corrupted file, or files from an older copy), and with it messages and \
                 definitions that were confirmed. Restore the data directory from a backup, or \
                 remove {file} to start with what is left"
            )));
        }
        self.current.store(stored.max(recorded), Ordering::Relaxed);
        Ok(())
    }

    /// Write the next epoch to sled (before a flush); it is durable once
    /// that flush returns, and [`durable`](Self::durable) records it.
    pub fn advance(&self, b: &dyn Backend) -> StoreResult<u64> {
        let next = self.current.load(Ordering::Relaxed) + 1;
        b.insert(Tree::Meta, KEY, &next.to_be_bytes())?;
        self.current.store(next, Ordering::Relaxed);
        Ok(next)
    }

    /// sled made `epoch` durable: record it in the file (synced with
    /// `sync`, at a clean shutdown). A file that cannot be written weakens
    /// the check but loses nothing: it is reported, not raised.
    pub fn durable(&self, epoch: u64, sync: bool) {
        let line = format!("{epoch:0w$}\n", w = WIDTH - 1);
        let r = self
            .file
            .write_all_at(line.as_bytes(), 0)
            .and_then(|()| if sync { self.file.sync_all() } else { Ok(()) });
        if let Err(e) = r
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "cannot record the store's epoch in {}: {e}",
                self.path.display()
            );
        }
    }
}

/// The epoch sled holds (0 if none: a store older than epochs, or none).
fn stored(b: &dyn Backend) -> StoreResult<u64> {
    Ok(b.get(Tree::Meta, KEY)?
        .and_then(|v| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
        .unwrap_or(0))
}
