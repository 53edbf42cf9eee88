//! The interface the store keeps its records through: an ordered
//! key-value store with three trees (sled on disk, maps in memory, and
//! the sealing layer of an encrypted store over either).

use std::fmt;

use super::StoreResult;

/// The backend's separate keyspaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Format version and boot bookkeeping.
    Meta,
    /// Vhosts, users, permissions, exchanges, queues, bindings.
    Definitions,
    /// Queue entries, shared message bodies, delivery markers, paged-out
    /// transient messages.
    Messages,
}

/// An ordered key-value store with three trees. Ranges are half-open
/// (`from..to`) in byte order.
pub trait Backend: Send + Sync + fmt::Debug {
    fn get(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> StoreResult<()>;
    fn remove(&self, tree: Tree, key: &[u8]) -> StoreResult<()>;
    /// Remove a key, returning what it held.
    fn take(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// Up to `limit` entries with `from <= key < to`, in key order.
    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The greatest key with `from <= key < to`.
    fn last_key(&self, tree: Tree, from: &[u8], to: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// Replace `key`'s value with `new` only if it is still `old` (an
    /// atomic compare-and-swap); false if it changed or went. Backends
    /// that cannot never replace.
    fn replace_if(&self, _tree: Tree, _key: &[u8], _old: &[u8], _new: &[u8]) -> StoreResult<bool> {
        Ok(false)
    }
    /// Make every write so far durable.
    fn flush(&self) -> StoreResult<()>;
    /// The last flush of a clean shutdown is done: note what the next
    /// open should check.
    fn seal(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Whether the files are still where they were opened (an error once
    /// they were removed or replaced: what is written would be lost).
    fn check(&self) -> StoreResult<()> {
        Ok(())
    }
}
