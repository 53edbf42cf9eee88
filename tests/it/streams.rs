//! Stream queues (`x-queue-type: stream`) through a real client: where a
//! consumer starts, many consumers at once while the stream grows,
//! retention, tracked offsets across restarts and crashes, appends cut by
//! SIGKILL, exact filtering.
//!
//! The pika suite (tests/python/test_streams.py) covers RabbitMQ's codes
//! and texts; these tests cover what needs concurrency, time, a restart or
//! a crash. In a fresh stream the message published n-th (from 0) has
//! offset n, so bodies name their offset.

mod concurrent;
mod crash;
mod filters;
mod offsets;
mod retention;
mod tracking;

use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use std::time::{Duration, Instant};

use crate::common::{BrokerProcess, next, quiet, spawn_warren};

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

/// Declare a (durable) stream with extra arguments.
async fn declare_stream(ch: &Channel, q: &str, extra: &[(&str, AMQPValue)]) {
    let mut a = args(extra);
    a.insert("x-queue-type".into(), text("stream"));
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        a,
    )
    .await
    .expect("declare the stream");
}

async fn open(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect")
}

/// A channel in confirm mode.
async fn confirming(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch
}

/// Publish to `q` and wait for the confirm (so each message is a chunk
/// of its own, and readable once this returns).
async fn publish(ch: &Channel, q: &str, body: &[u8], props: BasicProperties) {
    let confirm = ch
        .basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publish");
    assert!(
        matches!(confirm.await.expect("confirm"), Confirmation::Ack(_)),
        "a stream publish was not confirmed"
    );
}

/// Publish `m<i>` for each i in `range`, one confirmed message at a time.
async fn publish_range(ch: &Channel, q: &str, range: std::ops::Range<u64>) {
    for i in range {
        publish(
            ch,
            q,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
}

/// Publish `m<i>` for each i in `range` without waiting in between (so
/// they share chunks), then wait for every confirm.
async fn publish_burst(ch: &Channel, q: &str, range: std::ops::Range<u64>) {
    let mut confirms = Vec::new();
    for i in range {
        let body = format!("m{i}");
        let props = BasicProperties::default();
        let confirm = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for c in confirms {
        assert!(
            matches!(c.await.expect("confirm"), Confirmation::Ack(_)),
            "a stream publish was not confirmed"
        );
    }
}

/// A delivery's `x-stream-offset` header, which must be a long.
#[track_caller]
fn offset(d: &Delivery) -> u64 {
    let headers = d.properties.headers().as_ref().expect("headers");
    match headers.inner().get("x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).expect("non-negative offset"),
        other => panic!("x-stream-offset should be a long, got {other:?}"),
    }
}

/// The real binary on `dir`.
fn spawn_on(dir: &std::path::Path) -> BrokerProcess {
    let args = ["--data-dir".to_string(), dir.display().to_string()];
    spawn_warren(&args, &[], None)
}

/// Stop the real binary with SIGTERM (a clean shutdown) and wait for it
/// to exit, successfully.
async fn terminate(mut broker: BrokerProcess) {
    let pid = broker.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "SIGTERM not sent");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = broker.child.try_wait().expect("wait for the broker") {
            assert!(status.success(), "the broker stopped with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not stop within 15 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream consumer on a channel of its own, acking as it goes unless
/// told not to.
struct Reader {
    ch: Channel,
    consumer: lapin::Consumer,
    ack: bool,
    got: Vec<Delivery>,
}

impl Reader {
    /// basic.qos(prefetch), then basic.consume with `x-stream-offset` =
    /// `spec` (none: left out) and `extra` arguments.
    async fn open(
        conn: &Connection,
        q: &str,
        spec: Option<AMQPValue>,
        prefetch: u16,
        tag: &str,
        extra: &[(&str, AMQPValue)],
    ) -> Reader {
        let ch = conn.create_channel().await.expect("channel");
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut a = args(extra);
        if let Some(spec) = spec {
            a.insert("x-stream-offset".into(), spec);
        }
        let consumer = ch
            .basic_consume(q.into(), tag.into(), BasicConsumeOptions::default(), a)
            .await
            .expect("consume");
        Reader {
            ch,
            consumer,
            ack: true,
            got: Vec::new(),
        }
    }

    fn manual(mut self) -> Reader {
        self.ack = false;
        self
    }

    /// Wait for `n` more deliveries (5 s each at most).
    async fn take(&mut self, n: usize) -> &[Delivery] {
        use futures_lite::StreamExt;
        let from = self.got.len();
        for _ in 0..n {
            let wait = tokio::time::timeout(Duration::from_secs(5), self.consumer.next());
            let Ok(d) = wait.await else {
                panic!(
                    "waited 5 s for {} more deliveries after offsets {:?}",
                    from + n - self.got.len(),
                    self.offsets()
                );
            };
            let d = d.expect("consumer still open").expect("delivery ok");
            if self.ack {
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            self.got.push(d);
        }
        &self.got[from..]
    }

    /// Everything received must be exactly `want` (offsets), then nothing
    /// more for a while.
    async fn exactly(&mut self, want: &[u64]) {
        let missing = want.len().saturating_sub(self.got.len());
        self.take(missing).await;
        assert!(quiet(&mut self.consumer).await, "more than {want:?}");
        assert_eq!(self.offsets(), want);
    }

    fn offsets(&self) -> Vec<u64> {
        self.got.iter().map(offset).collect()
    }

    async fn close(self) {
        let _ = self.ch.close(200, "done".into()).await;
    }
}
