//! Server-side offset tracking (`x-stream-automatic-offset-tracking`)
//! across a clean restart and a SIGKILL of the real binary.
//!
//! A consumer with tracking has the broker remember, per consumer tag,
//! the first offset it has not acknowledged; a later consumer with that
//! tag starts there whatever its `x-stream-offset` says. Acks may come
//! out of order: the offset never moves past one not acknowledged.
//! Tracked offsets are written with the group commit: a confirmed publish
//! on the channel after the acks makes them durable before a SIGKILL.

use lapin::types::AMQPValue;

use super::*;

const TRACK: (&str, AMQPValue) = (
    "x-stream-automatic-offset-tracking",
    AMQPValue::Boolean(true),
);

/// Ack each delivery of `r` whose offset is in `offsets`, one at a time
/// (multiple = false), in the order given.
async fn ack_offsets(r: &Reader, offsets: &[u64]) {
    for &o in offsets {
        let d = r.got.iter().find(|d| offset(d) == o).expect("delivered");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

/// A synchronous method on `ch`: the broker has handled what was sent
/// on it before.
async fn roundtrip(ch: &Channel) {
    ch.basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
}

/// A confirmed publish on `ch` (after its acks): its group commit writes
/// the offsets those acks tracked.
async fn barrier(ch: &Channel, q: &str) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    publish(ch, q, b"barrier", BasicProperties::default()).await;
}

/// The first offset a consumer with `tag` and `spec` gets, and that the
/// next ones follow it.
async fn resumes_at(conn: &Connection, q: &str, tag: &str, spec: AMQPValue, track: bool) -> u64 {
    let extra = if track { vec![TRACK] } else { vec![] };
    let mut r = Reader::open(conn, q, Some(spec), 5, tag, &extra)
        .await
        .manual();
    let offsets: Vec<u64> = r.take(5).await.iter().map(offset).collect();
    let first = offsets[0];
    assert_eq!(offsets, (first..first + 5).collect::<Vec<_>>(), "{tag}");
    r.close().await;
    first
}

#[tokio::test]
async fn tracked_offsets_resume_at_the_first_unacked_after_a_restart_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let q = "tracked";

    // 1. 40 messages; consumer "t" (prefetch 10) gets 0..9 and acks
    //    0, 1, 2, 4, 5 one by one: 3 is not acked, so "t" is at 3.
    let broker = spawn_on(dir.path());
    let conn = open(&broker.url).await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, q, &[]).await;
    publish_burst(&confirming(&conn).await, q, 0..40).await;
    let mut t = Reader::open(&conn, q, Some(text("first")), 10, "t", &[TRACK])
        .await
        .manual();
    t.take(10).await;
    ack_offsets(&t, &[2, 0, 1, 5, 4]).await;
    t.take(5).await; // the credit came back
    assert_eq!(t.offsets(), (0..15).collect::<Vec<_>>());
    roundtrip(&t.ch).await;
    conn.close(200, "restart".into()).await.unwrap();
    terminate(broker).await;

    // 2. After a clean restart "t" starts at 3 although it asks for
    //    "next", and gets 3..12; it acks 3, 4, 5, 6, 8 (not 7). A new tag
    //    "u" starts at its x-stream-offset (20) and acks 20, 21.
    let broker = spawn_on(dir.path());
    let conn = open(&broker.url).await;
    let mut t = Reader::open(&conn, q, Some(text("next")), 10, "t", &[TRACK])
        .await
        .manual();
    t.take(10).await;
    assert_eq!(
        t.offsets(),
        (3..13).collect::<Vec<_>>(),
        "after a clean restart"
    );
    let mut u = Reader::open(&conn, q, Some(AMQPValue::LongLongInt(20)), 5, "u", &[TRACK])
        .await
        .manual();
    u.take(5).await;
    assert_eq!(u.offsets(), (20..25).collect::<Vec<_>>(), "a new tag");
    ack_offsets(&u, &[21, 20]).await;
    roundtrip(&u.ch).await;
    ack_offsets(&t, &[3, 4, 6, 5, 8]).await;
    barrier(&t.ch, q).await;
    // Acks the kill may beat to the disk: "t" is remembered at 7, 9 (after
    // the first) or 10 (after both), never further.
    t.take(5).await; // 13..17, the credit back
    ack_offsets(&t, &[7, 9]).await;
    drop(broker); // SIGKILL

    // 3. After the crash: "t" at 7, 9 or 10 whatever it asks for, "u" at 22,
    //    a new tag "v" where it asks (30), and "t" without tracking too.
    let broker = spawn_on(dir.path());
    let conn = open(&broker.url).await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(crate::common::depth(&ch, q).await, 41, "40 and the barrier");
    let t_at = resumes_at(&conn, q, "t", text("first"), true).await;
    assert!([7, 9, 10].contains(&t_at), "\"t\" resumed at {t_at}");
    let u_at = resumes_at(&conn, q, "u", text("last"), true).await;
    assert_eq!(u_at, 22, "\"u\" resumed at {u_at}");
    assert_eq!(
        resumes_at(&conn, q, "v", AMQPValue::LongLongInt(30), true).await,
        30
    );
    let untracked = resumes_at(&conn, q, "t", AMQPValue::LongLongInt(35), false).await;
    assert_eq!(
        untracked, 35,
        "without tracking, \"t\" starts where it asks"
    );
    // The ones that looked did not move "t" (they acked nothing).
    assert_eq!(resumes_at(&conn, q, "t", text("next"), true).await, t_at);
}

/// Credit is credit however little comes back: a consumer (prefetch 10)
/// that holds nine deliveries and acks one still gets the next. The task
/// used to sleep until a quarter of the prefetch was back, so this one
/// waited for ever.
#[tokio::test]
async fn a_consumer_holding_most_of_its_prefetch_gets_what_it_has_room_for() {
    let server = crate::common::start().await;
    let conn = open(&server.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = "held";
    declare_stream(&ch, q, &[]).await;
    publish_burst(&confirming(&conn).await, q, 0..20).await;
    let mut r = Reader::open(&conn, q, Some(text("first")), 10, "held", &[])
        .await
        .manual();
    r.take(10).await;
    ack_offsets(&r, &[0]).await;
    r.take(1).await;
    assert_eq!(r.offsets(), (0..11).collect::<Vec<_>>());
    ack_offsets(&r, &[1]).await;
    r.take(1).await;
    assert_eq!(r.offsets(), (0..12).collect::<Vec<_>>());
}
