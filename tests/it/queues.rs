//! Queue declaration, exclusivity, auto-delete, purge and delete.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::common::*;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn put_n(ch: &Channel, q: &str, n: usize) {
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn server_named_queues_and_counts_in_declare_ok() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = q.name().as_str().to_string();
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!(name.len(), "amq.gen-".len() + 22);
    put_n(&ch, &name, 3).await;
    let _consumer = ch
        .basic_consume(
            name.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // 3 published, all 3 delivered to the consumer (unacked), so 0 ready.
    let again = ch
        .queue_declare(name.as_str().into(), passive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(again.message_count(), 0);
    assert_eq!(again.consumer_count(), 1);
    let text = expect_code(
        ch.queue_declare("missing".into(), passive(), FieldTable::default())
            .await,
        404,
    );
    assert_eq!(text, "NOT_FOUND - no queue 'missing' in vhost '/'");
}

#[tokio::test]
async fn redeclaration_must_be_equivalent() {
    let server = start().await;
    let conn = connect(&server).await;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
    let ch = channel(&conn).await;
    ch.queue_declare("q".into(), QueueDeclareOptions::default(), args.clone())
        .await
        .unwrap();
    // The same value in another integer width is equivalent.
    let mut wide = FieldTable::default();
    wide.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000));
    ch.queue_declare("q".into(), QueueDeclareOptions::default(), wide)
        .await
        .unwrap();
    // Unknown arguments are not compared.
    let mut extra = args.clone();
    extra.insert("x-custom".into(), AMQPValue::LongInt(1));
    ch.queue_declare("q".into(), QueueDeclareOptions::default(), extra)
        .await
        .unwrap();

    let text = expect_code(
        ch.queue_declare(
            "q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"
    );
    let ch = channel(&conn).await;
    let text = expect_code(
        ch.queue_declare(
            "q".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
    );
}

#[tokio::test]
async fn exclusive_queues_are_locked_to_their_connection_and_die_with_it() {
    let server = start().await;
    let owner = connect(&server).await;
    let other = connect(&server).await;
    let och = channel(&owner).await;
    och.queue_declare(
        "mine".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();

    let locked = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'mine' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.";
    let ch = channel(&other).await;
    assert_eq!(
        expect_code(
            ch.queue_declare("mine".into(), passive(), FieldTable::default())
                .await,
            405
        ),
        locked
    );
    let ch = channel(&other).await;
    expect_code(
        ch.basic_consume(
            "mine".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await,
        405,
    );
    let ch = channel(&other).await;
    expect_code(
        ch.basic_get("mine".into(), BasicGetOptions::default())
            .await,
        405,
    );
    let ch = channel(&other).await;
    expect_code(
        ch.queue_purge("mine".into(), QueuePurgeOptions::default())
            .await,
        405,
    );
    let ch = channel(&other).await;
    expect_code(
        ch.queue_delete("mine".into(), QueueDeleteOptions::default())
            .await,
        405,
    );

    // Other connections may still publish to it through the default exchange.
    let ch = channel(&other).await;
    put_n(&ch, "mine", 1).await;
    assert_eq!(
        och.queue_declare("mine".into(), passive(), FieldTable::default())
            .await
            .unwrap()
            .message_count(),
        1
    );

    owner.close(200, "bye".into()).await.unwrap();
    let ch = channel(&other).await;
    assert!(
        eventually(Duration::from_secs(2), || server
            .broker()
            .vhost("/")
            .unwrap()
            .queues()
            .iter()
            .all(|q| q.name() != "mine"))
        .await
    );
    expect_code(
        ch.queue_declare("mine".into(), passive(), FieldTable::default())
            .await,
        404,
    );
}

#[tokio::test]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "temp".into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Keep both consumers alive: lapin cancels a consumer when it is dropped.
    let _a = ch
        .basic_consume(
            "temp".into(),
            "a".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _b = ch
        .basic_consume(
            "temp".into(),
            "b".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_cancel("a".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    ch.queue_declare("temp".into(), passive(), FieldTable::default())
        .await
        .unwrap();
    ch.basic_cancel("b".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    expect_code(
        ch.queue_declare("temp".into(), passive(), FieldTable::default())
            .await,
        404,
    );
}

#[tokio::test]
async fn purge_and_delete_report_counts_and_honour_conditions() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "p".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    put_n(&ch, "p", 5).await;
    assert_eq!(
        ch.queue_purge("p".into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        5
    );
    put_n(&ch, "p", 2).await;
    let text = expect_code(
        ch.queue_delete(
            "p".into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - queue 'p' in vhost '/' not empty"
    );

    let ch = channel(&conn).await;
    let _c = ch
        .basic_consume(
            "p".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = channel(&conn).await;
    let text = expect_code(
        other
            .queue_delete(
                "p".into(),
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await,
        406,
    );
    assert_eq!(text, "PRECONDITION_FAILED - queue 'p' in vhost '/' in use");

    ch.queue_declare(
        "d".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    put_n(&ch, "d", 4).await;
    assert_eq!(
        ch.queue_delete("d".into(), QueueDeleteOptions::default())
            .await
            .unwrap(),
        4
    );
    // Deleting a missing queue succeeds with a count of 0, as in RabbitMQ.
    assert_eq!(
        ch.queue_delete("d".into(), QueueDeleteOptions::default())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn deleting_a_consumed_queue_cancels_its_consumers() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "gone".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            "gone".into(),
            "watcher".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = channel(&conn).await;
    other
        .queue_delete("gone".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // The server's basic.cancel ends the consumer stream.
    let end = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "consumer was not cancelled: {end:?}"
    );
    // The channel stays usable.
    ch.queue_declare(
        "next".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// The channel that deletes a queue gets `delete-ok` before the
/// `basic.cancel` of its own consumers on it, as from RabbitMQ (measured on
/// 3.10.8). py-amqp raises on a `basic.cancel` it has no callback for while
/// it waits for `delete-ok`; kombu's event-loop test deletes the queue it
/// consumes from this way.
#[tokio::test]
async fn the_deleting_channel_gets_delete_ok_before_its_consumers_cancel() {
    use crate::raw::RawClient;
    use amq_protocol::protocol::{AMQPClass, basic, queue};
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    for durable in [false, true] {
        let name = format!("deleted-while-consumed-{durable}");
        c.send_method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.clone().into(),
                durable,
                ..Default::default()
            })),
        )
        .await;
        assert!(matches!(
            c.next_method().await,
            (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
        ));
        c.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: name.clone().into(),
                consumer_tag: "mine".into(),
                ..Default::default()
            })),
        )
        .await;
        assert!(matches!(
            c.next_method().await,
            (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
        ));
        c.send_method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.into(),
                ..Default::default()
            })),
        )
        .await;
        let first = c.next_method().await;
        assert!(
            matches!(first, (1, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_)))),
            "durable {durable}: expected delete-ok first, got {first:?}"
        );
        match c.next_method().await {
            (1, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel))) => {
                assert_eq!(cancel.consumer_tag.as_str(), "mine");
            }
            other => panic!("durable {durable}: expected basic.cancel, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bind_and_unbind_change_routing() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "b".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "b".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Binding twice is idempotent.
    ch.queue_bind(
        "b".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "amq.direct".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"1",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.queue_unbind(
        "b".into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "amq.direct".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"2",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        ch.queue_declare("b".into(), passive(), FieldTable::default())
            .await
            .unwrap()
            .message_count(),
        1
    );
    let text = expect_code(
        ch.queue_bind(
            "b".into(),
            "nope".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await,
        404,
    );
    assert_eq!(text, "NOT_FOUND - no exchange 'nope' in vhost '/'");
}

/// RabbitMQ's shortcut applies only when both the queue name and the
/// routing key are empty: then the last declared queue is bound with its
/// name as the key. Naming the queue with an empty key binds the empty key
/// (kombu's `Queue('q', exchange=direct)` does this).
#[tokio::test]
async fn an_empty_routing_key_is_a_key_unless_the_queue_name_is_empty_too() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "named").await;
    let bind = |queue: &'static str| {
        ch.queue_bind(
            queue.into(),
            "amq.direct".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
    };
    let publish = |key: &'static str| {
        ch.basic_publish(
            "amq.direct".into(),
            key.into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
    };
    bind("named").await.unwrap();
    publish("").await.unwrap();
    assert_eq!(depth(&ch, "named").await, 1, "the empty key is bound");
    publish("named").await.unwrap();
    assert_eq!(depth(&ch, "named").await, 1, "key 'named' is not bound");
    bind("").await.unwrap();
    publish("named").await.unwrap();
    assert_eq!(
        depth(&ch, "named").await,
        2,
        "the shortcut binds key 'named'"
    );
}

#[tokio::test]
async fn reserved_queue_names_are_refused() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let text = expect_code(
        ch.queue_declare(
            "amq.mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'"
    );
}
