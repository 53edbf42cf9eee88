//! Publisher confirms and transactions.

use amq_protocol::protocol::{AMQPClass, basic, confirm};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use crate::common::*;
use crate::raw::*;

#[tokio::test]
async fn every_publish_is_confirmed_in_order() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "c".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..1000 {
        pending.push(
            ch.basic_publish(
                "".into(),
                if i % 10 == 0 { "unroutable" } else { "c" }.into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        assert!(matches!(p.await.unwrap(), Confirmation::Ack(_)));
    }
    assert_eq!(depth(&ch, "c").await, 900);
}

#[tokio::test]
async fn confirms_are_coalesced_with_multiple_and_cover_every_sequence_number() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await;
    c.next_method().await;
    // Publish 50 empty messages in one write.
    let mut burst = Vec::new();
    for _ in 0..50 {
        burst.extend(publish(1, "", "nowhere"));
        burst.extend(header_frame(1, 0, &[0, 0]));
    }
    c.send(&burst).await;
    let mut confirmed = 0u64;
    let mut acks = 0;
    while confirmed < 50 {
        match c.next_method().await {
            (1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                assert!(a.delivery_tag > confirmed);
                if !a.multiple {
                    assert_eq!(a.delivery_tag, confirmed + 1);
                }
                confirmed = a.delivery_tag;
                acks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(confirmed, 50);
    assert!(acks < 50, "{acks} acks for 50 publishes: not coalesced");
}

#[tokio::test]
async fn tx_commit_and_rollback_apply_to_publishes_and_acks() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "tx".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.tx_select().await.unwrap();
    ch.basic_publish(
        "".into(),
        "tx".into(),
        BasicPublishOptions::default(),
        b"1",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let observer = channel(&conn).await;
    assert_eq!(depth(&observer, "tx").await, 0, "published before commit");
    ch.tx_commit().await.unwrap();
    assert_eq!(depth(&observer, "tx").await, 1);
    ch.basic_publish(
        "".into(),
        "tx".into(),
        BasicPublishOptions::default(),
        b"2",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.tx_rollback().await.unwrap();
    assert_eq!(
        depth(&observer, "tx").await,
        1,
        "rolled-back publish was enqueued"
    );

    // An ack inside a rolled-back transaction is undone; committed, it sticks.
    let m = ch
        .basic_get("tx".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.tx_rollback().await.unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.tx_commit().await.unwrap();
    assert_eq!(
        server
            .broker()
            .vhost("/")
            .unwrap()
            .queue(0, "tx")
            .unwrap()
            .counts(),
        (0, 0)
    );
}

#[tokio::test]
async fn tx_and_confirm_modes_exclude_each_other() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.tx_select().await.unwrap();
    let text = expect_code(
        ch.confirm_select(ConfirmSelectOptions::default()).await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    );
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let text = expect_code(ch.tx_select().await, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );
    let ch = channel(&conn).await;
    let text = expect_code(ch.tx_commit().await, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
}
