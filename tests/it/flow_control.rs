//! Flow control: a queue whose consumers cannot keep up holds back the
//! connections publishing to it (they stop being read), so its backlog stays
//! bounded; publishers to other queues carry on, and a connection that
//! consumes from the queue itself is never held back by it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use warren::Config;

use crate::common::*;

fn with_flow(limit: usize) -> Config {
    let mut c = Config::ephemeral();
    c.limits.queue_flow_messages = limit;
    c
}

/// Publish `n` 16-byte messages to queue `q` without waiting for anything.
async fn flood(ch: &Channel, q: &str, n: usize) {
    for _ in 0..n {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            &[0u8; 16],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
}

/// A consumer with prefetch `prefetch` that acks each message after
/// `delay`, until `stop`; returns how many it acked.
fn slow_consumer(
    ch: Channel,
    q: &'static str,
    delay: Duration,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let mut deliveries = ch
            .basic_consume(
                q.into(),
                "slow".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        while let Some(Ok(d)) = deliveries.next().await {
            tokio::time::sleep(delay).await;
            d.ack(BasicAckOptions::default()).await.unwrap();
            acked.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_sets_the_pace_and_the_backlog_stays_bounded() {
    let server = start_with(with_flow(200)).await;
    let consumer_conn = connect(&server).await;
    let publisher_conn = connect(&server).await;
    let ch = channel(&publisher_conn).await;
    declare(&ch, "slow").await;
    let acked = Arc::new(AtomicUsize::new(0));
    let consumer = slow_consumer(
        channel(&consumer_conn).await,
        "slow",
        Duration::from_micros(200),
        acked.clone(),
    );
    let total = 5000;
    let publishing = tokio::spawn(async move {
        flood(&ch, "slow", total).await;
        ch
    });
    let vhost = server.broker().vhost("/").unwrap();
    let queue = vhost.queue(0, "slow").unwrap();
    let (mut deepest, mut saw_flow) = (0, false);
    while acked.load(Ordering::Relaxed) < total {
        deepest = deepest.max(queue.message_count());
        saw_flow |= server
            .broker()
            .connections()
            .iter()
            .any(|c| c.flow.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    publishing.await.unwrap();
    consumer.abort();
    assert!(saw_flow, "the publisher was never held back");
    // 200 ready at most, plus what one slice of a read (1,024 frames, three
    // per publish) had already brought in.
    assert!(deepest < 1000, "the backlog grew to {deepest} messages");
    let metrics = server.broker().metrics.render();
    let pauses = metrics
        .lines()
        .find(|l| l.starts_with("warren_connection_flow_pauses_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(pauses >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_to_healthy_queues_are_not_held_back() {
    let server = start_with(with_flow(100)).await;
    let (stalled_conn, blocked_conn, healthy_conn) = (
        connect(&server).await,
        connect(&server).await,
        connect(&server).await,
    );
    let blocked = channel(&blocked_conn).await;
    declare(&blocked, "stalled").await;
    declare(&blocked, "healthy").await;
    // A consumer that takes 10 messages and never acks: "stalled" cannot
    // drain.
    let stalled = channel(&stalled_conn).await;
    stalled
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let _never_acked = stalled
        .basic_consume(
            "stalled".into(),
            "stuck".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The client finishes writing long before the broker reads it all:
    // what it has not read waits in the socket buffers.
    let held = tokio::spawn(async move {
        flood(&blocked, "stalled", 3000).await;
        blocked
    });
    let vhost = server.broker().vhost("/").unwrap();
    let stalled_queue = vhost.queue(0, "stalled").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || stalled_queue.is_in_flow()).await,
        "the stalled queue never entered flow"
    );
    // Another connection publishing to another queue is not slowed.
    let healthy = channel(&healthy_conn).await;
    healthy
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..1000 {
            healthy
                .basic_publish(
                    "".into(),
                    "healthy".into(),
                    BasicPublishOptions::default(),
                    b"ok",
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    })
    .await;
    assert!(
        confirmed.is_ok(),
        "a healthy queue's publisher was held back"
    );
    let depth = stalled_queue.message_count();
    assert!(
        depth < 1500,
        "the flood was not held back: {depth} messages"
    );
    // The stalled consumer goes away: the queue has nobody to wait for and
    // becomes a buffer again, releasing its publisher.
    stalled_conn.close(200, "bye".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the publisher is released")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || stalled_queue.message_count()
            == 3000)
        .await,
        "{} messages",
        stalled_queue.message_count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_consumes_from_the_queue_is_not_held_back_by_it() {
    let server = start_with(with_flow(50)).await;
    let conn = connect(&server).await;
    let publisher = channel(&conn).await;
    declare(&publisher, "own").await;
    let acked = Arc::new(AtomicUsize::new(0));
    let consumer = slow_consumer(
        channel(&conn).await,
        "own",
        Duration::from_micros(100),
        acked.clone(),
    );
    let total = 2000;
    tokio::time::timeout(Duration::from_secs(20), flood(&publisher, "own", total))
        .await
        .expect("publishing finishes");
    assert!(
        eventually(Duration::from_secs(20), || acked.load(Ordering::Relaxed)
            == total)
        .await,
        "acked {} of {total}",
        acked.load(Ordering::Relaxed)
    );
    consumer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_cannot_keep_up_holds_back_publishers_of_persistent_messages() {
    // Every write takes 20 ms: a commit of a few hundred KiB takes seconds.
    let disk = Arc::new(HookedBackend::new(|| {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }));
    let options = warren::store::StoreOptions {
        group_commit_max_batch: 64,
        group_commit_max_delay: Duration::ZERO,
        cache_bytes: 0,
        flush_interval: Duration::from_millis(50),
        flow_unwritten_bytes: 256 * 1024,
        write_stall: Duration::from_secs(10),
    };
    let store = warren::store::Store::over_with(disk, &options).unwrap();
    let mut config = Config::ephemeral();
    config.limits.queue_flow_messages = 0;
    let server = warren::Server::start_with_store(config, store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "kept".into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let total = 3000;
    let publishing = tokio::spawn(async move {
        for _ in 0..total {
            ch.basic_publish(
                "".into(),
                "kept".into(),
                BasicPublishOptions::default(),
                &[7u8; 1024],
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        }
        ch
    });
    let broker = server.broker().clone();
    let held = eventually(Duration::from_secs(20), || {
        broker
            .connections()
            .iter()
            .any(|c| c.flow.load(Ordering::Relaxed))
    })
    .await;
    assert!(held, "the publisher was never held back by the slow disk");
    let queue = broker.vhost("/").unwrap().queue(0, "kept").unwrap();
    assert!(
        eventually(Duration::from_secs(60), || queue.message_count()
            == total as u32)
        .await,
        "only {} of {total} arrived",
        queue.message_count()
    );
    publishing.await.unwrap();
}
