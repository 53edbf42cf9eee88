//! Queue features through a real client: retry chains with delivery limits
//! and delayed retry, priorities under concurrent publishers, expiry of
//! messages wherever they sit (paged out included), single active consumer
//! failover, direct reply-to, policies — and what of it survives a restart.
//!
//! The pika suite (tests/python) covers the argument texts and the exact
//! `x-death` headers against RabbitMQ; these tests cover what needs timing,
//! concurrency or a restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use warren::store::PolicyRecord;

use crate::common::*;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn int(i: i64) -> AMQPValue {
    AMQPValue::LongLongInt(i)
}

async fn declare_with(ch: &Channel, q: &str, durable: bool, arguments: FieldTable) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        arguments,
    )
    .await
    .unwrap();
}

/// A fanout dead-letter exchange `x` feeding queue `q`.
async fn parking(ch: &Channel, x: &str, q: &str, durable: bool) {
    ch.exchange_declare(
        x.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_with(ch, q, durable, FieldTable::default()).await;
    ch.queue_bind(
        q.into(),
        x.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn publish(ch: &Channel, q: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap();
}

fn header<'a>(d: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref()?.inner().get(name)
}

fn int_header(d: &Delivery, name: &str) -> Option<i64> {
    match header(d, name)? {
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        other => panic!("{name} is {other:?}"),
    }
}

/// The `(reason, queue, count)` of each `x-death` entry, newest first.
fn deaths(d: &Delivery) -> Vec<(String, String, i64)> {
    let Some(AMQPValue::FieldArray(a)) = header(d, "x-death") else {
        return Vec::new();
    };
    a.as_slice()
        .iter()
        .map(|v| {
            let AMQPValue::FieldTable(t) = v else {
                panic!("x-death entry {v:?}")
            };
            let s = |k: &str| match t.inner().get(k) {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => panic!("{k}: {other:?}"),
            };
            let count = match t.inner().get("count") {
                Some(AMQPValue::LongLongInt(i)) => *i,
                other => panic!("count: {other:?}"),
            };
            (s("reason"), s("queue"), count)
        })
        .collect()
}

async fn get(ch: &Channel, q: &str) -> Option<Delivery> {
    ch.basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .map(|m| m.delivery)
}

/// Poll `q` until a message is there (dead letters arrive asynchronously).
async fn get_within(ch: &Channel, q: &str, timeout: Duration) -> Delivery {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(d) = get(ch, q).await {
            return d;
        }
        assert!(Instant::now() < deadline, "nothing arrived in {q}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_retry_chain_delays_each_retry_and_parks_the_message_after_its_delivery_limit() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    parking(&ch, "retry.dlx", "retry.parking", false).await;
    declare_with(
        &ch,
        "retry.work",
        false,
        args(&[
            ("x-delivery-limit", int(3)),
            ("x-dead-letter-exchange", text("retry.dlx")),
            ("x-delayed-retry-type", text("failed")),
            ("x-delayed-retry-min", int(100)),
            ("x-delayed-retry-max", int(250)),
        ]),
    )
    .await;
    let mut c = ch
        .basic_consume(
            "retry.work".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish(&ch, "retry.work", b"poison", BasicProperties::default()).await;

    let mut counts = Vec::new();
    let mut gaps = Vec::new();
    let mut last = Instant::now();
    for attempt in 0..4 {
        let d = next(&mut c).await;
        gaps.push(last.elapsed());
        last = Instant::now();
        counts.push(int_header(&d, "x-delivery-count"));
        assert_eq!(d.redelivered, attempt > 0);
        // Both reject and nack count as failed deliveries.
        if attempt % 2 == 0 {
            d.reject(BasicRejectOptions { requeue: true })
                .await
                .unwrap();
        } else {
            d.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
        }
    }
    assert_eq!(counts, vec![None, Some(1), Some(2), Some(3)]);
    // min × delivery count, capped at max.
    for (gap, expected) in gaps[1..].iter().zip([100u64, 200, 250]) {
        let ms = gap.as_millis() as u64;
        assert!(ms + 5 >= expected && ms < expected + 400, "{gaps:?}");
    }
    let parked = get_within(&ch, "retry.parking", Duration::from_secs(2)).await;
    assert_eq!(parked.data, b"poison");
    assert_eq!(
        deaths(&parked),
        vec![("delivery_limit".into(), "retry.work".into(), 1)]
    );
    assert_eq!(int_header(&parked, "x-delivery-count"), None);
    assert!(quiet(&mut c).await, "the poison message came back");
    assert_eq!(depth(&ch, "retry.work").await, 0);
}

#[tokio::test]
async fn priority_order_holds_under_concurrent_publishers() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare_with(&ch, "prio", false, args(&[("x-max-priority", int(10))])).await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(connect(&server).await);
    }
    let publishers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(p, conn)| {
            tokio::spawn(async move {
                let ch = channel(&conn).await;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .unwrap();
                for i in 0..150u8 {
                    let priority = i % 13; // 11 and 12 count as 10
                    let body = format!("{p}:{i}:{priority}");
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            "prio".into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            BasicProperties::default().with_priority(priority),
                        )
                        .await
                        .unwrap();
                    if i == 149 {
                        assert!(matches!(confirm.await.unwrap(), Confirmation::Ack(_)));
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let mut got = Vec::new();
    while let Some(d) = get(&ch, "prio").await {
        let body = String::from_utf8(d.data).unwrap();
        let f: Vec<u32> = body.split(':').map(|x| x.parse().unwrap()).collect();
        got.push((f[0], f[1], f[2].min(10)));
    }
    assert_eq!(got.len(), 600);
    assert!(
        got.windows(2).all(|w| w[0].2 >= w[1].2),
        "not highest priority first"
    );
    // FIFO within one priority, per publisher.
    let mut last: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for (p, i, prio) in got {
        if let Some(prev) = last.insert((p, prio), i) {
            assert!(prev < i, "publisher {p} priority {prio}: {prev} before {i}");
        }
    }
}

#[tokio::test]
async fn messages_expire_on_time_wherever_they_sit_even_paged_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    // A window of 4: most of the queue lives in the store.
    config.storage.queue_memory_messages = 4;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    parking(&ch, "exp.dlx", "exp.dead", false).await;
    declare_with(
        &ch,
        "exp.q",
        false,
        args(&[("x-dead-letter-exchange", text("exp.dlx"))]),
    )
    .await;
    for i in 0..40 {
        let expiration = if i % 2 == 1 { "150" } else { "60000" };
        publish(
            &ch,
            "exp.q",
            format!("m{i}").as_bytes(),
            BasicProperties::default().with_expiration(expiration.into()),
        )
        .await;
    }
    let started = Instant::now();
    let mut expired = Vec::new();
    while expired.len() < 20 {
        let d = get_within(&ch, "exp.dead", Duration::from_secs(3)).await;
        assert_eq!(
            deaths(&d),
            vec![("expired".into(), "exp.q".into(), 1)],
            "{:?}",
            d.data
        );
        expired.push(String::from_utf8(d.data).unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    expired.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    let odd: Vec<String> = (0..40)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(expired, odd);
    // The long-lived ones are all still there, in order.
    let mut left = Vec::new();
    while let Some(d) = get(&ch, "exp.q").await {
        left.push(String::from_utf8(d.data).unwrap());
    }
    let even: Vec<String> = (0..40)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(left, even);
}

#[tokio::test]
async fn single_active_consumer_fails_over_with_its_unacked_messages() {
    let server = start().await;
    let conn = connect(&server).await;
    let setup = channel(&conn).await;
    declare_with(
        &setup,
        "sac",
        false,
        args(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let first = channel(&conn).await;
    first
        .basic_qos(2, BasicQosOptions::default())
        .await
        .unwrap();
    let mut a = first
        .basic_consume(
            "sac".into(),
            "a".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let second = channel(&conn).await;
    let mut b = second
        .basic_consume(
            "sac".into(),
            "b".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..5 {
        put(&setup, "sac", format!("m{i}").as_bytes()).await;
    }
    let d0 = next(&mut a).await;
    let d1 = next(&mut a).await;
    assert_eq!((&d0.data[..], &d1.data[..]), (&b"m0"[..], &b"m1"[..]));
    assert!(quiet(&mut b).await, "the standby consumer got a message");
    // The active consumer goes: the standby takes over, from the start.
    first.close(200, "bye".into()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = next(&mut b).await;
        got.push((String::from_utf8(d.data.clone()).unwrap(), d.redelivered));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        got,
        vec![
            ("m0".into(), true),
            ("m1".into(), true),
            ("m2".into(), false),
            ("m3".into(), false),
            ("m4".into(), false)
        ]
    );
}

#[tokio::test]
async fn direct_reply_to_carries_an_rpc_round_trip() {
    let server = start().await;
    let service_conn = connect(&server).await;
    let service = channel(&service_conn).await;
    declare(&service, "rpc").await;
    let mut requests = service
        .basic_consume(
            "rpc".into(),
            "service".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let client_conn = connect(&server).await;
    let client = channel(&client_conn).await;
    let mut replies = client
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for n in 1..=3u32 {
        publish(
            &client,
            "rpc",
            n.to_string().as_bytes(),
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(format!("c{n}").into()),
        )
        .await;
        let req = next(&mut requests).await;
        let reply_to = req.properties.reply_to().clone().unwrap();
        assert!(reply_to.as_str().starts_with("amq.rabbitmq.reply-to."));
        let n: u32 = std::str::from_utf8(&req.data).unwrap().parse().unwrap();
        publish(
            &service,
            reply_to.as_str(),
            (n * n).to_string().as_bytes(),
            BasicProperties::default()
                .with_correlation_id(req.properties.correlation_id().clone().unwrap()),
        )
        .await;
        req.ack(BasicAckOptions::default()).await.unwrap();
        let reply = next(&mut replies).await;
        assert_eq!(reply.data, (n * n).to_string().as_bytes());
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some(format!("c{n}").as_str())
        );
    }
    // The hidden reply queue goes with its channel.
    let names = |s: &warren::Server| -> Vec<String> {
        s.broker()
            .vhost("/")
            .unwrap()
            .queues()
            .iter()
            .map(|q| q.name().to_string())
            .filter(|n| n.starts_with("amq.rabbitmq.reply-to"))
            .collect()
    };
    assert_eq!(names(&server).len(), 1);
    client.close(200, "done".into()).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || names(&server).is_empty()).await);
}

#[tokio::test]
async fn delivery_counts_and_retry_delays_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare_with(
        &ch,
        "durable.retry",
        true,
        args(&[
            ("x-queue-type", text("quorum")),
            ("x-delayed-retry-type", text("all")),
            ("x-delayed-retry-min", int(1500)),
        ]),
    )
    .await;
    // Quorum queues keep every message, persistent or not.
    put(&ch, "durable.retry", b"job").await;
    let d = ch
        .basic_get("durable.retry".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    d.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let rejected_at = Instant::now();
    assert!(get(&ch, "durable.retry").await.is_none(), "not delayed");
    drop(ch);
    drop(conn);
    server.shutdown().await;

    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    if rejected_at.elapsed() < Duration::from_millis(1300) {
        assert!(
            get(&ch, "durable.retry").await.is_none(),
            "the retry delay was lost in the restart"
        );
    }
    let d = get_within(&ch, "durable.retry", Duration::from_secs(3)).await;
    assert!(rejected_at.elapsed() >= Duration::from_millis(1450));
    assert_eq!(d.data, b"job");
    assert!(d.redelivered);
    assert_eq!(int_header(&d, "x-delivery-count"), Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn queue_ttl_expiry_continues_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A window of 4: after the restart most messages are still on disk.
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 4;
    let server = start_with(config.clone()).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    parking(&ch, "ttl.dlx", "ttl.dead", true).await;
    declare_with(
        &ch,
        "ttl.q",
        true,
        args(&[
            ("x-message-ttl", int(800)),
            ("x-dead-letter-exchange", text("ttl.dlx")),
        ]),
    )
    .await;
    for i in 0..30 {
        publish(
            &ch,
            "ttl.q",
            format!("t{i:02}").as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    }
    assert_eq!(depth(&ch, "ttl.q").await, 30);
    drop(ch);
    drop(conn);
    server.shutdown().await;

    // Nobody consumes after the restart: the timer still expires them.
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let mut dead = Vec::new();
    for _ in 0..30 {
        let d = get_within(&ch, "ttl.dead", Duration::from_secs(3)).await;
        assert_eq!(deaths(&d), vec![("expired".into(), "ttl.q".into(), 1)]);
        dead.push(String::from_utf8(d.data).unwrap());
    }
    let expected: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    assert_eq!(dead, expected);
    assert_eq!(depth(&ch, "ttl.q").await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn policies_apply_to_matching_queues_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    parking(&ch, "pol.dlx", "pol.dead", true).await;
    let vhost = server.broker().vhost("/").unwrap();
    let policy = PolicyRecord {
        vhost: "/".into(),
        name: "short-lived".into(),
        pattern: "^pol\\.work".into(),
        apply_to: "queues".into(),
        priority: 1,
        definition: serde_json::json!({
            "message-ttl": 100,
            "dead-letter-exchange": "pol.dlx",
            "max-length": 1000
        })
        .as_object()
        .unwrap()
        .clone(),
    };
    // Applies to a queue declared before the policy...
    declare_with(&ch, "pol.work.a", true, FieldTable::default()).await;
    let _ = vhost.set_policy(policy.clone()).unwrap();
    // ...and to one declared after; its own, longer TTL loses (lower wins).
    declare_with(
        &ch,
        "pol.work.b",
        true,
        args(&[("x-message-ttl", int(60_000))]),
    )
    .await;
    declare_with(&ch, "other", true, FieldTable::default()).await;
    for q in ["pol.work.a", "pol.work.b", "other"] {
        put(&ch, q, q.as_bytes()).await;
    }
    let mut dead = vec![
        String::from_utf8(
            get_within(&ch, "pol.dead", Duration::from_secs(2))
                .await
                .data,
        )
        .unwrap(),
        String::from_utf8(
            get_within(&ch, "pol.dead", Duration::from_secs(2))
                .await
                .data,
        )
        .unwrap(),
    ];
    dead.sort();
    assert_eq!(dead, vec!["pol.work.a", "pol.work.b"]);
    assert_eq!(depth(&ch, "other").await, 1);
    let q = vhost.queue(0, "pol.work.b").unwrap();
    assert_eq!(q.settings().policy.as_deref(), Some("short-lived"));
    assert_eq!(q.settings().message_ttl, Some(100));
    // Nothing may keep the store open across the restart.
    drop((q, vhost, ch, conn));
    server.shutdown().await;

    let server = start_with(on_disk(dir.path())).await;
    let vhost = server.broker().vhost("/").unwrap();
    assert_eq!(vhost.policies(), vec![policy]);
    let q = vhost.queue(0, "pol.work.a").unwrap();
    assert_eq!(q.settings().max_length, Some(1000));
    assert!(vhost.clear_policy("short-lived").unwrap());
    assert_eq!(q.settings().message_ttl, None);
    let q = vhost.queue(0, "pol.work.b").unwrap();
    assert_eq!(q.settings().message_ttl, Some(60_000));
    drop((q, vhost));
    server.shutdown().await;
}

#[tokio::test]
async fn a_priority_queue_comes_back_in_priority_order_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 8;
    let server = start_with(config.clone()).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_with(&ch, "pq", true, args(&[("x-max-priority", int(3))])).await;
    for i in 0..60u8 {
        ch.basic_publish(
            "".into(),
            "pq".into(),
            BasicPublishOptions::default(),
            format!("{}:{i}", i % 4).as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_priority(i % 4),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    drop(ch);
    drop(conn);
    server.shutdown().await;

    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    assert_eq!(depth(&ch, "pq").await, 60);
    let mut got = Vec::new();
    while let Some(d) = get(&ch, "pq").await {
        let body = String::from_utf8(d.data).unwrap();
        let (p, i) = body.split_once(':').unwrap();
        got.push((p.parse::<u8>().unwrap(), i.parse::<u8>().unwrap()));
    }
    let mut expected: Vec<(u8, u8)> = (0..60u8).map(|i| (i % 4, i)).collect();
    expected.sort_by_key(|(p, i)| (std::cmp::Reverse(*p), *i));
    assert_eq!(got, expected);
    server.shutdown().await;
}

/// Transient messages of a priority queue past its window are paged per
/// priority level, in batches; they come back by priority, then in order.
#[tokio::test]
async fn a_paged_transient_priority_queue_drains_in_priority_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_disk(dir.path());
    config.storage.queue_memory_messages = 8;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare_with(&ch, "tpq", false, args(&[("x-max-priority", int(3))])).await;
    let pad = "p".repeat(500);
    for i in 0..400u16 {
        let priority = (i % 4) as u8;
        ch.basic_publish(
            "".into(),
            "tpq".into(),
            BasicPublishOptions::default(),
            format!("{priority}:{i}:{pad}").as_bytes(),
            BasicProperties::default().with_priority(priority),
        )
        .await
        .unwrap();
    }
    assert_eq!(depth(&ch, "tpq").await, 400);
    let mut got = Vec::new();
    while let Some(d) = get(&ch, "tpq").await {
        let body = String::from_utf8(d.data).unwrap();
        let mut parts = body.split(':');
        let p: u8 = parts.next().unwrap().parse().unwrap();
        let i: u16 = parts.next().unwrap().parse().unwrap();
        got.push((p, i));
    }
    let mut expected: Vec<(u8, u16)> = (0..400u16).map(|i| ((i % 4) as u8, i)).collect();
    expected.sort_by_key(|(p, i)| (std::cmp::Reverse(*p), *i));
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "out of order: {:?}…", &got[..8]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_policy_can_give_an_exchange_its_alternate_exchange() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    parking(&ch, "pol.ae", "pol.unroutable", false).await;
    ch.exchange_declare(
        "pol.x".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let vhost = server.broker().vhost("/").unwrap();
    let _ = vhost
        .set_policy(PolicyRecord {
            vhost: "/".into(),
            name: "ae".into(),
            pattern: "^pol\\.x$".into(),
            apply_to: "exchanges".into(),
            priority: 0,
            definition: serde_json::json!({"alternate-exchange": "pol.ae"})
                .as_object()
                .unwrap()
                .clone(),
        })
        .unwrap();
    ch.basic_publish(
        "pol.x".into(),
        "nowhere".into(),
        BasicPublishOptions::default(),
        b"lost?",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let d = get_within(&ch, "pol.unroutable", Duration::from_secs(2)).await;
    assert_eq!(d.data, b"lost?");
    assert!(vhost.clear_policy("ae").unwrap());
    drop(vhost);
}

/// A delivery left unacknowledged past the consumer timeout closes its
/// channel with 406, RabbitMQ's text, and the message is ready again.
#[tokio::test]
async fn a_delivery_unacked_past_the_consumer_timeout_closes_the_channel_and_requeues() {
    use futures_lite::StreamExt;
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(1000));
    ch.queue_declare("slowpoke".into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    put(&ch, "slowpoke", b"take your time").await;
    let consumer_ch = channel(&conn).await;
    let mut events = conn.events_listener();
    let mut deliveries = consumer_ch
        .basic_consume(
            "slowpoke".into(),
            "never-acks".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = deliveries.next().await.unwrap().unwrap();
    assert!(!first.redelivered);
    let started = std::time::Instant::now();
    let (code, text) = next_error(&mut events).await;
    assert_eq!(code, 406, "{text}");
    assert!(
        text.starts_with(&format!(
            "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. Timeout value used: 1000 ms",
            consumer_ch.id()
        )),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let queue = server
        .broker()
        .vhost("/")
        .unwrap()
        .queue(0, "slowpoke")
        .unwrap();
    assert!(eventually(Duration::from_secs(2), || queue.message_count() == 1).await);
    let again = ch
        .basic_get("slowpoke".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is back");
    assert!(again.delivery.redelivered);
}

/// The `consumer-timeout` policy key sets the timeout too, and it covers
/// `basic.get` deliveries as well as consumers'.
#[tokio::test]
async fn a_consumer_timeout_policy_times_out_an_unacked_basic_get() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "pol.slow".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let vhost = server.broker().vhost("/").unwrap();
    let _ = vhost
        .set_policy(PolicyRecord {
            vhost: "/".into(),
            name: "slow".into(),
            pattern: "^pol\\.slow$".into(),
            apply_to: "queues".into(),
            priority: 0,
            definition: serde_json::json!({"consumer-timeout": 1000})
                .as_object()
                .unwrap()
                .clone(),
        })
        .unwrap();
    put(&ch, "pol.slow", b"got, never acked").await;
    let getter = channel(&conn).await;
    let mut events = conn.events_listener();
    let got = getter
        .basic_get("pol.slow".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    assert!(!got.delivery.redelivered);
    let (code, text) = next_error(&mut events).await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("Timeout value used: 1000 ms"), "{text}");
    let queue = vhost.queue(0, "pol.slow").unwrap();
    assert!(eventually(Duration::from_secs(2), || queue.message_count() == 1).await);
}
