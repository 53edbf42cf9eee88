//! The sled backend: the only code in Warren that imports sled.
//!
//! sled (pinned at 0.34.7) applies writes to its in-memory page cache and
//! makes them durable on `flush`; its automatic periodic flush is turned off
//! so that Warren's group commit decides when data is durable. Individual
//! inserts are used rather than `apply_batch`, which flushes far more slowly
//! in 0.34.
//!
//! Values too large for sled's log live in files under `blobs/`. sled
//! skips a blob it cannot find as if the write had never happened, so a
//! removed blob silently turns the store back to an older state. A clean
//! shutdown therefore lists the blobs ([`BLOB_LIST`]) and the next open
//! checks that each is still there, whole.

use std::path::{Path, PathBuf};

use super::{Backend, StoreError, StoreOptions, StoreResult, Tree};

#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
    meta: sled::Tree,
    definitions: sled::Tree,
    messages: sled::Tree,
    /// sled's directory, for errors that name it.
    path: PathBuf,
    /// Where a clean shutdown lists sled's blobs.
    blob_list: PathBuf,
    /// The `db` file sled opened (device, inode): if the path no longer
    /// leads to it, the data directory was removed or replaced, and sled
    /// writes to a file nobody will read again.
    identity: Option<(u64, u64)>,
}

/// The list of sled's blobs at the last clean shutdown, in the data
/// directory: one `name size` line per blob.
pub const BLOB_LIST: &str = "warren.blobs";

/// What sled says, in terms an operator can act on: sled's own texts name
/// a lock by its debug form and corruption by a file offset and an empty
/// backtrace.
fn describe(e: sled::Error, path: &Path) -> StoreError {
    let path = path.display().to_string();
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Damaged(match at {
            Some(at) => format!("sled found corrupted data in {path} (at {at})"),
            None => format!("sled found corrupted data in {path}"),
        }),
        // At open: a `conf` that does not match the `db` file.
        sled::Error::Unsupported(e) => StoreError::Damaged(format!("sled cannot open {path}: {e}")),
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: Path::new(&path).join("db").display().to_string(),
            }
        }
        sled::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            StoreError::ReadOnly {
                path,
                detail: e.to_string(),
            }
        }
        sled::Error::Io(e) => StoreError::Io(e.to_string()),
        e => StoreError::Io(e.to_string()),
    }
}

