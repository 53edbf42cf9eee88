use std::sync::Arc;

use super::super::records::fixtures::{keys, msg, slot};
use super::super::records::{encode_record, key};
use super::super::{Backend, MemoryBackend, Store, Tree};
use super::*;

fn arc(body: &str) -> Arc<Message> {
    Arc::new(msg(body))
}

fn seqs(page: &[Recovered]) -> Vec<u64> {
    page.iter().map(|r| r.seq).collect()
}

/// Wait for the background worker (purges, deletions) to finish.
fn settle(s: &Store) {
    while !s.cleanup_idle() {
        std::thread::yield_now();
    }
    s.flush_now().unwrap();
}

#[test]
fn entries_and_paged_messages_merge_in_order_with_their_delivery_states() {
    let s = Store::in_memory_for_tests();
    let uid = s.new_queue_uid();
    assert_eq!(s.put_entry(slot(uid, 1), 100, &arc("one")), Stored::Entry);
    assert_eq!(s.page_out(slot(uid, 2), 200, &arc("two")), Stored::Paged);
    s.put_entry(slot(uid, 3), 300, &arc("three"));
    let returned = DeliveryState {
        failed: 2,
        returned: 1,
        not_before_ms: 999,
    };
    s.set_delivery(slot(uid, 1), returned);
    // Readable before anything is written, and the same after.
    for flushed in [false, true] {
        if flushed {
            s.flush_now().unwrap();
        }
        let got = s.page_in(uid, 0, 0, 10).unwrap();
        type Summary<'a> = (u64, &'a [u8], u64, Option<DeliveryState>, Stored);
        let summary: Vec<Summary> = got
            .iter()
            .map(|r| {
                (
                    r.seq,
                    &r.message.body[..],
                    r.expires_at_ms,
                    r.delivery,
                    r.stored,
                )
            })
            .collect();
        let paged = if flushed {
            vec![]
        } else {
            vec![(2, &b"two"[..], 200, None, Stored::No)]
        };
        let mut expected = vec![(1, &b"one"[..], 100, Some(returned), Stored::Entry)];
        expected.extend(paged);
        expected.push((3, b"three", 300, None, Stored::Entry));
        assert_eq!(summary, expected, "flushed: {flushed}");
    }
    assert_eq!(s.entry_bounds(uid, 0).unwrap(), Some((1, 3)));
    assert_eq!(s.count_entries(uid, 0, 0).unwrap(), 2);
    let taken = s.take_stored(slot(uid, 3), true, false).unwrap().unwrap();
    assert_eq!((taken.bytes, taken.durable), (5, true));
    assert_eq!(&taken.message.unwrap().body[..], b"three");
    assert!(s.take_stored(slot(uid, 3), true, false).unwrap().is_none());
    s.remove(slot(uid, 1), Stored::Entry, true).unwrap();
    s.flush_now().unwrap();
    assert!(s.page_in(uid, 0, 0, 10).unwrap().is_empty());
    assert!(keys(&s).is_empty(), "{:?}", keys(&s));
}

#[test]
fn an_entry_removed_before_the_commit_is_never_written() {
    let s = Store::in_memory_for_tests();
    let uid = s.new_queue_uid();
    s.put_entry(slot(uid, 1), 0, &arc("acked at once"));
    s.remove(slot(uid, 1), Stored::Entry, false).unwrap();
    s.flush_now().unwrap();
    assert!(keys(&s).is_empty());
}

#[test]
fn durable_entries_are_written_in_batches_and_removals_survive_a_clean_restart() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let s = Store::over(backend.clone()).unwrap();
    let uid = s.new_queue_uid();
    let body = "x".repeat(1000);
    for seq in 0..100 {
        s.put_entry(slot(uid, seq), 0, &arc(&body));
    }
    s.flush_now().unwrap();
    let batches = keys(&s).iter().filter(|k| k[0] == b'b').count();
    assert!((3..=5).contains(&batches), "{batches} batches for 100 KiB");
    for seq in (0..100).filter(|s| s % 2 == 0) {
        s.remove(slot(uid, seq), Stored::Entry, false).unwrap();
    }
    s.close().unwrap();
    drop(s);
    let s = Store::over(backend.clone()).unwrap();
    let left = s.page_in(uid, 0, 0, 1000).unwrap();
    assert_eq!(seqs(&left), (1..100).step_by(2).collect::<Vec<_>>());
    assert_eq!(s.count_entries(uid, 0, 0).unwrap(), 50);
    for seq in (1..100).step_by(2) {
        s.remove(slot(uid, seq), Stored::Entry, false).unwrap();
    }
    s.flush_now().unwrap();
    assert!(keys(&s).is_empty(), "{:?}", keys(&s));
}

