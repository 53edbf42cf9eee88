//! Races between the group-commit thread writing queue entries and the
//! queue's own changes to them, made deterministic with a backend that
//! stops inside a write until the test lets it go.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use parking_lot::Mutex;

use super::records::fixtures::msg;
use super::{Backend, MemoryBackend, Slot, Store, StoreResult, Tree};

/// A memory backend whose next insert into the messages tree (or, once
/// armed for it, whose next scan of it, after reading) stops until
/// released.
#[derive(Debug, Default)]
struct GatedBackend {
    inner: MemoryBackend,
    gate: Mutex<Option<Inside>>,
    scan_gate: Mutex<Option<Inside>>,
}

/// The backend's side of a gate (tell it entered, wait to be released)
/// and the test's (learn it entered, release it).
type Inside = (Sender<()>, Receiver<()>);
type Outside = (Receiver<()>, Sender<()>);

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
    fn arm(&self) -> Outside {
        let (inside, outside) = gate();
        *self.gate.lock() = Some(inside);
        outside
    }

    /// Arm the scan gate: returns (entered, release).
    fn arm_scan(&self) -> Outside {
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

fn slot(uid: u64, seq: u64) -> Slot {
    Slot { uid, level: 0, seq }
}

/// An entry acknowledged while the group commit is writing it must not be
/// left in the store: it would come back after a restart (and, with a
/// shared body, point at a body already deleted).
#[test]
fn an_ack_during_the_group_commit_write_is_not_undone() {
    let backend = Arc::new(GatedBackend::default());
    let store = Arc::new(Store::over(backend.clone()).unwrap());
    let uid = store.new_queue_uid();
    let m = Arc::new(msg("acked while being written"));
    let stored = store.put_entry(slot(uid, 1), 0, &m);
    let (entered, release) = backend.arm();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.flush_now().unwrap())
    };
    entered.recv().unwrap();
    // The consumer acks while the entry is being written.
    store.remove(slot(uid, 1), stored, false).unwrap();
    release.send(()).unwrap();
    writer.join().unwrap();
    let left = store.page_in(uid, 0, 0, 10).unwrap();
    assert!(
        left.is_empty(),
        "the acknowledged message is back: {:?}",
        left.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    // The next commit deletes what is left of the batch.
    store.flush_now().unwrap();
    assert_eq!(store.entry_bounds(uid, 0).unwrap(), None);
}

/// The same for a message fanned out to two durable queues, both acking
/// during the write: both queues must be empty and readable afterwards.
#[test]
fn a_shared_body_acked_during_the_write_leaves_no_dangling_entry() {
    let backend = Arc::new(GatedBackend::default());
    let store = Arc::new(Store::over(backend.clone()).unwrap());
    let (a, b) = (store.new_queue_uid(), store.new_queue_uid());
    let m = Arc::new(msg("fanned out"));
    let sa = store.put_entry(slot(a, 1), 0, &m);
    let sb = store.put_entry(slot(b, 1), 0, &m);
    let (entered, release) = backend.arm();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.flush_now().unwrap())
    };
    entered.recv().unwrap();
    store.remove(slot(a, 1), sa, false).unwrap();
    store.remove(slot(b, 1), sb, false).unwrap();
    release.send(()).unwrap();
    writer.join().unwrap();
    for uid in [a, b] {
        let page = store.page_in(uid, 0, 0, 10);
        assert!(
            matches!(&page, Ok(p) if p.is_empty()),
            "queue {uid} after the race: {:?}",
            page.map(|p| p.len())
        );
    }
}

/// A page read while the group commit moves the entries it is after from
/// memory to the backend must still see every one: a short page is taken
/// for the end of the queue's stored messages, and the rest of its stored
/// region would be lost (seen as a block of a paging queue's messages
/// vanishing under load).
#[test]
fn a_page_read_during_the_group_commit_write_sees_every_entry() {
    let backend = Arc::new(GatedBackend::default());
    let store = Arc::new(Store::over(backend.clone()).unwrap());
    let uid = store.new_queue_uid();
    for seq in 1..=3 {
        store.put_entry(slot(uid, seq), 0, &Arc::new(msg("paged")));
    }
    let (entered, release) = backend.arm_scan();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || store.page_in(uid, 0, 0, 10))
    };
    // The reader has found nothing written yet; the commit now writes the
    // entries and lets go of them in memory, before the reader looks there.
    entered.recv().unwrap();
    store.flush_now().unwrap();
    release.send(()).unwrap();
    let page = reader.join().unwrap().unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
}
