//! The basic class: consume, get, ack/nack/reject, QoS, returns,
//! sender-selected distribution, user-id validation, and message bodies.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

use crate::common::*;

#[tokio::test]
async fn requeued_messages_return_to_their_original_position_marked_redelivered() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "order").await;
    for m in ["m1", "m2", "m3", "m4", "m5"] {
        put(&ch, "order", m.as_bytes()).await;
    }
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            "order".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut c).await);
    }
    // nack m2 and m4 with requeue, ack the rest.
    got[1]
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    got[3]
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let again1 = next(&mut c).await;
    let again2 = next(&mut c).await;
    assert_eq!(
        (again1.data.as_slice(), again1.redelivered),
        (&b"m2"[..], true)
    );
    assert_eq!(
        (again2.data.as_slice(), again2.redelivered),
        (&b"m4"[..], true)
    );
    assert!(!got[0].redelivered);
    // Reject without requeue drops it; ack multiple settles the rest.
    again2
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    again1
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    let q = ch
        .queue_declare(
            "order".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    assert_eq!(
        server.broker().vhost("/").unwrap().queues()[0].counts(),
        (0, 0)
    );
}

#[tokio::test]
async fn requeued_message_goes_ahead_of_newer_ones() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "q").await;
    put(&ch, "q", b"first").await;
    let first = ch
        .basic_get("q".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    put(&ch, "q", b"second").await;
    first
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let again = ch
        .basic_get("q".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.delivery.data, b"first");
    assert!(again.delivery.redelivered);
}

#[tokio::test]
async fn unknown_or_repeated_delivery_tags_are_precondition_failures() {
    let server = start().await;
    let conn = connect(&server).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    ch.basic_ack(99, BasicAckOptions::default()).await.unwrap();
    assert_eq!(
        next_error(&mut events).await,
        (
            406,
            "PRECONDITION_FAILED - unknown delivery tag 99".to_string()
        )
    );

    let ch = channel(&conn).await;
    declare(&ch, "q").await;
    put(&ch, "q", b"x").await;
    let m = ch
        .basic_get("q".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let tag = m.delivery.delivery_tag;
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    assert_eq!(
        next_error(&mut events).await,
        (
            406,
            format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
        )
    );
    // Only that channel was closed.
    assert!(conn.status().connected());
    channel(&conn).await;
}

#[tokio::test]
async fn basic_get_and_get_empty() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "g").await;
    assert!(
        ch.basic_get("g".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    put(&ch, "g", b"a").await;
    put(&ch, "g", b"b").await;
    let a = ch
        .basic_get("g".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.delivery.data, b"a");
    assert_eq!(a.message_count, 1);
    assert_eq!(a.delivery.routing_key.as_str(), "g");
}

#[tokio::test]
async fn per_consumer_prefetch_limits_unacked_deliveries() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "pf").await;
    for i in 0..10 {
        put(&ch, "pf", format!("{i}").as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            "pf".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d1 = next(&mut c).await;
    let _d2 = next(&mut c).await;
    assert!(quiet(&mut c).await, "prefetch 2 exceeded");
    d1.ack(BasicAckOptions::default()).await.unwrap();
    let d3 = next(&mut c).await;
    assert_eq!(d3.data, b"2");
    assert!(quiet(&mut c).await);
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_channels_consumers() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "a").await;
    declare(&ch, "b").await;
    for _ in 0..5 {
        put(&ch, "a", b"a").await;
        put(&ch, "b", b"b").await;
    }
    ch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut ca = ch
        .basic_consume(
            "a".into(),
            "ca".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut cb = ch
        .basic_consume(
            "b".into(),
            "cb".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // 3 from a (consumed first), none left for b until something is acked.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut ca).await);
    }
    assert!(quiet(&mut cb).await, "global prefetch exceeded");
    held.pop()
        .unwrap()
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let either = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::select! {
            d = ca.next() => d,
            d = cb.next() => d,
        }
    })
    .await
    .expect("a delivery after the ack");
    assert!(either.is_some());
}

#[tokio::test]
async fn no_ack_consumers_and_round_robin_between_consumers() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "rr").await;
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut c1 = ch
        .basic_consume("rr".into(), "one".into(), opts, FieldTable::default())
        .await
        .unwrap();
    let mut c2 = ch
        .basic_consume("rr".into(), "two".into(), opts, FieldTable::default())
        .await
        .unwrap();
    for i in 0..4 {
        put(&ch, "rr", format!("{i}").as_bytes()).await;
    }
    let a: Vec<Vec<u8>> = vec![next(&mut c1).await.data, next(&mut c1).await.data];
    let b: Vec<Vec<u8>> = vec![next(&mut c2).await.data, next(&mut c2).await.data];
    assert_eq!(a, vec![b"0".to_vec(), b"2".to_vec()]);
    assert_eq!(b, vec![b"1".to_vec(), b"3".to_vec()]);
}

