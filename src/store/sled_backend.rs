//! The sled backend: the only code in Warren that imports sled.
//!
//! sled (pinned at 0.34.7) applies writes to its in-memory page cache and
//! makes them durable on `flush`; its automatic periodic flush is turned off
//! so that Warren's group commit decides when data is durable. Individual
//! inserts are used rather than `apply_batch`, which flushes far more slowly
//! in 0.34.

use std::path::Path;

use super::{Backend, StoreError, StoreOptions, StoreResult, Tree};

#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
    meta: sled::Tree,
    definitions: sled::Tree,
    messages: sled::Tree,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledBackend {
    pub fn open(dir: &Path, options: &StoreOptions) -> StoreResult<SledBackend> {
        let config = sled::Config::new()
            .path(dir.join("warren.sled"))
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
        let meta = db.open_tree("meta").map_err(io)?;
        let definitions = db.open_tree("definitions").map_err(io)?;
        let messages = db.open_tree("messages").map_err(io)?;
        Ok(SledBackend {
            db,
            meta,
            definitions,
            messages,
        })
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
        Ok(self.tree(tree).get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.tree(tree).insert(key, value).map_err(io)?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> StoreResult<()> {
        self.tree(tree).remove(key).map_err(io)?;
        Ok(())
    }

    fn take(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.tree(tree).remove(key).map_err(io)?.map(|v| v.to_vec()))
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
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    fn last_key(&self, tree: Tree, from: &[u8], to: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.tree(tree).range(from..to).next_back() {
            Some(kv) => Ok(Some(kv.map_err(io)?.0.to_vec())),
            None => Ok(None),
        }
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush().map_err(io)?;
        Ok(())
    }
}
