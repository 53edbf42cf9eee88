//! Durability through real clients: what survives a restart, in what order,
//! with which flags; long queues paged to the store; first-boot seeding.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use warren::{Config, Server};

use crate::common::*;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, Confirmation::Ack(_)),
        "not confirmed: {confirm:?}"
    );
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Take every ready message: (body, redelivered).
async fn drain(ch: &Channel, q: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push((
            String::from_utf8(m.delivery.data.clone()).unwrap(),
            m.delivery.redelivered,
        ));
    }
    out
}

#[tokio::test]
async fn durable_definitions_and_persistent_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        "orders".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-custom".into(), AMQPValue::LongInt(7));
    ch.queue_declare("keep".into(), durable(), args)
        .await
        .unwrap();
    ch.queue_bind(
        "keep".into(),
        "orders".into(),
        "order.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "transient-q").await;
    ch.queue_declare(
        "auto".into(),
        QueueDeclareOptions {
            durable: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "temp-x".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    for i in 0..5 {
        publish_confirmed(
            &ch,
            "orders",
            "order.new",
            format!("p{i}").as_bytes(),
            persistent(),
        )
        .await;
    }
    publish_confirmed(
        &ch,
        "",
        "keep",
        b"transient-msg",
        BasicProperties::default(),
    )
    .await;
    publish_confirmed(&ch, "", "keep", b"p5", persistent()).await;
    publish_confirmed(&ch, "", "transient-q", b"gone", persistent()).await;

    // Deliver p0 and p1 without acking them; ack p2 (it must never return).
    let reader = channel(&conn).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            reader
                .basic_get("keep".into(), BasicGetOptions::default())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    reader
        .basic_ack(held[2].delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    // The ack must reach the broker before it stops.
    reader
        .basic_qos(0, BasicQosOptions::default())
        .await
        .unwrap();
    drop(conn);
    server.shutdown().await;

    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "orders".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("durable exchange survives");
    assert_eq!(depth(&ch, "keep").await, 5);
    assert_eq!(
        drain(&ch, "keep").await,
        vec![
            ("p0".to_string(), true),
            ("p1".to_string(), true),
            ("p3".to_string(), false),
            ("p4".to_string(), false),
            ("p5".to_string(), false),
        ],
        "persistent messages in order; delivered ones redelivered; transient and acked gone"
    );
    for gone in ["transient-q", "auto"] {
        let ch = channel(&conn).await;
        expect_code(
            ch.queue_declare(
                gone.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await,
            404,
        );
    }
    let ch = channel(&conn).await;
    expect_code(
        ch.exchange_declare(
            "temp-x".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
    // The binding survived too, and the queue kept its arguments.
    let ch = channel(&conn).await;
    ch.basic_publish(
        "orders".into(),
        "order.again".into(),
        BasicPublishOptions::default(),
        b"routed",
        persistent(),
    )
    .await
    .unwrap();
    assert_eq!(depth(&ch, "keep").await, 1);
    let mut args = FieldTable::default();
    args.insert("x-custom".into(), AMQPValue::LongInt(7));
    ch.queue_declare("keep".into(), durable(), args)
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn consumers_see_recovered_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("work".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..200 {
        ch.basic_publish(
            "".into(),
            "work".into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            persistent(),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    drop(conn);
    server.shutdown().await;

    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "work".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..200 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.data, format!("{i}").as_bytes());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_long_queue_pages_to_the_store_and_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 64;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("long".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    declare(&ch, "long-transient").await;
    for i in 0..3000 {
        let body = format!("{i:05}");
        let props = if i % 2 == 0 {
            persistent()
        } else {
            BasicProperties::default()
        };
        ch.basic_publish(
            "".into(),
            "long".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props.clone(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            "long-transient".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    let vhost = server.broker().vhost("/").unwrap();
    for name in ["long", "long-transient"] {
        let q = vhost.queue(0, name).unwrap();
        let (in_memory, stored) = q.ready_split();
        assert!(in_memory <= 64, "{name}: {in_memory} in memory");
        assert!(stored >= 2900, "{name}: only {stored} stored");
        assert_eq!(depth(&ch, name).await, 3000);
    }
    for name in ["long", "long-transient"] {
        let got = drain(&ch, name).await;
        let expected: Vec<(String, bool)> = (0..3000).map(|i| (format!("{i:05}"), false)).collect();
        assert_eq!(got.len(), 3000);
        assert!(got == expected, "{name} drained out of order");
    }
    server.shutdown().await;
}

/// Paged transient messages are stored in batches: purging a long queue
/// mid-way through a batch, then paging more, must bring back exactly the
/// messages published after the purge, in order — none of the purged ones
/// left in a half-read batch.
#[tokio::test]
async fn a_purged_paged_queue_brings_back_only_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 16;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "batched").await;
    let body = "b".repeat(700);
    let publish_range = |range: std::ops::Range<u32>| {
        let ch = ch.clone();
        let body = body.clone();
        async move {
            for i in range {
                ch.basic_publish(
                    "".into(),
                    "batched".into(),
                    BasicPublishOptions::default(),
                    format!("{i:05}{body}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
        }
    };
    publish_range(0..500).await;
    assert_eq!(depth(&ch, "batched").await, 500);
    // Read part of the stored region back (the window refills from a
    // batch and leaves the rest of it on disk), then purge.
    for _ in 0..30 {
        ch.basic_get("batched".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
    }
    let purged = ch
        .queue_purge("batched".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(purged, 470);
    publish_range(500..800).await;
    assert_eq!(depth(&ch, "batched").await, 300);
    let got: Vec<String> = drain(&ch, "batched")
        .await
        .into_iter()
        .map(|(b, _)| b[..5].to_string())
        .collect();
    let expected: Vec<String> = (500..800).map(|i| format!("{i:05}")).collect();
    assert_eq!(got.len(), 300);
    assert!(got == expected, "drained {:?}…", &got[..5]);
    server.shutdown().await;
}

#[tokio::test]
async fn paged_transient_messages_do_not_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 16;
    let server = start_with(config.clone()).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("mixed".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..500 {
        let props = if i % 5 == 0 {
            persistent()
        } else {
            BasicProperties::default()
        };
        ch.basic_publish(
            "".into(),
            "mixed".into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    drop(conn);
    server.shutdown().await;

    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let got: Vec<String> = drain(&ch, "mixed")
        .await
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    let expected: Vec<String> = (0..500)
        .filter(|i| i % 5 == 0)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(got, expected);
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_for_several_durable_queues_survives_in_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["fan-1", "fan-2", "fan-3"] {
        ch.queue_declare(q.into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            q.into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    publish_confirmed(&ch, "amq.fanout", "", b"everyone", persistent()).await;
    // fan-1 consumes its copy before the restart.
    assert_eq!(drain(&ch, "fan-1").await.len(), 1);
    drop(conn);
    server.shutdown().await;

    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    assert!(drain(&ch, "fan-1").await.is_empty());
    for q in ["fan-2", "fan-3"] {
        assert_eq!(drain(&ch, q).await, vec![("everyone".to_string(), false)]);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn default_user_is_created_on_first_boot_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = on_disk(dir.path());
    first.auth.default_user = "app".into();
    first.auth.default_pass = "one".into();
    let server = start_with(first).await;
    connect(&server).await;
    server.shutdown().await;

    let mut second = on_disk(dir.path());
    second.auth.default_user = "other".into();
    second.auth.default_pass = "two".into();
    let server = start_with(second).await;
    let addr = server.amqp_addr();
    let url = |user: &str| format!("amqp://{user}@127.0.0.1:{}/%2f", addr.port());
    lapin::Connection::connect(&url("app:one"), lapin::ConnectionProperties::default())
        .await
        .expect("the first boot's user still exists");
    assert!(
        lapin::Connection::connect(&url("other:two"), lapin::ConnectionProperties::default())
            .await
            .is_err(),
        "a later boot must not create another default user"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_broker_cannot_open_a_data_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let err = Server::start(on_disk(dir.path()))
        .await
        .expect_err("must refuse");
    assert!(err.to_string().contains("cannot open the store"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn publishes_that_cannot_be_stored_are_nacked_and_the_disk_alarm_is_raised() {
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = broken.clone();
    let disk = std::sync::Arc::new(HookedBackend::new(move || {
        if failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(warren::store::StoreError::Io(
                "No space left on device".into(),
            ))
        } else {
            Ok(())
        }
    }));
    let store = warren::store::Store::over(disk.clone()).unwrap();
    let server = Server::start_with_store(Config::ephemeral(), store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("safe".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    publish_confirmed(&ch, "", "safe", b"before", persistent()).await;

    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let confirm = ch
        .basic_publish(
            "".into(),
            "safe".into(),
            BasicPublishOptions::default(),
            b"lost",
            persistent(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, Confirmation::Nack(_)),
        "a write that failed was confirmed: {confirm:?}"
    );
    assert!(
        server
            .broker()
            .alarms
            .is_on(warren::broker::alarms::Resource::Disk)
    );
    assert!(
        eventually(Duration::from_secs(2), || conn.status().blocked()).await,
        "publishers were not blocked"
    );
}
