//! An in-memory backend: ordered maps behind a lock. Used by `--ephemeral`
//! brokers (which then store nothing at all) and by tests that exercise the
//! store's logic without a disk.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use super::{Backend, StoreResult, Tree};

type Keyspace = BTreeMap<Vec<u8>, Vec<u8>>;

/// Ordered maps in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    trees: Mutex<HashMap<Tree, Keyspace>>,
}

impl Backend for MemoryBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .trees
            .lock()
            .get(&tree)
            .and_then(|t| t.get(key).cloned()))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.trees
            .lock()
            .entry(tree)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> StoreResult<()> {
        if let Some(t) = self.trees.lock().get_mut(&tree) {
            t.remove(key);
        }
        Ok(())
    }

    fn replace_if(&self, tree: Tree, key: &[u8], old: &[u8], new: &[u8]) -> StoreResult<bool> {
        let mut trees = self.trees.lock();
        match trees.get_mut(&tree).and_then(|t| t.get_mut(key)) {
            Some(v) if v.as_slice() == old => {
                *v = new.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn take(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.trees.lock().get_mut(&tree).and_then(|t| t.remove(key)))
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .trees
            .lock()
            .get(&tree)
            .map(|t| {
                t.range(from.to_vec()..to.to_vec())
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn last_key(&self, tree: Tree, from: &[u8], to: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if from >= to {
            return Ok(None);
        }
        Ok(self.trees.lock().get(&tree).and_then(|t| {
            t.range(from.to_vec()..to.to_vec())
                .next_back()
                .map(|(k, _)| k.clone())
        }))
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}
