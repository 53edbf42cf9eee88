//! Races between the group-commit thread writing queue entries and the
//! queue's own changes to them, made deterministic with a backend that
//! stops inside a write or a scan until the test lets it go.

use std::sync::Arc;

use super::gated_backend::GatedBackend;
use super::records::fixtures::msg;
use super::{Slot, Store};

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
