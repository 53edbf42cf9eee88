//! Many consumers at once while the stream grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::types::AMQPValue;

use super::*;
use crate::common::{connect, start};

const CONSUMERS: u64 = 20;
/// Published before the consumers start.
const INITIAL: u64 = 300;
/// Published in all.
const END: u64 = 1000;
/// The longest a consumer waits for its next offset (a loaded machine's
/// disk can take seconds to sync).
const PATIENCE: Duration = Duration::from_secs(20);

/// 20 consumers, each from its own offset (some beyond the end at first),
/// each with prefetch 10 and acking one delivery at a time, on
/// connections of their own, while a producer appends with confirms: each
/// gets exactly the offsets from its start to the end, in order, each
/// once, each body the one published at that offset.
#[tokio::test]
async fn twenty_consumers_each_read_exactly_their_range_while_the_stream_grows() {
    let server = start().await;
    let url = server.amqp_url();
    let conn = connect(&server).await;
    let q = "many";
    declare_stream(&conn.create_channel().await.unwrap(), q, &[]).await;
    let publisher = confirming(&conn).await;
    publish_burst(&publisher, q, 0..INITIAL).await;

    // How far the producer got (confirmed), for a consumer that waits in
    // vain to tell.
    let confirmed = Arc::new(AtomicU64::new(INITIAL));
    let mut consumers = Vec::new();
    for k in 0..CONSUMERS {
        let start = k * 47; // 0 .. 893
        let c = open(&url).await;
        let spec = AMQPValue::LongLongInt(i64::try_from(start).unwrap());
        let mut r = Reader::open(&c, q, Some(spec), 10, "", &[]).await;
        let confirmed = confirmed.clone();
        consumers.push(tokio::spawn(async move {
            for expected in start..END {
                let wait = tokio::time::timeout(PATIENCE, r.consumer.next()).await;
                let Ok(Some(Ok(d))) = wait else {
                    panic!(
                        "consumer from {start}: no offset {expected} ({wait:?}); {} confirmed",
                        confirmed.load(Ordering::Relaxed)
                    );
                };
                assert_eq!(offset(&d), expected, "consumer from {start}");
                assert_eq!(d.data, format!("m{expected}").into_bytes(), "at {expected}");
                assert!(!d.redelivered);
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            assert!(
                quiet(&mut r.consumer).await,
                "consumer from {start}: more after {END}"
            );
            c.close(200, "done".into()).await.expect("close");
        }));
    }
    // Appends in confirmed batches of 25 while they read.
    let mut at = INITIAL;
    while at < END {
        let to = (at + 25).min(END);
        publish_burst(&publisher, q, at..to).await;
        confirmed.store(to, Ordering::Relaxed);
        at = to;
    }
    for c in consumers {
        c.await.expect("a consumer got exactly its range");
    }
    assert_eq!(crate::common::depth(&publisher, q).await as u64, END);
}
