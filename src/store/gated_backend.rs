//! A memory backend that stops inside a write or a scan until the test
//! lets it go: races with the group-commit thread made deterministic.

use std::sync::mpsc::{Receiver, Sender, channel};

use parking_lot::Mutex;

use super::{Backend, MemoryBackend, StoreResult, Tree};

/// A memory backend whose next insert into the messages tree (or, once
/// armed for it, whose next scan of it, after reading) stops until
/// released.
#[derive(Debug, Default)]
pub struct GatedBackend {
    inner: MemoryBackend,
    gate: Mutex<Option<Inside>>,
    scan_gate: Mutex<Option<Inside>>,
}

/// The backend's side of a gate (tell it entered, wait to be released)
/// and the test's (learn it entered, release it).
type Inside = (Sender<()>, Receiver<()>);
pub type Outside = (Receiver<()>, Sender<()>);

fn gate() -> (Inside, Outside) {
    let (entered_tx, entered_rx) = channel();
    let (release_tx, release_rx) = channel();
    ((entered_tx, release_rx), (entered_rx, release_tx))
}

fn pass(gate: &Mutex<Option<Inside>>) {
    let armed = gate.lock().take();
    if let Some((entered, release)) = armed {
        let _ = entered.send(());
        let _ = release.recv();
    }
}

impl GatedBackend {
    /// Arm the insert gate: returns (entered, release).
    pub fn arm(&self) -> Outside {
        let (inside, outside) = gate();
        *self.gate.lock() = Some(inside);
        outside
    }

    /// Arm the scan gate: returns (entered, release).
    pub fn arm_scan(&self) -> Outside {
        let (inside, outside) = gate();
        *self.scan_gate.lock() = Some(inside);
        outside
    }
}

impl Backend for GatedBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get(tree, key)
    }
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> StoreResult<()> {
        if tree == Tree::Messages {
            pass(&self.gate);
        }
        self.inner.insert(tree, key, value)
    }
    fn remove(&self, tree: Tree, key: &[u8]) -> StoreResult<()> {
        self.inner.remove(tree, key)
    }
    fn take(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.take(tree, key)
    }
    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let read = self.inner.scan(tree, from, to, limit);
        if tree == Tree::Messages {
            pass(&self.scan_gate);
        }
        read
    }
    fn last_key(&self, tree: Tree, from: &[u8], to: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.last_key(tree, from, to)
    }
    fn flush(&self) -> StoreResult<()> {
        self.inner.flush()
    }
}
