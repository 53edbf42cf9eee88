//! Super streams through lapin: a partitioned stream declared in one call,
//! routed by the stream clients' hash, read by a consumer group whose
//! members share the partitions, take over a member's partitions when it
//! goes, and survive a broker restart with the group's position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use parking_lot::Mutex;
use warren::exchange::super_stream::partition_of;

use crate::common::{channel, connect, on_disk, start_with};

const PARTITIONS: usize = 4;

async fn declare_super_stream(ch: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert("x-partitions".into(), AMQPValue::LongInt(PARTITIONS as i32));
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Custom("x-super-stream".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
}

async fn publish(ch: &Channel, exchange: &str, keys: &[String]) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for k in keys {
        ch.basic_publish(
            exchange.into(),
            k.as_str().into(),
            BasicPublishOptions::default(),
            k.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

/// What one member received: (partition, body) in arrival order.
type Received = Arc<Mutex<Vec<(usize, String)>>>;

/// A group member: its own connection, one consumer per partition, acking
/// each delivery.
async fn member(url: &str, exchange: &str, group: &str) -> (Connection, Received) {
    let conn = Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let got: Received = Arc::default();
    for p in 0..PARTITIONS {
        let ch = channel(&conn).await;
        ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-consumer-group".into(),
            AMQPValue::LongString(group.into()),
        );
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut consumer = ch
            .basic_consume(
                format!("{exchange}-{p}").as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .unwrap();
        let got = got.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                got.lock()
                    .push((p, String::from_utf8_lossy(&d.data).into_owned()));
                if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        });
    }
    (conn, got)
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn bodies(r: &Received) -> BTreeSet<String> {
    r.lock().iter().map(|(_, b)| b.clone()).collect()
}

fn partitions(r: &Received) -> BTreeSet<usize> {
    r.lock().iter().map(|(p, _)| *p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_shares_partitions_takes_over_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let url = server.amqp_url();
    let conn = connect(&server).await;
    declare_super_stream(&channel(&conn).await, "orders").await;

    let (a_conn, a) = member(&url, "orders", "billing").await;
    let (_b_conn, b) = member(&url, "orders", "billing").await;
    let first = keys("first", 400);
    publish(&channel(&conn).await, "orders", &first).await;
    until("the first batch", || {
        bodies(&a).len() + bodies(&b).len() == 400
    })
    .await;
    // Each message went to the partition the stream clients' hash picks,
    // read by exactly one member; the members split the partitions.
    for r in [&a, &b] {
        for (p, body) in r.lock().iter() {
            assert_eq!(*p, partition_of(body, PARTITIONS), "{body}");
        }
    }
    assert!(bodies(&a).is_disjoint(&bodies(&b)));
    assert_eq!(partitions(&a).len(), 2, "{:?}", partitions(&a));
    assert_eq!(partitions(&b).len(), 2, "{:?}", partitions(&b));

    // A leaves: B takes over every partition, from where the group was.
    a_conn.close(200, "bye".into()).await.unwrap();
    let second = keys("second", 400);
    publish(&channel(&conn).await, "orders", &second).await;
    until("the takeover", || {
        second.iter().all(|k| bodies(&b).contains(k))
    })
    .await;
    let b_seen: Vec<String> = b.lock().iter().map(|(_, x)| x.clone()).collect();
    assert!(
        !first
            .iter()
            .any(|k| bodies(&a).contains(k) && b_seen.contains(k)),
        "B got again what A had acknowledged"
    );
    assert_eq!(partitions(&b).len(), PARTITIONS);

    // A restart: the group's position is kept; a new member reads only
    // what was published after.
    drop(_b_conn);
    drop(conn);
    server.shutdown().await;
    let server = start_with(on_disk(dir.path())).await;
    let url = server.amqp_url();
    let (_c_conn, c) = member(&url, "orders", "billing").await;
    let conn = connect(&server).await;
    let third = keys("third", 100);
    publish(&channel(&conn).await, "orders", &third).await;
    until("the batch after the restart", || bodies(&c).len() >= 100).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_partition: BTreeMap<usize, usize> =
        c.lock().iter().fold(BTreeMap::new(), |mut m, (p, _)| {
            *m.entry(*p).or_default() += 1;
            m
        });
    assert_eq!(
        bodies(&c),
        third.iter().cloned().collect(),
        "{per_partition:?}"
    );
    server.shutdown().await;
}