#[test]
fn paged_messages_are_written_in_batches_and_leave_nothing_once_read() {
    let s = Store::in_memory_for_tests();
    let uid = s.new_queue_uid();
    let body = "x".repeat(1000);
    for seq in 0..101 {
        if seq == 50 {
            s.put_entry(slot(uid, seq), 0, &arc("durable"));
        } else {
            s.page_out(slot(uid, seq), seq, &arc(&body));
        }
    }
    s.flush_now().unwrap();
    let paged = keys(&s)
        .iter()
        .filter(|k| k[0] == s.unwritten.paged.kind)
        .count();
    assert!((3..=5).contains(&paged), "{paged} batches");
    let mut read = Vec::new();
    let mut from = 0;
    loop {
        let page = s.page_in(uid, 0, from, 7).unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for r in &page {
            assert_eq!(r.expires_at_ms, if r.seq == 50 { 0 } else { r.seq });
            assert_eq!(r.stored == Stored::Entry, r.seq == 50);
        }
        read.extend(seqs(&page));
    }
    assert_eq!(read, (0..101).collect::<Vec<_>>());
    s.flush_now().unwrap();
    let left: Vec<u8> = keys(&s).iter().map(|k| k[0]).collect();
    assert_eq!(left, vec![b'b'], "only the durable entry's batch is left");
}

#[test]
fn a_purge_is_durable_once_flushed_and_cleared_in_the_background() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let s = Store::over(backend.clone()).unwrap();
    let uid = s.new_queue_uid();
    for seq in 0..60 {
        s.put_entry(slot(uid, seq), 0, &arc(&"p".repeat(900)));
    }
    s.flush_now().unwrap();
    // Entries below 10 are with a consumer; the purge takes the rest.
    s.purge_range(uid, 0, 10, 60).unwrap();
    assert_eq!(
        seqs(&s.page_in(uid, 0, 0, 100).unwrap()),
        (0..10).collect::<Vec<_>>()
    );
    s.flush_now().unwrap();
    // A crash now (no clean shutdown, cleanup maybe unfinished) brings back
    // only what was not purged.
    drop(s);
    let s = Store::over(backend.clone()).unwrap();
    assert_eq!(
        seqs(&s.page_in(uid, 0, 0, 100).unwrap()),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(s.count_entries(uid, 0, 0).unwrap(), 10);
    s.resume_purges(uid, 0).unwrap();
    for seq in 0..10 {
        s.remove(slot(uid, seq), Stored::Entry, false).unwrap();
    }
    settle(&s);
    s.flush_now().unwrap();
    assert!(keys(&s).is_empty(), "{:?}", keys(&s));
}

#[test]
fn format_2_entries_are_read_and_removed() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    backend.insert(Tree::Meta, b"format", b"2").unwrap();
    let mut value = 77u64.to_be_bytes().to_vec();
    value.push(0);
    encode_record(&msg("old"), &mut value);
    backend
        .insert(Tree::Messages, &key(b'q', slot(5, 3)), &value)
        .unwrap();
    let s = Store::over(backend.clone()).unwrap();
    assert_eq!(
        backend.get(Tree::Meta, b"format").unwrap().unwrap(),
        crate::store::FORMAT_VERSION.to_string().as_bytes()
    );
    let page = s.page_in(5, 0, 0, 10).unwrap();
    assert_eq!(seqs(&page), vec![3]);
    assert_eq!((page[0].expires_at_ms, page[0].stored), (77, Stored::Entry));
    assert_eq!(s.entry_bounds(5, 0).unwrap(), Some((3, 3)));
    s.remove(slot(5, 3), Stored::Entry, false).unwrap();
    assert!(s.page_in(5, 0, 0, 10).unwrap().is_empty());
}
