//! Malformed and out-of-order input over raw sockets. Each test checks the
//! reply code the offender gets, then that a bystander connection opened
//! before the incident still works and that a new client can connect.

use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, channel, queue};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use warren::Server;

use crate::common::*;
use crate::raw::*;

/// A connection with a queue and an unacked-free round trip, to prove the
/// broker still serves others after an incident.
struct Bystander {
    conn: Connection,
    queue: String,
}

impl Bystander {
    async fn new(server: &Server) -> Bystander {
        let conn = connect(server).await;
        let ch = channel(&conn).await;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Bystander {
            conn,
            queue: q.name().as_str().to_string(),
        }
    }

    async fn still_works(&self, server: &Server) {
        let ch = self.conn.create_channel().await.expect("bystander channel");
        ch.basic_publish(
            "".into(),
            self.queue.as_str().into(),
            BasicPublishOptions::default(),
            b"still here",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let got = ch
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("message");
        assert_eq!(got.delivery.data, b"still here");
        // And a brand-new client gets in.
        let fresh = connect(server).await;
        fresh.close(200, "ok".into()).await.unwrap();
    }
}

#[tokio::test]
async fn garbage_instead_of_protocol_header_gets_our_header_back() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    for garbage in [
        &b"HTTP/1.1 GET /\r\n"[..],
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x01\x00\x00",
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
    ] {
        let mut c = RawClient::connect(server.amqp_addr()).await;
        c.send(garbage).await;
        assert_eq!(c.read_raw(8).await, b"AMQP\x00\x00\x09\x01");
        assert!(c.is_closed_by_peer(Duration::from_secs(2)).await);
    }
    bystander.still_works(&server).await;
}

#[tokio::test]
async fn bad_frame_end_is_a_frame_error() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    let mut frame = method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    let last = frame.len() - 1;
    frame[last] = 0x00;
    c.send(&frame).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);
    assert!(
        closed.text.starts_with("FRAME_ERROR - type 1"),
        "{}",
        closed.text
    );
    assert!(
        closed.text.contains("invalid_frame_end_marker"),
        "{}",
        closed.text
    );
    bystander.still_works(&server).await;
}

#[tokio::test]
async fn frame_larger_than_frame_max_is_a_frame_error() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    let mut c = RawClient::open_with(server.amqp_addr(), 4096, 0).await;
    c.open_channel(1).await;
    c.send(&publish(1, "", "q")).await;
    c.send(&header_frame(1, 5000, &[0, 0])).await;
    c.send(&body_frame(1, &[0u8; 5000])).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);
    assert_eq!(
        closed.text,
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,5000,4088}"
    );
    bystander.still_works(&server).await;
}

#[tokio::test]
async fn a_method_on_a_channel_that_is_not_open_is_a_channel_error() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.send_method(
        5,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "x".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 504);
    assert_eq!(closed.text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((closed.class_id, closed.method_id), (50, 10));
    bystander.still_works(&server).await;
}

#[tokio::test]
async fn a_second_channel_open_is_a_channel_error() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 504);
    assert_eq!(closed.text, "CHANNEL_ERROR - second 'channel.open' seen");
}

#[tokio::test]
async fn a_body_without_its_header_is_an_unexpected_frame() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send(&publish(1, "", "q")).await;
    c.send(&body_frame(1, b"abc")).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 505);
    assert_eq!(
        closed.text,
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
    );
    assert_eq!((closed.class_id, closed.method_id), (60, 40));
    bystander.still_works(&server).await;
}

#[tokio::test]
async fn content_without_a_publish_is_an_unexpected_frame() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send(&header_frame(1, 3, &[0, 0])).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 505);
    assert_eq!(
        closed.text,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    );
}

#[tokio::test]
async fn a_body_longer_than_announced_is_refused_and_nothing_is_enqueued() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send(&publish(1, "", "q")).await;
    c.send(&header_frame(1, 3, &[0, 0])).await;
    c.send(&body_frame(1, b"abcde")).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 505);
    let q = ch
        .queue_declare(
            "q".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
}

#[tokio::test]
async fn heartbeat_on_a_channel_is_an_unexpected_frame() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.send(&raw_frame(8, 1, &[])).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 505);
}

#[tokio::test]
async fn unknown_methods_and_frame_types_close_the_connection() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send(&raw_frame(1, 1, &[0, 99, 0, 10])).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 540);

    let mut c = RawClient::open(server.amqp_addr()).await;
    c.send(&raw_frame(4, 0, b"abc")).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);
    assert_eq!(
        closed.text,
        "FRAME_ERROR - type 4, all octets = <<\"abc\">>: unknown_frame"
    );

    // A known method whose arguments are cut short.
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send(&raw_frame(
        1,
        1,
        &[0, 50, 0, 10, 0, 0, 3, b'a', b'b', b'c', 0],
    ))
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);
    assert_eq!((closed.class_id, closed.method_id), (50, 10));
}

