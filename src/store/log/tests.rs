//! The log on real files: appends become readable only once synced, segments
//! roll and are dropped whole, a torn tail is cut at open, offsets are found
//! by time, filters are exact, tracked offsets survive a reopen.

use std::sync::Arc;

use bytes::Bytes;

use super::{Cursor, Entry, Filter, Log, Retention, offset_at};
use crate::message::Message;
use crate::store::Backend;
use crate::store::memory_backend::MemoryBackend;

fn message(body: &str) -> Arc<Message> {
    let mut m = Message::empty();
    m.exchange = "ex".into();
    m.routing_key = "rk".into();
    m.body = Bytes::from(body.to_string());
    Arc::new(m)
}

fn open(dir: &std::path::Path, backend: &dyn Backend) -> Arc<Log> {
    Arc::new(Log::open(1, dir.join("log"), 1 << 20, backend, None).unwrap())
}

fn put(log: &Log, ts: u64, body: &str, filter: Option<&'static str>) -> u64 {
    log.append(ts, |_, _| Entry {
        message: message(body),
        filter: filter.map(|f| Bytes::from_static(f.as_bytes())),
    })
}

fn bodies(c: &mut Cursor) -> Vec<String> {
    c.read(1000)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.message.body).into_owned())
        .collect()
}

#[test]
fn appends_are_read_once_synced_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    for i in 0..5 {
        assert_eq!(put(&log, 1000 + i, &format!("m{i}"), None), i);
    }
    let mut c = Cursor::new(log.clone(), 0, None);
    assert!(
        bodies(&mut c).is_empty(),
        "nothing is readable before the sync"
    );
    log.sync(&backend).unwrap();
    assert_eq!(bodies(&mut c), ["m0", "m1", "m2", "m3", "m4"]);
    drop(log);
    // Reopened: the same records, from the segment file this time.
    let log = open(dir.path(), &backend);
    assert_eq!(log.next_offset(), 5);
    let mut c = Cursor::new(log.clone(), 2, None);
    assert_eq!(bodies(&mut c), ["m2", "m3", "m4"]);
    assert_eq!(offset_at(&log, 1003), 0, "chunk granularity");
}

#[test]
fn segments_roll_and_retention_drops_whole_ones() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    log.set_retention(Retention {
        max_bytes: Some(20_000),
        max_age_ms: None,
        max_segment_bytes: 8_000,
    });
    let big = "x".repeat(1000);
    for i in 0..100 {
        put(&log, i, &big, None);
        if i % 10 == 9 {
            log.sync(&backend).unwrap();
        }
    }
    let (bytes, segments) = log.size();
    assert!(bytes <= 20_000 + 8_000, "{bytes}");
    assert!(segments >= 2);
    let first = log.first_offset();
    assert!(first > 0 && first < 100);
    // A cursor behind the head starts at the first record kept.
    let mut c = Cursor::new(log.clone(), 0, None);
    let got = c.read(1000).unwrap();
    assert_eq!(got.first().map(|r| r.offset), Some(first));
    assert_eq!(got.last().map(|r| r.offset), Some(99));
}

#[test]
fn an_idle_log_past_its_age_empties_on_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    log.set_retention(Retention {
        max_bytes: None,
        max_age_ms: Some(1_000),
        ..Retention::default()
    });
    put(&log, 10_000, "old", None);
    log.sync(&backend).unwrap();
    assert_eq!(log.apply_retention(10_500), 0);
    assert_eq!(log.apply_retention(20_000), 1);
    assert_eq!(log.first_offset(), 1);
    assert_eq!(log.next_offset(), 1, "offsets go on from where they were");
    put(&log, 20_001, "new", None);
    log.sync(&backend).unwrap();
    let mut c = Cursor::new(log.clone(), 0, None);
    assert_eq!(bodies(&mut c), ["new"]);
}