#[tokio::test]
async fn consumer_tags_exclusive_consumers_and_tag_reuse() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "ex").await;
    let c = ch
        .basic_consume(
            "ex".into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(c.tag().as_str().starts_with("amq.ctag-"), "{}", c.tag());
    let other = channel(&conn).await;
    let text = expect_code(
        other
            .basic_consume(
                "ex".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - queue 'ex' in vhost '/' in exclusive use"
    );
    // Reusing a tag on one channel is a connection error.
    declare(&ch, "t").await;
    ch.basic_consume(
        "t".into(),
        "dup".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let text = expect_code(
        ch.basic_consume(
            "t".into(),
            "dup".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await,
        530,
    );
    assert_eq!(text, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'");
}

#[tokio::test]
async fn cancel_stops_deliveries_and_unacked_messages_return_on_channel_close() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "c").await;
    let mut c = ch
        .basic_consume(
            "c".into(),
            "tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    put(&ch, "c", b"held").await;
    let held = next(&mut c).await;
    assert!(!held.redelivered);
    ch.basic_cancel("tag".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    put(&ch, "c", b"after-cancel").await;
    ch.close(200, "done".into()).await.unwrap();
    // The unacked message is back, ahead of the newer one, redelivered.
    let ch2 = channel(&conn).await;
    let m = ch2
        .basic_get("c".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.delivery.data.as_slice(), m.delivery.redelivered),
        (&b"held"[..], true)
    );
    let m = ch2
        .basic_get("c".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"after-cancel");
}

#[tokio::test]
async fn recover_requeues_unacked_deliveries() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "r").await;
    put(&ch, "r", b"x").await;
    let mut c = ch
        .basic_consume(
            "r".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = next(&mut c).await;
    assert!(!first.redelivered);
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let again = next(&mut c).await;
    assert!(again.redelivered);
    assert_eq!(again.data, b"x");
}

#[tokio::test]
async fn mandatory_unroutable_messages_are_returned_with_312() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            "nobody".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost?",
            BasicProperties::default().with_message_id("m-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let returned = confirm.take_message().expect("a basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(returned.delivery.routing_key.as_str(), "nobody");
    assert_eq!(returned.delivery.data, b"lost?");
    assert_eq!(
        returned
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m-1")
    );
}

#[tokio::test]
async fn cc_and_bcc_add_routing_keys_and_bcc_is_stripped() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    for q in ["main", "cc", "bcc"] {
        declare(&ch, q).await;
    }
    let keys = |ks: &[&str]| {
        AMQPValue::FieldArray(FieldArray::from(
            ks.iter()
                .map(|k| AMQPValue::LongString(LongString::from(*k)))
                .collect::<Vec<_>>(),
        ))
    };
    let mut headers = FieldTable::default();
    headers.insert("CC".into(), keys(&["cc"]));
    headers.insert("BCC".into(), keys(&["bcc"]));
    headers.insert(
        "other".into(),
        AMQPValue::LongString(LongString::from("kept")),
    );
    ch.basic_publish(
        "".into(),
        "main".into(),
        BasicPublishOptions::default(),
        b"hi",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap();
    for q in ["main", "cc", "bcc"] {
        let m = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("nothing in {q}"));
        let h = m.delivery.properties.headers().clone().unwrap();
        assert!(h.inner().contains_key("CC"), "{q}: CC kept");
        assert!(!h.inner().contains_key("BCC"), "{q}: BCC stripped");
        assert!(h.inner().contains_key("other"));
    }
}

#[tokio::test]
async fn user_id_must_match_the_authenticated_user() {
    let server = start().await;
    let conn = connect(&server).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    declare(&ch, "u").await;
    ch.basic_publish(
        "".into(),
        "u".into(),
        BasicPublishOptions::default(),
        b"ok",
        BasicProperties::default().with_user_id("guest".into()),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "u".into(),
        BasicPublishOptions::default(),
        b"forged",
        BasicProperties::default().with_user_id("mallory".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        next_error(&mut events).await,
        (
            406,
            "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
                .to_string()
        )
    );
    let ch = channel(&conn).await;
    let q = ch
        .queue_declare(
            "u".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 1);
}

#[tokio::test]
async fn bodies_from_empty_to_larger_than_a_frame_arrive_intact() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "sizes").await;
    for size in [0usize, 1, 131_064, 131_065, 1 << 20, 5_000_000] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        put(&ch, "sizes", &body).await;
        let got = ch
            .basic_get("sizes".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("message");
        assert_eq!(got.delivery.data.len(), size);
        assert!(got.delivery.data == body, "body of {size} bytes differs");
    }
}

#[tokio::test]
async fn a_128_mib_body_round_trips() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "big").await;
    let size = 128 << 20;
    let body: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
    put(&ch, "big", &body).await;
    let got = ch
        .basic_get("big".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("message");
    assert_eq!(got.delivery.data.len(), size);
    assert!(got.delivery.data == body);
}

#[tokio::test]
async fn invalid_publish_properties_are_refused_as_rabbitmq_does() {
    let server = start().await;
    let conn = connect(&server).await;
    let mut events = conn.events_listener();
    let cases: Vec<(BasicProperties, &str)> = vec![
        (
            BasicProperties::default().with_expiration("abc".into()),
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
        ),
        (
            BasicProperties::default().with_expiration("-1".into()),
            "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}",
        ),
        (
            BasicProperties::default().with_delivery_mode(3),
            "PRECONDITION_FAILED - invalid message: {delivery_mode_unknown,3}",
        ),
        (
            BasicProperties::default().with_headers({
                let mut h = FieldTable::default();
                h.insert("CC".into(), AMQPValue::LongString(LongString::from("k2")));
                h
            }),
            "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}",
        ),
    ];
    for (props, expected) in cases {
        let ch = channel(&conn).await;
        ch.basic_publish(
            "".into(),
            "any".into(),
            BasicPublishOptions::default(),
            b"x",
            props,
        )
        .await
        .unwrap();
        assert_eq!(next_error(&mut events).await, (406, expected.to_string()));
    }
}

#[tokio::test]
async fn unbinding_what_does_not_exist_succeeds() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "q").await;
    ch.queue_unbind(
        "q".into(),
        "amq.direct".into(),
        "never".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_unbind(
        "missing-q".into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_unbind(
        "q".into(),
        "missing-x".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_unbind(
        "amq.fanout".into(),
        "missing-x".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}
