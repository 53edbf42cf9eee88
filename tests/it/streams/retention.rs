//! Retention: whole segments dropped from the head by size when segments
//! roll, and by age on a timer, even on a stream nothing is published to.

use std::time::{Duration, Instant};

use lapin::types::AMQPValue;

use super::*;
use crate::common::{connect, depth, start};

/// x-max-length-bytes 30,000 over 10,000-byte segments, 1,000-byte
/// messages (records of the same size, so every segment holds the same
/// number n of them). After each confirmed publish the message count
/// (queue.declare passive) and where a consumer from "first" starts
/// agree, and the head only ever moves a whole segment at a time: it is
/// always a multiple of n, never part of a segment.
#[tokio::test]
async fn size_retention_drops_whole_segments_from_the_head() {
    let (size, segment, limit) = (1_000u64, 10_000i64, 30_000i64);
    let server = start().await;
    let conn = connect(&server).await;
    let q = "bysize";
    let retention = [
        ("x-max-length-bytes", AMQPValue::LongLongInt(limit)),
        (
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(segment),
        ),
    ];
    declare_stream(&conn.create_channel().await.unwrap(), q, &retention).await;
    let publisher = confirming(&conn).await;
    let body = |i: u64| {
        let mut b = format!("{i:05}").into_bytes();
        b.resize(size as usize, b'x');
        b
    };
    let total = 100;
    let mut firsts = Vec::new();
    for i in 0..total {
        publish(&publisher, q, &body(i), BasicProperties::default()).await;
        let count = u64::from(depth(&publisher, q).await);
        let first = i + 1 - count;
        let mut r = Reader::open(&conn, q, Some(text("first")), 1, "", &[])
            .await
            .manual();
        let d = &r.take(1).await[0];
        assert_eq!(
            offset(d),
            first,
            "after {i}: \"first\" vs the message count"
        );
        assert_eq!(d.data, body(first), "after {i}");
        r.close().await;
        firsts.push(first);
    }
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
    let n = *firsts
        .iter()
        .find(|&&f| f > 0)
        .expect("nothing was dropped");
    assert!(n >= 5, "a segment of {n} messages: {firsts:?}");
    assert!(
        firsts.iter().all(|f| f % n == 0),
        "the head moved by part of a segment ({n} messages each): {firsts:?}"
    );
    // What is left fits the limit (give or take the segment being
    // written) and is an unbroken run up to the newest.
    let first = *firsts.last().unwrap();
    let kept = total - first;
    assert!(kept * size <= (limit + segment) as u64, "{kept} kept");
    assert!(
        kept * (size + 100) > (limit - segment) as u64,
        "{kept} kept"
    );
    let mut all = Reader::open(&conn, q, Some(text("first")), 200, "", &[]).await;
    all.exactly(&(first..total).collect::<Vec<_>>()).await;
    for d in &all.got {
        assert_eq!(d.data, body(offset(d)));
    }
}

/// x-max-age "2s", nothing published after the first 30 messages: the
/// broker's timer (every 5 s) drops them all once they are 2 s old, the
/// segment being written included, and not before. Offsets go on from
/// where they were.
#[tokio::test]
async fn age_retention_empties_an_idle_stream_on_a_timer() {
    let server = start().await;
    let conn = connect(&server).await;
    let q = "idleage";
    let retention = [
        ("x-max-age", text("2s")),
        (
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(1000),
        ),
    ];
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, q, &retention).await;
    let publisher = confirming(&conn).await;
    let published = Instant::now();
    publish_burst(&publisher, q, 0..30).await;
    assert_eq!(depth(&ch, q).await, 30);

    let deadline = published + Duration::from_secs(15);
    let mut last = 30;
    loop {
        let count = depth(&ch, q).await;
        assert!(count <= last, "the count went up: {last} -> {count}");
        last = count;
        if count < 30 {
            assert!(
                published.elapsed() >= Duration::from_secs(2),
                "dropped before they were 2 s old"
            );
        }
        if count == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{count} messages still there after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut r = Reader::open(&conn, q, Some(text("first")), 10, "", &[]).await;
    assert!(
        quiet(&mut r.consumer).await,
        "an expired message was delivered"
    );
    publish(&publisher, q, b"m30", BasicProperties::default()).await;
    r.exactly(&[30]).await;
    assert_eq!(depth(&ch, q).await, 1);
}
