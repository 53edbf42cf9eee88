use std::collections::HashSet;
use std::sync::Arc;

use super::super::records::Slot;
use super::super::records::fixtures::{keys, msg, slot};
use super::super::{Backend, MemoryBackend, Store};

fn settle(s: &Store) {
    while !s.cleanup_idle() {
        std::thread::yield_now();
    }
    s.flush_now().unwrap();
}

#[test]
fn levels_are_separate_ranges() {
    let s = Store::in_memory_for_tests();
    let uid = s.new_queue_uid();
    for (level, seq) in [(0u8, 1u64), (5, 2), (0, 3), (255, 4)] {
        s.put_entry(Slot { uid, level, seq }, 0, &Arc::new(msg("x")));
    }
    s.flush_now().unwrap();
    let seqs = |level| -> Vec<u64> {
        s.page_in(uid, level, 0, 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(seqs(0), vec![1, 3]);
    assert_eq!(seqs(5), vec![2]);
    assert_eq!(seqs(255), vec![4]);
    assert_eq!(s.entry_bounds(uid, 255).unwrap(), Some((4, 4)));
    s.drop_queue(uid);
    settle(&s);
    assert!(keys(&s).is_empty());
}

#[test]
fn each_run_pages_under_the_kind_the_last_one_did_not_use_and_clears_the_other() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let first = Store::over(backend.clone()).unwrap();
    let uid = first.new_queue_uid();
    for seq in 0..100 {
        first.page_out(slot(uid, seq), 0, &Arc::new(msg(&"a".repeat(1000))));
    }
    first.flush_now().unwrap();
    let left = keys(&first);
    assert!(!left.is_empty());
    let kind = first.unwritten.paged.kind;
    assert!(left.iter().all(|k| k[0] == kind));
    first.close().unwrap();
    drop(first);

    let second = Store::over(backend).unwrap();
    assert_ne!(second.unwritten.paged.kind, kind);
    second.page_out(slot(uid, 0), 0, &Arc::new(msg("new")));
    second.flush_now().unwrap();
    second.sweep(HashSet::new());
    settle(&second);
    assert_eq!(
        &second.page_in(uid, 0, 0, 10).unwrap()[0].message.body[..],
        b"new"
    );
}

#[test]
fn keys_of_queues_that_no_longer_exist_are_swept_at_boot() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let first = Store::over(backend.clone()).unwrap();
    let (kept, gone) = (first.new_queue_uid(), first.new_queue_uid());
    for uid in [kept, gone] {
        first.put_entry(slot(uid, 1), 0, &Arc::new(msg("m")));
    }
    first.flush_now().unwrap();
    drop(first);
    let second = Store::over(backend).unwrap();
    let new = second.new_queue_uid();
    second.put_entry(slot(new, 1), 0, &Arc::new(msg("this run's")));
    second.flush_now().unwrap();
    second.sweep(HashSet::from([kept]));
    settle(&second);
    assert_eq!(second.page_in(kept, 0, 0, 10).unwrap().len(), 1);
    assert!(second.page_in(gone, 0, 0, 10).unwrap().is_empty());
    assert_eq!(second.page_in(new, 0, 0, 10).unwrap().len(), 1);
}
