//! Channel lifecycle: soft errors close only their channel, flow control
//! pauses deliveries, and closing a channel releases what it held.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;

use crate::common::*;

#[tokio::test]
async fn a_channel_error_leaves_other_channels_and_connections_working() {
    let server = start().await;
    let conn = connect(&server).await;
    let other_conn = connect(&server).await;
    let healthy = channel(&conn).await;
    let doomed = channel(&conn).await;
    healthy
        .queue_declare(
            "h".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    expect_code(
        doomed
            .queue_declare(
                "nope".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await,
        404,
    );
    assert!(conn.status().connected());
    healthy
        .basic_publish(
            "".into(),
            "h".into(),
            BasicPublishOptions::default(),
            b"ok",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let other = channel(&other_conn).await;
    let got = other
        .basic_get("h".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(got.is_some());
}

#[tokio::test]
async fn channel_flow_pauses_and_resumes_deliveries() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "f".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut c = ch
        .basic_consume(
            "f".into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let active = ch
        .channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap();
    assert!(!active);
    let publisher = channel(&conn).await;
    publisher
        .basic_publish(
            "".into(),
            "f".into(),
            BasicPublishOptions::default(),
            b"later",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.next())
            .await
            .is_err(),
        "delivered while flow was off"
    );
    ch.channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(2), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"later");
}

#[tokio::test]
async fn closing_a_connection_requeues_its_unacked_messages() {
    let server = start().await;
    let consumer_conn = connect(&server).await;
    let ch = channel(&consumer_conn).await;
    ch.queue_declare(
        "u".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..3 {
        ch.basic_publish(
            "".into(),
            "u".into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut c = ch
        .basic_consume(
            "u".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        c.next().await.unwrap().unwrap();
    }
    let queue = server.broker().vhost("/").unwrap().queue(0, "u").unwrap();
    assert_eq!(queue.counts(), (0, 3));
    consumer_conn.close(200, "bye".into()).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || queue.counts() == (3, 0)).await);
    let other = connect(&server).await;
    let ch = channel(&other).await;
    for i in 0..3 {
        let m = ch
            .basic_get("u".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.data, format!("{i}").as_bytes());
        assert!(m.delivery.redelivered);
    }
}

/// The broker closes a channel for an error while the client closes it too
/// (amqp091-go's issue-43 test): each side answers the other's close, and
/// the client's `close-ok`, arriving after the broker's, is still expected,
/// as by RabbitMQ. It must not close the connection (504 "expected
/// 'channel.open'"), and the channel number is free again afterwards.
#[tokio::test]
async fn closing_a_channel_from_both_sides_at_once_keeps_the_connection() {
    use crate::raw::*;
    use amq_protocol::frame::AMQPFrame;
    use amq_protocol::protocol::{AMQPClass, channel, connection, queue};
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    let mut bytes = publish(1, "nonexisting-exchange", "");
    bytes.extend(header_frame(1, 0, &[0, 0]));
    bytes.extend(method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    ));
    c.send(&bytes).await;
    let (mut got_close, mut got_close_ok) = (false, false);
    while !(got_close && got_close_ok) {
        match c.next_frame().await {
            Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(close)))) => {
                assert_eq!(close.reply_code, 404);
                got_close = true;
            }
            Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)))) => {
                got_close_ok = true;
            }
            other => panic!("expected channel.close and close-ok on 1, got {other:?}"),
        }
    }
    c.send_method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    )
    .await;
    c.send_method(
        2,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "still-here".into(),
            ..Default::default()
        })),
    )
    .await;
    match c.next_method().await {
        (2, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {}
        (0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) => {
            panic!(
                "connection closed: {} {}",
                close.reply_code, close.reply_text
            )
        }
        other => panic!("expected declare-ok on 2, got {other:?}"),
    }
    c.open_channel(1).await;
}