#[tokio::test]
async fn server_only_methods_from_a_client_are_command_invalid() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "x".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "".into(),
        })),
    )
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 503);
    assert_eq!(closed.text, "COMMAND_INVALID - unimplemented method");
}

#[tokio::test]
async fn a_truncated_frame_then_disconnect_leaves_the_broker_serving() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    for _ in 0..10 {
        let mut c = RawClient::open(server.amqp_addr()).await;
        c.open_channel(1).await;
        let frame = publish(1, "", &bystander.queue);
        c.send(&frame[..frame.len() / 2]).await;
        drop(c);
        let mut c = RawClient::open(server.amqp_addr()).await;
        c.open_channel(1).await;
        c.send(&publish(1, "", &bystander.queue)).await;
        c.send(&header_frame(1, 10, &[0, 0])).await;
        c.send(&body_frame(1, b"half")).await;
        drop(c);
    }
    bystander.still_works(&server).await;
    // Half-published messages were never enqueued.
    let ch = channel(&bystander.conn).await;
    let got = ch
        .basic_get(
            bystander.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap();
    assert!(got.is_none());
}

#[tokio::test]
async fn an_oversized_message_is_refused_on_its_channel_only() {
    let mut config = warren::Config::ephemeral();
    config.limits.max_message_size = 1000;
    let server = start_with(config).await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send(&publish(1, "", "q")).await;
    c.send(&header_frame(1, 1001, &[0, 0])).await;
    let closed = c.expect_channel_close().await;
    assert_eq!(closed.channel, 1);
    assert_eq!(closed.code, 406);
    assert_eq!(
        closed.text,
        "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
    );
    // Channel 2 on the same connection carries on.
    c.send_method(
        2,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "after".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
    .await;
    match c.next_method().await {
        (2, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => {
            assert_eq!(ok.queue.as_str(), "after")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn frames_for_a_closing_channel_are_ignored_until_close_ok() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    // Provoke a channel error: publish to a missing exchange.
    c.send(&publish(1, "missing", "k")).await;
    c.send(&header_frame(1, 0, &[0, 0])).await;
    // These arrive before our close-ok and must be dropped silently.
    c.send(&publish(1, "missing", "k")).await;
    c.send(&header_frame(1, 0, &[0, 0])).await;
    let closed = c.expect_channel_close().await;
    assert_eq!(closed.code, 404);
    assert_eq!(
        closed.text,
        "NOT_FOUND - no exchange 'missing' in vhost '/'"
    );
    // The channel number can be reused afterwards.
    c.open_channel(1).await;
}

/// A table nested far deeper than any application needs, in method
/// arguments or in message headers, is refused instead of exhausting the
/// stack of the parser.
#[tokio::test]
async fn deeply_nested_tables_are_refused_not_crashing() {
    fn nested(depth: usize) -> Vec<u8> {
        let mut table: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut outer = vec![1u8, b'k', b'F'];
            outer.extend_from_slice(&(table.len() as u32).to_be_bytes());
            outer.extend_from_slice(&table);
            table = outer;
        }
        let mut out = (table.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&table);
        out
    }
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    let deep = nested(18_000); // fits one 128 KiB frame

    // In queue.declare arguments.
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend_from_slice(&deep);
    c.send(&raw_frame(1, 1, &payload)).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);
    assert_eq!(
        closed.text,
        "FRAME_ERROR - field table nested deeper than 64 levels"
    );

    // In the headers of a message.
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    let mut props = vec![0x20, 0x00];
    props.extend_from_slice(&deep);
    c.send(&publish(1, "", &bystander.queue)).await;
    c.send(&header_frame(1, 0, &props)).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);

    bystander.still_works(&server).await;
}

/// Properties whose header table does not follow the field grammar (an
/// unknown type tag; a value longer than its table) are a frame error,
/// though the broker reads publishes without decoding the table.
#[tokio::test]
async fn malformed_header_tables_in_properties_are_frame_errors() {
    let server = start().await;
    let bystander = Bystander::new(&server).await;
    let unknown_tag: &[u8] = &[0, 0, 0, 4, 1, b'k', b'Z', 0];
    let overlong: &[u8] = &[0, 0, 0, 8, 1, b'k', b'S', 0, 0, 0, 9, b'x'];
    for table in [unknown_tag, overlong] {
        let mut c = RawClient::open(server.amqp_addr()).await;
        c.open_channel(1).await;
        let mut props = vec![0x20, 0x00];
        props.extend_from_slice(table);
        c.send(&publish(1, "", &bystander.queue)).await;
        c.send(&header_frame(1, 0, &props)).await;
        let closed = c.expect_connection_close().await;
        assert_eq!(closed.code, 501);
        assert!(
            closed
                .text
                .starts_with("FRAME_ERROR - cannot decode content header properties"),
            "{}",
            closed.text
        );
    }
    bystander.still_works(&server).await;
}
