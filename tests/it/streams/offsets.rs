//! Where a consumer starts, for every form of `x-stream-offset`, and the
//! `x-stream-offset` header every delivery carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::types::AMQPValue;

use super::*;
use crate::common::{connect, start};

type Check = (&'static str, Reader, Vec<u64>);

/// A consumer for each (name, `x-stream-offset`, offsets it should have).
async fn open_all(
    conn: &Connection,
    q: &str,
    specs: Vec<(&'static str, Option<AMQPValue>, Vec<u64>)>,
) -> Vec<Check> {
    let mut readers = Vec::new();
    for (name, spec, want) in specs {
        readers.push((name, Reader::open(conn, q, spec, 100, "", &[]).await, want));
    }
    readers
}

/// Each consumer has exactly the offsets it should (then nothing more
/// for a while), each body naming its offset: all checked at once.
async fn check_all(readers: Vec<Check>) -> Vec<Check> {
    let checks: Vec<_> = readers
        .into_iter()
        .map(|(name, mut r, want)| {
            let task = tokio::spawn(async move {
                let missing = want.len().saturating_sub(r.got.len());
                r.take(missing).await;
                assert!(quiet(&mut r.consumer).await, "{name}: more than {want:?}");
                assert_eq!(r.offsets(), want, "{name}");
                for d in &r.got {
                    let body = String::from_utf8_lossy(&d.data);
                    assert_eq!(body, format!("m{}", offset(d)), "{name}: body vs offset");
                    assert!(!d.redelivered, "{name}");
                }
                (name, r, want)
            });
            (name, task)
        })
        .collect();
    let mut out = Vec::new();
    for (name, c) in checks {
        out.push(c.await.unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    out
}

#[tokio::test]
async fn every_offset_spec_starts_where_it_says() {
    let server = start().await;
    let conn = connect(&server).await;
    let q = "spec";
    declare_stream(&conn.create_channel().await.unwrap(), q, &[]).await;
    let publisher = confirming(&conn).await;
    // Ten messages, one chunk each ("last" is then the last message).
    publish_range(&publisher, q, 0..10).await;
    let all: Vec<u64> = (0..10).collect();
    let long = |n| Some(AMQPValue::LongLongInt(n));
    let at = |secs| Some(AMQPValue::Timestamp(secs));
    let specs = vec![
        ("first", Some(text("first")), all.clone()),
        ("default (next)", None, vec![]),
        ("next", Some(text("next")), vec![]),
        ("last", Some(text("last")), vec![9]),
        ("long 5", long(5), (5..10).collect()),
        ("long 10 (the end)", long(10), vec![]),
        ("long 12 (beyond)", long(12), vec![]),
        ("long -1 (first)", long(-1), all.clone()),
        ("short 3", Some(AMQPValue::ShortInt(3)), (3..10).collect()),
        (
            "byte 7",
            Some(AMQPValue::ShortShortUInt(7)),
            (7..10).collect(),
        ),
        ("int 0", Some(AMQPValue::LongInt(0)), all.clone()),
        // 2000-01-01 and 2100-01-01, in seconds.
        ("timestamp past", at(946_684_800), all.clone()),
        ("timestamp future", at(4_102_444_800), vec![]),
        ("1h", Some(text("1h")), all.clone()),
        ("30m", Some(text("30m")), all.clone()),
        ("10s", Some(text("10s")), all.clone()),
    ];
    let readers = check_all(open_all(&conn, q, specs).await).await;

    // Four more: every consumer gets them after what it had (the one
    // beyond the end from offset 12 only).
    publish_range(&publisher, q, 10..14).await;
    let readers = readers
        .into_iter()
        .map(|(name, r, mut want)| {
            let from = if name.starts_with("long 12") { 12 } else { 10 };
            want.extend(from..14);
            (name, r, want)
        })
        .collect();
    check_all(readers).await;
}

/// An AMQP timestamp (whole seconds) starts at the first message stored
/// at or after it; an older one from the start.
#[tokio::test]
async fn a_timestamp_starts_at_the_first_message_stored_since() {
    let server = start().await;
    let conn = connect(&server).await;
    let q = "since";
    declare_stream(&conn.create_channel().await.unwrap(), q, &[]).await;
    let publisher = confirming(&conn).await;
    publish_range(&publisher, q, 0..5).await;
    // The next whole second: every message so far was stored before it.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let cut = now.as_secs() + 1;
    tokio::time::sleep(Duration::from_secs(cut) - now + Duration::from_millis(5)).await;
    publish_range(&publisher, q, 5..10).await;
    let at = |secs| Some(AMQPValue::Timestamp(secs));
    let specs = vec![
        ("at the cut", at(cut), (5..10).collect()),
        ("a minute before", at(cut - 60), (0..10).collect()),
        ("after the cut", at(cut + 60), vec![]),
    ];
    check_all(open_all(&conn, q, specs).await).await;
}
