//! Buffers whose size a peer controls stay bounded: a connection's output
//! (a flood of pipelined `basic.get` from a client that does not read),
//! the unacknowledged deliveries of a consumer without a prefetch limit,
//! and a transaction's held publishes.

use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic};
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use warren::Config;

use crate::common::*;
use crate::raw::{RawClient, method};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_from_a_client_that_does_not_read_stay_within_the_output_limit() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "big").await;
    let body = vec![1u8; 256 * 1024];
    for _ in 0..200 {
        put(&ch, "big", &body).await;
    }
    // 200 gets in one write, and nothing read back: without a bound the
    // broker would copy all 50 MiB into this connection's output buffer.
    let mut raw = RawClient::open(server.amqp_addr()).await;
    raw.open_channel(1).await;
    let get = method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "big".into(),
            no_ack: true,
        })),
    );
    raw.send(&get.repeat(200)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held: u64 = server
        .broker()
        .connections()
        .iter()
        .map(|c| c.probe.held_bytes())
        .max()
        .unwrap_or(0);
    let limit = server.broker().config.limits.connection_buffer_bytes as u64;
    assert!(
        held <= limit + 2 * body.len() as u64,
        "the non-reading client's output grew to {held} bytes"
    );
    let queue = server.broker().vhost("/").unwrap().queue(0, "big").unwrap();
    assert!(queue.message_count() > 150, "{}", queue.message_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_prefetch_gets_at_most_the_unacked_limit() {
    let mut config = Config::ephemeral();
    config.limits.max_unacked_per_channel = 100;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "many").await;
    for _ in 0..1000 {
        put(&ch, "many", b"m").await;
    }
    let consumer_ch = channel(&conn).await;
    let mut deliveries = consumer_ch
        .basic_consume(
            "many".into(),
            "unbounded".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await
    {
        got.push(d);
    }
    assert_eq!(got.len(), 100, "deliveries past the unacked limit");
    // Acking frees the channel: the rest follows.
    let last = got.last().unwrap().delivery_tag;
    consumer_ch
        .basic_ack(last, lapin::options::BasicAckOptions { multiple: true })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), deliveries.next()).await;
    assert!(matches!(next, Ok(Some(Ok(_)))), "no delivery after the ack");
}

#[tokio::test]
async fn a_transaction_holding_too_many_bytes_is_refused_with_406() {
    let mut config = Config::ephemeral();
    config.limits.max_transaction_bytes = 10 * 1024;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "txq").await;
    ch.tx_select().await.unwrap();
    let mut events = conn.events_listener();
    for _ in 0..20 {
        let _ = ch
            .basic_publish(
                "".into(),
                "txq".into(),
                BasicPublishOptions::default(),
                &[0u8; 1024],
                BasicProperties::default(),
            )
            .await;
    }
    let (code, text) = next_error(&mut events).await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("transaction"), "{text}");
}

/// Pages of a long queue are read with the queue unlocked: consumers,
/// `basic.get` and a publisher racing over a queue that pages all the time
/// still see every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_queue_read_by_many_at_once_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 64;
    let server = start_with(config).await;
    let total: u32 = 8_000;
    let publisher = connect(&server).await;
    let pch = channel(&publisher).await;
    declare(&pch, "paging").await;
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            put(&pch, "paging", &i.to_be_bytes()).await;
        }
        pch
    });
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<u32>::new()));
    let mut tasks = Vec::new();
    for n in 0..2 {
        let conn = connect(&server).await;
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let ch = channel(&conn).await;
            ch.basic_qos(50, Default::default()).await.unwrap();
            let mut deliveries = ch
                .basic_consume(
                    "paging".into(),
                    format!("c{n}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            while let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_secs(3), deliveries.next()).await
            {
                seen.lock()
                    .push(u32::from_be_bytes(d.data[..4].try_into().unwrap()));
                d.ack(Default::default()).await.unwrap();
            }
            conn
        }));
    }
    let getter = connect(&server).await;
    let gch = channel(&getter).await;
    let mut empty_since = None;
    loop {
        match gch
            .basic_get(
                "paging".into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            Some(m) => {
                seen.lock()
                    .push(u32::from_be_bytes(m.data[..4].try_into().unwrap()));
                empty_since = None;
            }
            None => {
                let since = *empty_since.get_or_insert_with(std::time::Instant::now);
                if publishing.is_finished() && since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = seen.lock().clone();
    got.sort_unstable();
    let before = got.len();
    got.dedup();
    assert_eq!(
        before,
        got.len(),
        "{} messages delivered twice",
        before - got.len()
    );
    assert_eq!(got.len() as u32, total, "messages lost");
}

/// A consumer that catches up with the end of a queue's stored messages
/// while a publisher trickles more in: each short page is read while
/// messages arrive, and those must not be taken for gone (they were left
/// in the store, never delivered until a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_catching_up_with_the_stored_messages_misses_none_published_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 16;
    let server = start_with(config).await;
    let (rounds, burst, trickle) = (40u32, 60u32, 30u32);
    let total = rounds * (burst + trickle);
    let publisher = connect(&server).await;
    let pch = channel(&publisher).await;
    declare(&pch, "catching-up").await;
    let publishing = tokio::spawn(async move {
        let mut n = 0u32;
        for _ in 0..rounds {
            // A burst grows a stored region; the trickle lands while the
            // consumer reads its last pages.
            for _ in 0..burst {
                put(&pch, "catching-up", &n.to_be_bytes()).await;
                n += 1;
            }
            for _ in 0..trickle {
                put(&pch, "catching-up", &n.to_be_bytes()).await;
                n += 1;
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
        pch
    });
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.basic_qos(20, Default::default()).await.unwrap();
    let mut deliveries = ch
        .basic_consume(
            "catching-up".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_secs(3), deliveries.next()).await
    {
        got.push(u32::from_be_bytes(d.data[..4].try_into().unwrap()));
        d.ack(Default::default()).await.unwrap();
    }
    assert!(publishing.is_finished(), "the publisher stalled");
    // Anything the consumer held goes back: what is still in the queue
    // was stalled, not lost.
    let _ = ch.close(200, "done".into()).await;
    let left = depth(&channel(&conn).await, "catching-up").await;
    got.sort_unstable();
    let before = got.len();
    got.dedup();
    assert_eq!(before, got.len(), "{} delivered twice", before - got.len());
    let missing: Vec<u32> = (0..total)
        .filter(|n| got.binary_search(n).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} never delivered, e.g. {:?}; {left} still ready in the queue",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