impl SledBackend {
    pub fn open(dir: &Path, options: &StoreOptions) -> StoreResult<SledBackend> {
        let path = dir.join("warren.sled");
        let io = |e| describe(e, &path);
        // Before sled opens: after a torn log it deletes the blobs written
        // past the tear, and the tear is the diagnosis to give.
        let blob_list = dir.join(BLOB_LIST);
        let listed = check_blobs(&path, &blob_list)?;
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None);
        // sled releases its file lock when its last background I/O for a
        // closed database finishes, which can trail the close by a moment
        // (a broker restarted in-process); a lock held longer is another
        // process using the directory.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(io(e)),
            }
        };
        if listed {
            remove_blob_list(&blob_list)?;
        }
        let identity = file_identity(&path.join("db"));
        let meta = db.open_tree("meta").map_err(io)?;
        let definitions = db.open_tree("definitions").map_err(io)?;
        let messages = db.open_tree("messages").map_err(io)?;
        Ok(SledBackend {
            db,
            meta,
            definitions,
            messages,
            path,
            blob_list,
            identity,
        })
    }

    fn io(&self, e: sled::Error) -> StoreError {
        describe(e, &self.path)
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::Meta => &self.meta,
            Tree::Definitions => &self.definitions,
            Tree::Messages => &self.messages,
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(|e| self.io(e))?
            .map(|v| v.to_vec()))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.tree(tree).insert(key, value).map_err(|e| self.io(e))?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> StoreResult<()> {
        self.tree(tree).remove(key).map_err(|e| self.io(e))?;
        Ok(())
    }

    fn replace_if(&self, tree: Tree, key: &[u8], old: &[u8], new: &[u8]) -> StoreResult<bool> {
        Ok(self
            .tree(tree)
            .compare_and_swap(key, Some(old), Some(new))
            .map_err(|e| self.io(e))?
            .is_ok())
    }

    fn take(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)
            .remove(key)
            .map_err(|e| self.io(e))?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)
            .range(from..to)
            .take(limit)
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.io(e))
            })
            .collect()
    }

    fn last_key(&self, tree: Tree, from: &[u8], to: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.tree(tree).range(from..to).next_back() {
            Some(kv) => Ok(Some(kv.map_err(|e| self.io(e))?.0.to_vec())),
            None => Ok(None),
        }
    }

    fn flush(&self) -> StoreResult<()> {
        // A flush is a promise that the writes survive a restart: not if
        // they go to a file that was removed.
        self.check()?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    fn check(&self) -> StoreResult<()> {
        let db = self.path.join("db");
        match (self.identity, file_identity(&db)) {
            (Some(opened), Some(now)) if opened == now => Ok(()),
            (None, _) => Ok(()),
            _ => Err(StoreError::Io(format!(
                "{} was removed or replaced while Warren was running: nothing written from \
                 now on would survive a restart; restore the data directory and restart Warren",
                db.display()
            ))),
        }
    }

    fn seal(&self) -> StoreResult<()> {
        let blobs = list_blobs(&self.path).map_err(|e| {
            StoreError::Io(format!("cannot list {}/blobs: {e}", self.path.display()))
        })?;
        let text: String = blobs
            .iter()
            .map(|(n, len)| format!("{n} {len}\n"))
            .collect();
        write_synced(&self.blob_list, text.as_bytes())
            .map_err(|e| StoreError::Io(format!("cannot write {}: {e}", self.blob_list.display())))
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// sled's blob files: (name, length), by name.
fn list_blobs(sled_path: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let dir = match std::fs::read_dir(sled_path.join("blobs")) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.metadata()?.len(),
        ));
    }
    out.sort();
    Ok(out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// After a clean shutdown, every blob it listed must still be there, whole.
/// The list is removed once sled has opened (it says nothing once sled
/// writes again), so only the open that follows a clean shutdown checks; a
/// store that fails the check keeps its list, and is refused again on the
/// next try. Without sled's files there is nothing to compare: the epoch
/// check (`epoch.rs`) reports that. True if there was a list.
fn check_blobs(sled_path: &Path, list: &Path) -> StoreResult<bool> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            tracing::warn!(
                "cannot read {}: {e}; sled's blobs are not checked",
                list.display()
            );
            return Ok(false);
        }
    };
    if !sled_path.join("db").exists() {
        return Ok(true);
    }
    let present: std::collections::HashMap<String, u64> = list_blobs(sled_path)
        .map_err(|e| StoreError::Io(format!("cannot list {}/blobs: {e}", sled_path.display())))?
        .into_iter()
        .collect();
    for line in text.lines() {
        let Some((name, len)) = line.split_once(' ') else {
            continue;
        };
        let expected = len.parse::<u64>().ok();
        let found = present.get(name).copied();
        if found.is_none() || found != expected {
            let what = if found.is_none() {
                "is missing"
            } else {
                "changed size"
            };
            return Err(StoreError::Damaged(format!(
                "sled's blob {}/blobs/{name} {what} since the last clean shutdown (listed in {}): \
                 the values it held are lost. Restore the data directory from a backup, or \
                 remove {} to start with what is left",
                sled_path.display(),
                list.display(),
                list.display()
            )));
        }
    }
    Ok(true)
}

fn remove_blob_list(list: &Path) -> StoreResult<()> {
    std::fs::remove_file(list).map_err(|e| match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
            StoreError::ReadOnly {
                path: list.display().to_string(),
                detail: e.to_string(),
            }
        }
        _ => StoreError::Io(format!("cannot remove {}: {e}", list.display())),
    })
}