#[test]
fn a_torn_tail_is_cut_at_open_and_nothing_torn_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    for i in 0..3 {
        put(&log, i, &format!("m{i}"), None);
    }
    log.sync(&backend).unwrap();
    drop(log);
    let seg = dir.path().join("log").join(format!("{:020}.seg", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    // Half of a fourth record, as a crash mid-write leaves it; and a
    // garbled index.
    let mut bytes = std::fs::read(&seg).unwrap();
    let head = bytes[..20].to_vec();
    bytes.extend_from_slice(&head);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(
        dir.path().join("log").join(format!("{:020}.idx", 0)),
        b"junk",
    )
    .unwrap();
    let log = open(dir.path(), &backend);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(log.next_offset(), 3);
    let mut c = Cursor::new(log.clone(), 0, None);
    assert_eq!(bodies(&mut c), ["m0", "m1", "m2"]);
}

/// The index is written after the records are synced and not synced
/// itself: a crash can leave it short, never ahead; what it lacks is
/// rebuilt from the records at open.
#[test]
fn a_short_index_is_rebuilt_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    for i in 0..5 {
        put(&log, 1000 + i, &format!("m{i}"), None);
        log.sync(&backend).unwrap();
    }
    drop(log);
    let idx = dir.path().join("log").join(format!("{:020}.idx", 0));
    let full = std::fs::read(&idx).unwrap();
    // Two of five entries made it, the third only in part.
    std::fs::write(&idx, &full[..full.len() * 2 / 5 + 7]).unwrap();
    let log = open(dir.path(), &backend);
    assert_eq!(log.next_offset(), 5);
    let mut c = Cursor::new(log.clone(), 3, None);
    assert_eq!(bodies(&mut c), ["m3", "m4"]);
    // Time lookups still work, at the rebuilt chunk's granularity (the
    // records scanned at open form one chunk: m2..m4).
    assert_eq!(offset_at(&log, 1001), 1);
    assert_eq!(offset_at(&log, 1004), 2);
    // The rebuilt index is whole again on disk.
    assert!(std::fs::read(&idx).unwrap().len() >= full.len() * 2 / 5);
}

#[test]
fn filters_are_exact_and_skip_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    for i in 0..30 {
        let f = match i % 3 {
            0 => Some("eu"),
            1 => Some("us"),
            _ => None,
        };
        put(&log, i, &format!("m{i}"), f);
    }
    log.sync(&backend).unwrap();
    let eu = Filter::new(vec![Bytes::from_static(b"eu")], false);
    let mut c = Cursor::new(log.clone(), 0, Some(eu.clone()));
    let got = bodies(&mut c);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|b| b[1..].parse::<u32>().unwrap() % 3 == 0));
    let with_plain = Filter::new(vec![Bytes::from_static(b"eu")], true);
    let mut c = Cursor::new(log.clone(), 0, Some(with_plain));
    assert_eq!(bodies(&mut c).len(), 20);
    drop(log);
    // From disk too.
    let log = open(dir.path(), &backend);
    let mut c = Cursor::new(log, 0, Some(eu));
    assert_eq!(bodies(&mut c).len(), 10);
}

#[test]
fn tracked_offsets_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    put(&log, 1, "a", None);
    log.track("consumer-1", 41);
    log.sync(&backend).unwrap();
    drop(log);
    let log = open(dir.path(), &backend);
    assert_eq!(log.tracked("consumer-1"), Some(41));
    assert_eq!(log.tracked("other"), None);
}

#[test]
fn erased_records_are_gone_from_memory_disk_and_a_reopened_log() {
    let dir = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let log = open(dir.path(), &backend);
    for i in 0..6 {
        let body = if i % 2 == 0 { "secret-4711" } else { "kept" };
        put(&log, 1000 + i, &format!("{body}-{i}"), None);
    }
    log.sync(&backend).unwrap();
    let secret = |m: &Message| m.body.starts_with(b"secret-4711");
    assert_eq!(log.erase(&secret).unwrap(), [0, 2, 4]);
    assert_eq!(log.erase(&secret).unwrap(), Vec::<u64>::new(), "idempotent");
    // From the in-memory tail and from the segment.
    assert_eq!(
        bodies(&mut Cursor::new(log.clone(), 0, None)),
        ["kept-1", "kept-3", "kept-5"]
    );
    drop(log);
    let files = std::fs::read_dir(dir.path().join("log")).unwrap();
    for f in files {
        let raw = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"secret-4711"));
    }
    let log = open(dir.path(), &backend);
    assert_eq!(log.next_offset(), 6, "offsets stay taken");
    assert_eq!(
        bodies(&mut Cursor::new(log.clone(), 0, None)),
        ["kept-1", "kept-3", "kept-5"]
    );
    put(&log, 2000, "after", None);
    log.sync(&backend).unwrap();
    assert_eq!(bodies(&mut Cursor::new(log, 5, None)), ["kept-5", "after"]);
}
