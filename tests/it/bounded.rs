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
        .map(|c| c.held.held_bytes())
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
