//! `--soak SECONDS`: a long, mixed, self-checking workload (bench/soak.sh
//! runs it against a fresh broker and watches the broker's RSS and
//! descriptors).
//!
//! What runs, all at once, for the whole duration:
//! - **Lanes**: `--soak-publishers` long-lived publishers, one connection
//!   each, publishing with confirms (mandatory) at `--soak-rate` msg/s to
//!   their own queue, message sizes from 64 B to 300 KB (the largest spans
//!   several body frames). Lane kinds, round robin: `durable` (durable
//!   queue, persistent messages, a multiple-acking consumer and a flaky
//!   one), `transient` (transient queue and messages, an acking consumer and
//!   one that rejects 10 % once with requeue), `mixed` (durable queue with a
//!   dead-letter exchange, persistent and transient messages; every 20th
//!   message is rejected without requeue and so dead-lettered, a rejecting
//!   consumer and a flaky one) and `ttl` (durable queue, 1 s queue TTL and
//!   some shorter per-message TTLs, dead-lettered, no consumer). A flaky
//!   consumer leaves every 3–15 s with messages unacked (by basic.cancel and
//!   channel.close, or connection.close) and comes back. A `soak.dlq` queue
//!   behind the fanout dead-letter exchange collects, checks (x-death) and
//!   acks the dead letters.
//! - **Churn**: `--soak-churn-workers` workers open `--soak-churn-rate`
//!   connections a second between them, each one of: declare an exchange
//!   (any type, sometimes durable), 1–4 queues (durable, exclusive,
//!   auto-delete, with TTL/length/priority/expiry arguments), bind them,
//!   publish with confirms, basic.get and consume the messages back, unbind
//!   and delete everything (exclusive queues are sometimes left to the
//!   connection's close), over up to three channels; or drop the TCP
//!   connection without closing it while it holds a consumer with unacked
//!   messages on an auto-delete queue and an exclusive queue; or provoke the
//!   expected channel errors (404 passive declare, 406 redeclare, 404 publish
//!   to a missing exchange); or (up to `--soak-linger` at once) hold a
//!   connection with heartbeats and a consumer for 5–30 s.
//!
//! What is checked as it goes:
//! - every message body (length and content pattern);
//! - per lane, a bitmap of confirmed and of delivered (acked, or acked from
//!   the dead-letter queue) sequence numbers: a message delivered again
//!   after it was acked counts as a duplicate, and one without the
//!   redelivered flag (or from the dead-letter queue twice) as an error;
//! - stuck lanes: confirmed messages outstanding and no new delivery for
//!   `--soak-stuck-after` seconds;
//! - any error a client sees that the scenario did not provoke, nacks,
//!   returns, churn steps that take longer than 30 s.
//!
//! At the end publishers stop, the consumers drain (up to 60 s), and every
//! confirmed message must have been delivered. The summary (one JSON object
//! on stdout with --json) says pass or fail; the exit status is 0 or 1.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, queue};
use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use warren::amqp::codec;

use crate::cli::Args;
use crate::conn::{CHANNEL, Conn, describe, short};

/// Every steady exchange and queue is named `soak.*`.
const DIRECT: &str = "soak.direct";
const DLX: &str = "soak.dlx";
const DLQ: &str = "soak.dlq";
/// Message header: lane (u32), sequence number (u64), body length (u32).
const HEADER: usize = 16;
/// Lane number of messages published by churn connections.
const CHURN_LANE: u32 = u32::MAX;
/// A churn step that takes longer than this is an error (a stuck broker).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum LaneKind {
    Durable,
    Transient,
    Mixed,
    Ttl,
}

impl LaneKind {
    fn name(self) -> &'static str {
        match self {
            LaneKind::Durable => "durable",
            LaneKind::Transient => "transient",
            LaneKind::Mixed => "mixed",
            LaneKind::Ttl => "ttl",
        }
    }

    fn of(i: usize) -> LaneKind {
        [
            LaneKind::Durable,
            LaneKind::Transient,
            LaneKind::Mixed,
            LaneKind::Ttl,
        ][i % 4]
    }
}

/// How a consumer treats what it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Acks with multiple=true every N deliveries (and when idle).
    Steady { multi: usize },
    /// Acks five deliveries at a time (never when idle), and leaves every
    /// 3–15 s with up to four of them unacked.
    Flaky,
    /// Rejects 10 % of first deliveries with requeue, acks the rest.
    Rejecter,
}

/// A set of sequence numbers.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Set bit `i`; whether it was clear.
    fn set(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << (i % 64)) != 0;
        self.0[w] |= 1 << (i % 64);
        !was
    }
}

/// What is known about one lane's messages.
struct Stream {
    confirmed: Bits,
    delivered: Bits,
    confirmed_n: u64,
    /// Confirmed and delivered.
    both_n: u64,
    /// Last time a confirmed message was delivered, or the outstanding
    /// count rose from zero.
    progress_at: Instant,
    stuck_reported: bool,
}

impl Stream {
    fn outstanding(&self) -> u64 {
        self.confirmed_n - self.both_n
    }
}

struct Lane {
    kind: LaneKind,
    queue: String,
    /// Next sequence number to publish.
    next_seq: AtomicU64,
    stream: Mutex<Stream>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters of the whole run.
#[derive(Default)]
struct Counters {
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    returned: AtomicU64,
    acked: AtomicU64,
    requeued: AtomicU64,
    rejected_to_dlx: AtomicU64,
    dead_letters: AtomicU64,
    redelivered: AtomicU64,
    duplicates: AtomicU64,
    bytes: AtomicU64,
    consumer_restarts: AtomicU64,
    churn_connections: AtomicU64,
    churn_abrupt: AtomicU64,
    churn_lingering: AtomicU64,
    churn_channels: AtomicU64,
    churn_messages: AtomicU64,
    queues_declared: AtomicU64,
    queues_deleted: AtomicU64,
    exchanges_declared: AtomicU64,
    bindings: AtomicU64,
    expected_errors: AtomicU64,
    errors: AtomicU64,
}

struct Soak {
    uri: String,
    t0: Instant,
    lanes: Vec<Lane>,
    c: Counters,
    error_log: Mutex<Vec<String>>,
    stop_publishing: AtomicBool,
    stop_churn: AtomicBool,
    /// Turned true when the consumers are to leave.
    stop_consumers: watch::Sender<bool>,
    linger: Arc<Semaphore>,
    verbose: bool,
}

impl Soak {
    fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// An error nothing provoked: counted, and the first 50 kept.
    fn error(&self, what: impl std::fmt::Display) {
        self.c.errors.fetch_add(1, Relaxed);
        let line = format!("[{:.1} s] {what}", self.elapsed());
        eprintln!("soak error: {line}");
        let mut log = lock(&self.error_log);
        if log.len() < 50 {
            log.push(line);
        }
    }

    fn confirmed(&self, lane: u32, seq: u64) {
        let Some(l) = self.lanes.get(lane as usize) else {
            return;
        };
        self.c.confirmed.fetch_add(1, Relaxed);
        let mut s = lock(&l.stream);
        if s.confirmed.set(seq) {
            if s.outstanding() == 0 {
                s.progress_at = Instant::now();
            }
            s.confirmed_n += 1;
            if s.delivered.get(seq) {
                s.both_n += 1;
            }
        }
    }

    /// A delivery of (lane, seq) was acked (or, from the dead-letter queue,
    /// is about to be).
    fn delivered(&self, lane: u32, seq: u64, redelivered: bool, from_dlq: bool) {
        let Some(l) = self.lanes.get(lane as usize) else {
            self.error(format!(
                "a delivery names lane {lane}, which does not exist"
            ));
            return;
        };
        self.c.acked.fetch_add(1, Relaxed);
        let mut s = lock(&l.stream);
        if s.delivered.set(seq) {
            if s.confirmed.get(seq) {
                s.both_n += 1;
                s.progress_at = Instant::now();
            }
        } else {
            drop(s);
            self.c.duplicates.fetch_add(1, Relaxed);
            if from_dlq {
                self.error(format!(
                    "lane {} message {seq} dead-lettered twice",
                    l.queue
                ));
            } else if !redelivered {
                self.error(format!(
                    "lane {} message {seq} delivered again after its ack, without the redelivered flag",
                    l.queue
                ));
            }
        }
    }
}

pub async fn run(args: &Args, seconds: f64) -> Result<ExitCode> {
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--soak needs a positive number of seconds");
    }
    if let Err(e) = rlimit::increase_nofile_limit(65_536) {
        eprintln!("warning: cannot raise the open-files limit: {e}");
    }
    let lanes = (0..args.soak_publishers)
        .map(|i| {
            let kind = LaneKind::of(i);
            Lane {
                kind,
                queue: format!("soak.{}.{i}", kind.name()),
                next_seq: AtomicU64::new(0),
                stream: Mutex::new(Stream {
                    confirmed: Bits::default(),
                    delivered: Bits::default(),
                    confirmed_n: 0,
                    both_n: 0,
                    progress_at: Instant::now(),
                    stuck_reported: false,
                }),
            }
        })
        .collect();
    let (stop_consumers, stop_rx) = watch::channel(false);
    let soak = Arc::new(Soak {
        uri: args.uri.clone(),
        t0: Instant::now(),
        lanes,
        c: Counters::default(),
        error_log: Mutex::new(Vec::new()),
        stop_publishing: AtomicBool::new(false),
        stop_churn: AtomicBool::new(false),
        stop_consumers,
        linger: Arc::new(Semaphore::new(args.soak_linger)),
        verbose: !args.quiet,
    });

    declare_steady(&soak)
        .await
        .context("declaring the soak's queues")?;

    let mut consumers = JoinSet::new();
    let mut n = 0;
    let mut consumer = |queue: String, style: Style, prefetch: u16| {
        n += 1;
        let (soak, stop) = (soak.clone(), stop_rx.clone());
        let name = format!("soak consumer {n} ({queue}, {style:?})");
        consumers.spawn(consume_forever(soak, name, queue, style, prefetch, stop));
    };
    for lane in &soak.lanes {
        let q = lane.queue.clone();
        match lane.kind {
            LaneKind::Durable => {
                consumer(q.clone(), Style::Steady { multi: 10 }, 100);
                consumer(q, Style::Flaky, 20);
            }
            LaneKind::Transient => {
                consumer(q.clone(), Style::Steady { multi: 1 }, 50);
                consumer(q, Style::Rejecter, 10);
            }
            LaneKind::Mixed => {
                consumer(q.clone(), Style::Rejecter, 30);
                consumer(q, Style::Flaky, 20);
            }
            LaneKind::Ttl => {}
        }
    }
    consumer(DLQ.to_string(), Style::Steady { multi: 1 }, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut publishers = JoinSet::new();
    for i in 0..soak.lanes.len() {
        publishers.spawn(publish_forever(soak.clone(), i as u32, args.soak_rate));
    }
    let pacer = Arc::new(Pacer::new(args.soak_churn_rate));
    let mut churners = JoinSet::new();
    for w in 0..args.soak_churn_workers {
        churners.spawn(churn_forever(soak.clone(), pacer.clone(), w));
    }

    // The run: progress, and the stuck-lane watch.
    let end = soak.t0 + Duration::from_secs_f64(seconds);
    let stuck_after = Duration::from_secs_f64(args.soak_stuck_after);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_print = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                check_stuck(&soak, stuck_after);
                if soak.verbose && last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    eprintln!("{}", progress(&soak));
                }
            }
            _ = tokio::time::sleep_until(end) => break,
            _ = &mut ctrl_c => {
                soak.error("interrupted");
                break;
            }
        }
    }

    // Wind down: churn first, then publishers (they wait for their
    // confirms), then the consumers drain what is confirmed.
    soak.stop_churn.store(true, Relaxed);
    soak.stop_publishing.store(true, Relaxed);
    join_all(
        &soak,
        &mut churners,
        Duration::from_secs(60),
        "churn workers",
    )
    .await;
    // Lingering connections notice the stop within a second or two.
    let all = u32::try_from(args.soak_linger).unwrap_or(u32::MAX);
    match tokio::time::timeout(STEP_TIMEOUT, soak.linger.acquire_many(all)).await {
        Ok(Ok(_)) => {}
        _ => soak.error("lingering connections did not finish"),
    }
    join_all(
        &soak,
        &mut publishers,
        Duration::from_secs(60),
        "publishers",
    )
    .await;
    let drain_until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < drain_until && outstanding(&soak) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = soak.stop_consumers.send(true);
    join_all(&soak, &mut consumers, Duration::from_secs(30), "consumers").await;

    let missing = outstanding(&soak);
    if missing > 0 {
        for lane in &soak.lanes {
            let s = lock(&lane.stream);
            if s.outstanding() > 0 {
                let first = (0..lane.next_seq.load(Relaxed))
                    .find(|&q| s.confirmed.get(q) && !s.delivered.get(q));
                drop(s);
                soak.error(format!(
                    "lane {}: {} confirmed message(s) never delivered (first: {first:?})",
                    lane.queue,
                    lock(&lane.stream).outstanding()
                ));
            }
        }
    }
    if let Err(e) = delete_steady(&soak).await {
        soak.error(format!("deleting the soak's queues: {e:#}"));
    }
    let summary = summary(&soak, missing);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    eprintln!("{}", render(&summary));
    Ok(if summary.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn join_all(soak: &Soak, set: &mut JoinSet<()>, limit: Duration, what: &str) {
    let until = Instant::now() + limit;
    while !set.is_empty() {
        match tokio::time::timeout_at(until, set.join_next()).await {
            Ok(Some(Err(e))) => soak.error(format!("{what}: a task failed: {e}")),
            Ok(_) => {}
            Err(_) => {
                soak.error(format!(
                    "{} {what} did not stop within {limit:?}",
                    set.len()
                ));
                set.abort_all();
                return;
            }
        }
    }
}

fn outstanding(soak: &Soak) -> u64 {
    soak.lanes
        .iter()
        .map(|l| lock(&l.stream).outstanding())
        .sum()
}

fn check_stuck(soak: &Soak, after: Duration) {
    for lane in &soak.lanes {
        let mut s = lock(&lane.stream);
        if s.outstanding() > 0 && s.progress_at.elapsed() > after && !s.stuck_reported {
            s.stuck_reported = true;
            let n = s.outstanding();
            drop(s);
            soak.error(format!(
                "lane {} is stuck: {n} confirmed message(s) outstanding, none delivered for {:.0} s",
                lane.queue,
                after.as_secs_f64()
            ));
        } else if s.outstanding() == 0 {
            s.stuck_reported = false;
        }
    }
}

fn progress(soak: &Soak) -> String {
    let c = &soak.c;
    format!(
        "{:>6.0} s  published {}  confirmed {}  acked {}  dead-lettered {}  outstanding {}  | churn: {} connections, {} queues  | errors {}",
        soak.elapsed(),
        c.published.load(Relaxed),
        c.confirmed.load(Relaxed),
        c.acked.load(Relaxed),
        c.dead_letters.load(Relaxed),
        outstanding(soak),
        c.churn_connections.load(Relaxed),
        c.queues_declared.load(Relaxed),
        c.errors.load(Relaxed),
    )
}

// ---------------------------------------------------------------- messages

fn size_of_message(seq: u64) -> usize {
    match seq % 100 {
        0..=49 => 64,
        50..=79 => 1024,
        80..=94 => 8 * 1024,
        95..=98 => 64 * 1024,
        _ => 300 * 1024,
    }
}

fn body(lane: u32, seq: u64) -> Vec<u8> {
    let len = size_of_message(seq);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&lane.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(len as u32).to_be_bytes());
    b.extend((HEADER..len).map(|i| fill_byte(seq, i)));
    b
}

fn fill_byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_add((i as u8).wrapping_mul(31))
}

/// (lane, seq) of a body that is intact.
fn check_body(b: &[u8]) -> Result<(u32, u64)> {
    if b.len() < HEADER {
        bail!("a {}-byte body, shorter than the header", b.len());
    }
    let lane = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut s = [0; 8];
    s.copy_from_slice(&b[4..12]);
    let seq = u64::from_be_bytes(s);
    let len = u32::from_be_bytes([b[12], b[13], b[14], b[15]]) as usize;
    if len != b.len() {
        bail!(
            "lane {lane} message {seq}: body of {} bytes, {len} were sent",
            b.len()
        );
    }
    if let Some(i) = (HEADER..len).find(|&i| b[i] != fill_byte(seq, i)) {
        bail!("lane {lane} message {seq}: body corrupt at byte {i}");
    }
    Ok((lane, seq))
}

// -------------------------------------------------------------- topology

fn long(v: i64) -> AMQPValue {
    AMQPValue::LongLongInt(v)
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn lane_arguments(kind: LaneKind) -> FieldTable {
    let dlx = AMQPValue::LongString(DLX.into());
    match kind {
        LaneKind::Durable | LaneKind::Transient => FieldTable::default(),
        LaneKind::Mixed => table(&[("x-dead-letter-exchange", dlx)]),
        LaneKind::Ttl => table(&[
            ("x-dead-letter-exchange", dlx),
            ("x-message-ttl", long(1000)),
        ]),
    }
}

async fn connect(soak: &Soak, name: &str) -> Result<Connection> {
    connect_uri(&soak.uri, name).await
}

/// The URI with query parameters added.
fn with_query(uri: &str, query: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{query}")
}

/// A churn connection: frame_max 8 KiB (its messages are small), which
/// also keeps the client's buffers small (lapin holds 64 frames' worth per
/// connection: 8 MiB at the default 128 KiB).
async fn connect_churn(soak: &Soak, name: &str) -> Result<Connection> {
    connect_uri(&with_query(&soak.uri, "frame_max=8192"), name).await
}

async fn connect_uri(uri: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    Connection::connect(uri, props)
        .await
        .with_context(|| format!("{name}: connecting"))
}

async fn declare_steady(soak: &Soak) -> Result<()> {
    let conn = connect(soak, "soak setup").await?;
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        DIRECT.into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        DLX.into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let durable_q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(DLQ.into(), durable_q, FieldTable::default())
        .await?;
    ch.queue_bind(
        DLQ.into(),
        DLX.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for lane in &soak.lanes {
        // A leftover of an earlier run against the same broker would break
        // the accounting.
        ch.queue_delete(lane.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        ch.queue_declare(
            lane.queue.as_str().into(),
            QueueDeclareOptions {
                durable: lane.kind != LaneKind::Transient,
                ..Default::default()
            },
            lane_arguments(lane.kind),
        )
        .await?;
        ch.queue_bind(
            lane.queue.as_str().into(),
            DIRECT.into(),
            lane.queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.queue_purge(DLQ.into(), Default::default()).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn delete_steady(soak: &Soak) -> Result<()> {
    let conn = connect(soak, "soak teardown").await?;
    let ch = conn.create_channel().await?;
    for lane in &soak.lanes {
        ch.queue_delete(lane.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    ch.queue_delete(DLQ.into(), QueueDeleteOptions::default())
        .await?;
    for x in [DIRECT, DLX] {
        ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

// ------------------------------------------------------------ publishers

async fn publish_forever(soak: Arc<Soak>, lane: u32, rate: f64) {
    let name = format!("soak publisher {lane}");
    while !soak.stop_publishing.load(Relaxed) {
        if let Err(e) = publish(&soak, lane, rate, &name).await {
            soak.error(format!("{name}: {e:#}"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn publish(soak: &Arc<Soak>, lane_id: u32, rate: f64, name: &str) -> Result<()> {
    let lane = &soak.lanes[lane_id as usize];
    let conn = connect(soak, name).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    // Confirms are awaited in order by a second task, at most 1,000 out.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, lapin::PublisherConfirm)>(1000);
    let confirmer = {
        let soak = soak.clone();
        tokio::spawn(async move {
            while let Some((seq, confirm)) = rx.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) => soak.confirmed(lane_id, seq),
                    Ok(Confirmation::Ack(Some(r))) => {
                        soak.c.returned.fetch_add(1, Relaxed);
                        soak.error(format!(
                            "lane {lane_id} message {seq} returned: {} {}",
                            r.reply_code, r.reply_text
                        ));
                    }
                    Ok(Confirmation::Nack(_)) => {
                        soak.c.nacked.fetch_add(1, Relaxed);
                        soak.error(format!("lane {lane_id} message {seq} nacked"));
                    }
                    Ok(Confirmation::NotRequested) => {}
                    Err(e) => return Err(anyhow!("awaiting a confirm: {e}")),
                }
            }
            Ok(())
        })
    };
    let period = Duration::from_millis(20);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut credit = 0.0f64;
    let (exchange, key) = match lane.kind {
        LaneKind::Transient => ("", lane.queue.as_str()),
        _ => (DIRECT, lane.queue.as_str()),
    };
    let result: Result<()> = async {
        while !soak.stop_publishing.load(Relaxed) {
            tick.tick().await;
            credit += rate * period.as_secs_f64();
            while credit >= 1.0 {
                credit -= 1.0;
                let seq = lane.next_seq.fetch_add(1, Relaxed);
                let persistent = match lane.kind {
                    LaneKind::Durable => true,
                    LaneKind::Transient => false,
                    LaneKind::Mixed | LaneKind::Ttl => seq.is_multiple_of(2),
                };
                let mut props = BasicProperties::default()
                    .with_delivery_mode(if persistent { 2 } else { 1 })
                    .with_message_id(ShortString::from(format!("{lane_id}.{seq}")));
                if lane.kind == LaneKind::Ttl && seq.is_multiple_of(3) {
                    props =
                        props.with_expiration(ShortString::from(format!("{}", 100 + seq % 400)));
                }
                let b = body(lane_id, seq);
                let confirm = ch
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &b,
                        props,
                    )
                    .await?;
                soak.c.published.fetch_add(1, Relaxed);
                soak.c.bytes.fetch_add(b.len() as u64, Relaxed);
                if tx.send((seq, confirm)).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let confirmed = tokio::time::timeout(Duration::from_secs(30), confirmer).await;
    result?;
    match confirmed {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => bail!("the confirm task failed: {e}"),
        Err(_) => bail!("confirms still outstanding 30 s after the last publish"),
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

// ------------------------------------------------------------- consumers

async fn consume_forever(
    soak: Arc<Soak>,
    name: String,
    queue: String,
    style: Style,
    prefetch: u16,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(name.len() as u64 * 7919 + prefetch as u64);
    while !*stop.borrow() {
        match consume(&soak, &name, &queue, style, prefetch, &mut stop, &mut rng).await {
            Ok(()) => {}
            Err(e) => {
                soak.error(format!("{name}: {e:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if style == Style::Flaky && !*stop.borrow() {
            soak.c.consumer_restarts.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        }
    }
}

/// One session of a consumer: until told to stop or, if flaky, until it is
/// time to leave.
async fn consume(
    soak: &Soak,
    name: &str,
    queue: &str,
    style: Style,
    prefetch: u16,
    stop: &mut watch::Receiver<bool>,
    rng: &mut Rng,
) -> Result<()> {
    let conn = connect(soak, name).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{name} {}", rng.next());
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let leave_at = match style {
        Style::Flaky => Some(Instant::now() + Duration::from_millis(3000 + rng.below(12_000))),
        _ => None,
    };
    let from_dlq = queue == DLQ;
    let multi = match style {
        Style::Steady { multi } => multi.max(1),
        Style::Flaky => 5,
        Style::Rejecter => 1,
    };
    // Deliveries received but not yet acked (multiple acks): lane, seq,
    // redelivered.
    let mut pending: Vec<(u32, u64, bool)> = Vec::new();
    let mut last: Option<lapin::message::Delivery> = None;
    let idle = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            break;
        }
        if leave_at.is_some_and(|t| Instant::now() >= t) {
            // Leave with whatever is unacked: requeued by the broker.
            pending.clear();
            if rng.below(2) == 0 {
                ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await?;
                ch.close(200, "bye".into()).await?;
            }
            conn.close(200, "bye".into()).await?;
            return Ok(());
        }
        let next = tokio::select! {
            n = tokio::time::timeout(idle, consumer.next()) => n,
            _ = stop.changed() => continue,
        };
        let delivery = match next {
            Err(_) => {
                // Idle: ack what is held (a flaky consumer keeps it, but
                // not while the run drains).
                if (style != Style::Flaky || soak.stop_publishing.load(Relaxed))
                    && let Some(d) = last.take()
                {
                    d.ack(BasicAckOptions { multiple: true }).await?;
                    for (lane, seq, redelivered) in pending.drain(..) {
                        soak.delivered(lane, seq, redelivered, from_dlq);
                    }
                }
                continue;
            }
            Ok(None) => bail!("the consumer's stream ended (cancelled by the broker?)"),
            Ok(Some(d)) => d.context("a delivery failed")?,
        };
        let (lane, seq) = match check_body(&delivery.data) {
            Ok(x) => x,
            Err(e) => {
                soak.error(format!("{name}: {e:#}"));
                delivery.ack(BasicAckOptions::default()).await?;
                continue;
            }
        };
        if delivery.redelivered {
            soak.c.redelivered.fetch_add(1, Relaxed);
        }
        if from_dlq {
            let has_death = delivery
                .properties
                .headers()
                .as_ref()
                .is_some_and(|h| h.contains_key("x-death"));
            if !has_death {
                soak.error(format!("dead letter {lane}.{seq} has no x-death header"));
            }
            soak.c.dead_letters.fetch_add(1, Relaxed);
        }
        let kind = soak.lanes.get(lane as usize).map(|l| l.kind);
        if !from_dlq && kind == Some(LaneKind::Mixed) && seq % 20 == 7 {
            soak.c.rejected_to_dlx.fetch_add(1, Relaxed);
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            continue;
        }
        if style == Style::Rejecter && !delivery.redelivered && seq % 10 == 3 {
            soak.c.requeued.fetch_add(1, Relaxed);
            delivery
                .reject(BasicRejectOptions { requeue: true })
                .await?;
            continue;
        }
        if multi == 1 {
            delivery.ack(BasicAckOptions::default()).await?;
            soak.delivered(lane, seq, delivery.redelivered, from_dlq);
        } else {
            pending.push((lane, seq, delivery.redelivered));
            if pending.len() >= multi {
                delivery.ack(BasicAckOptions { multiple: true }).await?;
                last = None;
                for (lane, seq, redelivered) in pending.drain(..) {
                    soak.delivered(lane, seq, redelivered, from_dlq);
                }
            } else {
                last = Some(delivery);
            }
        }
    }
    // Stopping: ack what is held, then leave.
    if let Some(d) = last.take() {
        d.ack(BasicAckOptions { multiple: true }).await?;
        for (lane, seq, redelivered) in pending.drain(..) {
            soak.delivered(lane, seq, redelivered, from_dlq);
        }
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

// ----------------------------------------------------------------- churn

/// Hands out start times `1/rate` apart to any number of workers.
struct Pacer {
    period: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            period: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait for the next slot; false if `stop` turned true meanwhile.
    async fn wait(&self, stop: &AtomicBool) -> bool {
        let at = {
            let mut next = lock(&self.next);
            let now = Instant::now();
            // Do not bank more than a second of slots while workers are busy.
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let at = (*next).max(floor);
            *next = at + self.period;
            at
        };
        while Instant::now() < at {
            if stop.load(Relaxed) {
                return false;
            }
            let step = at.min(Instant::now() + Duration::from_millis(250));
            tokio::time::sleep_until(step).await;
        }
        !stop.load(Relaxed)
    }
}

/// xorshift64*: a cheap, seeded, reproducible choice maker.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

async fn churn_forever(soak: Arc<Soak>, pacer: Arc<Pacer>, worker: usize) {
    let mut rng = Rng::new(worker as u64 + 1);
    let mut i = 0u64;
    while !soak.stop_churn.load(Relaxed) {
        if !pacer.wait(&soak.stop_churn).await {
            break;
        }
        i += 1;
        let id = format!("{worker}.{i}");
        let pick = rng.below(100);
        let (what, r) = if pick < 15 {
            // Held open in the background, up to --soak-linger at once.
            match soak.linger.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (soak, hold) = (soak.clone(), 5_000 + rng.below(25_000));
                    tokio::spawn(async move {
                        let r = tokio::time::timeout(
                            Duration::from_millis(hold) + STEP_TIMEOUT,
                            linger(&soak, &id, Duration::from_millis(hold)),
                        )
                        .await;
                        report(&soak, "lingering connection", &id, r);
                        drop(permit);
                    });
                    continue;
                }
                Err(_) => (
                    "topology",
                    tokio::time::timeout(STEP_TIMEOUT, topology(&soak, &id, &mut rng)).await,
                ),
            }
        } else if pick < 30 {
            (
                "abrupt close",
                tokio::time::timeout(STEP_TIMEOUT, abrupt(&soak, &id)).await,
            )
        } else if pick < 40 {
            (
                "expected errors",
                tokio::time::timeout(STEP_TIMEOUT, provoke_errors(&soak, &id)).await,
            )
        } else {
            (
                "topology",
                tokio::time::timeout(STEP_TIMEOUT, topology(&soak, &id, &mut rng)).await,
            )
        };
        report(&soak, what, &id, r);
    }
}

fn report(soak: &Soak, what: &str, id: &str, r: Result<Result<()>, tokio::time::error::Elapsed>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => soak.error(format!("churn {what} {id}: {e:#}")),
        Err(_) => soak.error(format!(
            "churn {what} {id}: no progress for {STEP_TIMEOUT:?}"
        )),
    }
}

fn churn_props() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(1)
}

/// Declare, bind, publish, get, consume, unbind, delete.
async fn topology(soak: &Soak, id: &str, rng: &mut Rng) -> Result<()> {
    let c = &soak.c;
    let conn = connect_churn(soak, &format!("soak churn {id}")).await?;
    c.churn_connections.fetch_add(1, Relaxed);
    let ch = conn.create_channel().await?;
    let pubs = conn.create_channel().await?;
    let cons = conn.create_channel().await?;
    c.churn_channels.fetch_add(3, Relaxed);
    pubs.confirm_select(ConfirmSelectOptions::default()).await?;

    let kinds = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ];
    let kind = kinds[rng.below(4) as usize].clone();
    let x = format!("soak.churn.x.{id}");
    ch.exchange_declare(
        x.as_str().into(),
        kind.clone(),
        ExchangeDeclareOptions {
            durable: rng.chance(4),
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    c.exchanges_declared.fetch_add(1, Relaxed);

    let n = 1 + rng.below(4) as usize;
    let mut queues = Vec::with_capacity(n);
    for k in 0..n {
        let name = format!("soak.churn.q.{id}.{k}");
        let exclusive = rng.chance(4);
        let opts = QueueDeclareOptions {
            durable: !exclusive && rng.chance(3),
            exclusive,
            auto_delete: rng.chance(4),
            ..Default::default()
        };
        let mut args = Vec::new();
        match rng.below(5) {
            0 => args.push(("x-message-ttl", long(60_000))),
            1 => args.push(("x-max-length", long(1000))),
            2 => args.push(("x-expires", long(600_000))),
            3 => args.push(("x-max-priority", long(5))),
            _ => {}
        }
        ch.queue_declare(name.as_str().into(), opts, table(&args))
            .await?;
        c.queues_declared.fetch_add(1, Relaxed);
        let (key, bind_args) = match kind {
            ExchangeKind::Headers => (
                String::new(),
                table(&[
                    ("x-match", AMQPValue::LongString("any".into())),
                    ("q", AMQPValue::LongString(name.as_str().into())),
                ]),
            ),
            ExchangeKind::Topic => (format!("soak.{id}.{k}.#"), FieldTable::default()),
            _ => (name.clone(), FieldTable::default()),
        };
        ch.queue_bind(
            name.as_str().into(),
            x.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            bind_args,
        )
        .await?;
        ch.queue_bind(
            name.as_str().into(),
            "amq.topic".into(),
            format!("soak.churn.{id}.*").as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        c.bindings.fetch_add(2, Relaxed);
        queues.push((name, exclusive, key));
    }

    // Two messages straight to each queue, one through the exchange, all
    // confirmed.
    let mut confirms = Vec::new();
    for (name, _, _) in &queues {
        for j in 0..2 {
            let b = body(CHURN_LANE, j);
            confirms.push(
                pubs.basic_publish(
                    "".into(),
                    name.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &b,
                    churn_props(),
                )
                .await?,
            );
        }
    }
    let b = body(CHURN_LANE, 2);
    confirms.push(
        pubs.basic_publish(
            x.as_str().into(),
            format!("soak.{id}.0.x").as_str().into(),
            BasicPublishOptions::default(),
            &b,
            churn_props(),
        )
        .await?,
    );
    for confirm in confirms {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            other => bail!("a churn publish was not simply acked: {other:?}"),
        }
    }
    c.churn_messages.fetch_add(2 * n as u64 + 1, Relaxed);

    // Each queue holds its two (and maybe the exchange's): get two.
    for (name, _, _) in &queues {
        for _ in 0..2 {
            match ch
                .basic_get(name.as_str().into(), BasicGetOptions::default())
                .await?
            {
                Some(m) => {
                    check_body(&m.delivery.data)?;
                    m.delivery.ack(BasicAckOptions::default()).await?;
                }
                None => {
                    bail!("basic.get on {name} found it empty; two confirmed messages were sent")
                }
            }
        }
    }

    // A consumer on the first queue gets a fresh message.
    let (first, _, _) = &queues[0];
    let mut consumer = cons
        .basic_consume(
            first.as_str().into(),
            "churn".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let b = body(CHURN_LANE, 3);
    pubs.basic_publish(
        "".into(),
        first.as_str().into(),
        BasicPublishOptions::default(),
        &b,
        churn_props(),
    )
    .await?
    .await?;
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let d = consumer
                .next()
                .await
                .ok_or_else(|| anyhow!("the consumer ended"))??;
            let (_, seq) = check_body(&d.data)?;
            d.ack(BasicAckOptions::default()).await?;
            if seq == 3 {
                return Ok::<(), anyhow::Error>(());
            }
        }
    })
    .await;
    match got {
        Ok(r) => r?,
        Err(_) => bail!("a consumer on {first} did not get its message within 10 s"),
    }
    cons.basic_cancel("churn".into(), BasicCancelOptions::default())
        .await?;

    // Take it all down; exclusive queues are sometimes left to the close.
    let leave_exclusive = rng.chance(2);
    for (name, exclusive, key) in &queues {
        ch.queue_unbind(
            name.as_str().into(),
            "amq.topic".into(),
            format!("soak.churn.{id}.*").as_str().into(),
            FieldTable::default(),
        )
        .await?;
        if *exclusive && leave_exclusive {
            continue;
        }
        if rng.chance(2) {
            let bind_args = match kind {
                ExchangeKind::Headers => table(&[
                    ("x-match", AMQPValue::LongString("any".into())),
                    ("q", AMQPValue::LongString(name.as_str().into())),
                ]),
                _ => FieldTable::default(),
            };
            ch.queue_unbind(
                name.as_str().into(),
                x.as_str().into(),
                key.as_str().into(),
                bind_args,
            )
            .await?;
        }
        ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    c.queues_deleted.fetch_add(n as u64, Relaxed);
    if rng.chance(2) {
        cons.close(200, "bye".into()).await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// Raw socket: declare an exclusive queue and an auto-delete queue,
/// publish to the latter, consume from both without acking, and drop the
/// TCP connection without connection.close.
async fn abrupt(soak: &Soak, id: &str) -> Result<()> {
    let c = &soak.c;
    let uri = crate::uri::parse(&soak.uri)?;
    let mut conn = Conn::open(&uri, 0, &format!("soak abrupt {id}")).await?;
    c.churn_connections.fetch_add(1, Relaxed);
    c.churn_abrupt.fetch_add(1, Relaxed);
    c.churn_channels.fetch_add(1, Relaxed);
    let names = [
        (format!("soak.churn.abrupt.{id}.excl"), true, false),
        (format!("soak.churn.abrupt.{id}.auto"), false, true),
    ];
    for (name, exclusive, auto_delete) in &names {
        let reply = conn
            .rpc(&AMQPClass::Queue(queue::AMQPMethod::Declare(
                queue::Declare {
                    queue: short(name),
                    passive: false,
                    durable: false,
                    exclusive: *exclusive,
                    auto_delete: *auto_delete,
                    nowait: false,
                    arguments: FieldTable::default(),
                },
            )))
            .await?;
        if !matches!(reply, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) {
            bail!("expected queue.declare-ok, got {}", describe(&reply));
        }
        c.queues_declared.fetch_add(1, Relaxed);
    }
    // Three messages to each, and a consumer on each (deliveries may come
    // before the second consume-ok).
    let mut out = BytesMut::new();
    for (name, exclusive, _) in &names {
        for seq in 0..3 {
            codec::encode_method(
                &mut out,
                CHANNEL,
                &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: short(""),
                    routing_key: short(name),
                    mandatory: false,
                    immediate: false,
                })),
            );
            let b = body(CHURN_LANE, seq);
            codec::encode_content(&mut out, CHANNEL, &[0, 0], &b, conn.frame_max);
        }
        codec::encode_method(
            &mut out,
            CHANNEL,
            &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: short(name),
                consumer_tag: short(&format!("abrupt-{exclusive}")),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        );
        c.churn_messages.fetch_add(3, Relaxed);
    }
    conn.wbuf.extend_from_slice(&out);
    conn.flush().await?;
    let mut consume_oks = 0;
    while consume_oks < names.len() {
        match codec::decode(&mut conn.rbuf, conn.frame_max)
            .map_err(|e| anyhow!("bad frame from the broker: {}", e.reply_text()))?
        {
            Some(codec::Frame::Method { channel, method }) => {
                match conn.control(channel, *method).await? {
                    Some(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => consume_oks += 1,
                    Some(AMQPClass::Basic(basic::AMQPMethod::Deliver(_))) | None => {}
                    Some(other) => bail!("unexpected {} from the broker", describe(&other)),
                }
            }
            Some(_) => {}
            None => {
                conn.read_more().await?;
            }
        }
    }
    // Let some deliveries arrive, then vanish.
    let _ = tokio::time::timeout(Duration::from_millis(20), conn.read_more()).await;
    drop(conn);
    c.queues_deleted.fetch_add(2, Relaxed);
    Ok(())
}

/// The reply code of a broker-initiated close carried by a lapin error.
fn code_of(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => Some(err.get_id()),
        _ => None,
    }
}

fn expect_code<T>(r: lapin::Result<T>, code: u16, what: &str) -> Result<()> {
    match r {
        Ok(_) => bail!("{what}: succeeded, expected a {code} channel error"),
        Err(e) if code_of(&e) == Some(code) => Ok(()),
        Err(e) => bail!("{what}: expected a {code} channel error, got {e}"),
    }
}

/// The channel errors a client provokes; each must close only its channel,
/// with the right code, and the connection must carry on.
async fn provoke_errors(soak: &Soak, id: &str) -> Result<()> {
    let c = &soak.c;
    let conn = connect_churn(soak, &format!("soak errors {id}")).await?;
    c.churn_connections.fetch_add(1, Relaxed);

    let ch = conn.create_channel().await?;
    let r = ch
        .queue_declare(
            format!("soak.missing.{id}").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_code(r, 404, "passive declare of a missing queue")?;
    c.expected_errors.fetch_add(1, Relaxed);

    let ch = conn.create_channel().await?;
    let q = format!("soak.churn.q.err.{id}");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    c.queues_declared.fetch_add(1, Relaxed);
    let r = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            table(&[("x-max-length", long(5))]),
        )
        .await;
    expect_code(r, 406, "redeclaring a queue with other arguments")?;
    c.expected_errors.fetch_add(1, Relaxed);

    let ch = conn.create_channel().await?;
    ch.basic_publish(
        format!("soak.missing.{id}").as_str().into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await?;
    // The 404 closes the channel asynchronously; the next call sees it.
    let r = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    let r = match r {
        // The close may not have arrived before the declare-ok did.
        Ok(_) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match r {
        Err(e) if code_of(&e) == Some(404) => {}
        Err(e) if matches!(e.kind(), lapin::ErrorKind::InvalidChannelState(..)) => {}
        Err(e) => bail!("publish to a missing exchange: expected 404, got {e}"),
        Ok(_) => bail!("publish to a missing exchange: the channel stayed open"),
    }
    c.expected_errors.fetch_add(1, Relaxed);

    let ch = conn.create_channel().await?;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await?;
    c.queues_deleted.fetch_add(1, Relaxed);
    c.churn_channels.fetch_add(4, Relaxed);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// A connection with heartbeats, a server-named exclusive queue and a
/// consumer, held for `hold` while it sends itself a message a second.
async fn linger(soak: &Soak, id: &str, hold: Duration) -> Result<()> {
    let c = &soak.c;
    let uri = with_query(&soak.uri, "frame_max=8192&heartbeat=5");
    let conn = connect_uri(&uri, &format!("soak linger {id}")).await?;
    c.churn_connections.fetch_add(1, Relaxed);
    c.churn_lingering.fetch_add(1, Relaxed);
    let ch = conn.create_channel().await?;
    c.churn_channels.fetch_add(1, Relaxed);
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    c.queues_declared.fetch_add(1, Relaxed);
    let name = q.name().clone();
    let mut consumer = ch
        .basic_consume(
            name.clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let until = Instant::now() + hold;
    let (mut sent, mut got) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut pending = VecDeque::new();
    while Instant::now() < until && !soak.stop_churn.load(Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                let b = body(CHURN_LANE, sent);
                pending.push_back(sent);
                ch.basic_publish("".into(), name.clone(), BasicPublishOptions::default(), &b, churn_props())
                    .await?;
                sent += 1;
            }
            d = consumer.next() => {
                let d = d.ok_or_else(|| anyhow!("the consumer ended"))??;
                let (_, seq) = check_body(&d.data)?;
                if pending.pop_front() != Some(seq) {
                    bail!("message {seq} out of order on a private queue");
                }
                d.ack(BasicAckOptions::default()).await?;
                got += 1;
            }
        }
    }
    // What was sent arrives within 5 s.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while got < sent {
            let d = consumer
                .next()
                .await
                .ok_or_else(|| anyhow!("the consumer ended"))??;
            check_body(&d.data)?;
            d.ack(BasicAckOptions::default()).await?;
            got += 1;
        }
        Ok::<(), anyhow::Error>(())
    })
    .await;
    match rest {
        Ok(r) => r?,
        Err(_) => bail!("{got} of {sent} messages to itself arrived"),
    }
    c.churn_messages.fetch_add(sent, Relaxed);
    conn.close(200, "bye".into()).await?;
    c.queues_deleted.fetch_add(1, Relaxed);
    Ok(())
}

// --------------------------------------------------------------- summary

#[derive(Serialize)]
struct LaneSummary {
    queue: String,
    kind: LaneKind,
    published: u64,
    confirmed: u64,
    missing: u64,
}

#[derive(Serialize)]
pub struct SoakSummary {
    mode: &'static str,
    pass: bool,
    duration_s: f64,
    published: u64,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    acked: u64,
    requeued: u64,
    rejected_to_dlx: u64,
    dead_letters: u64,
    redelivered: u64,
    duplicates: u64,
    missing: u64,
    megabytes_published: f64,
    consumer_restarts: u64,
    churn_connections: u64,
    churn_abrupt: u64,
    churn_lingering: u64,
    churn_channels: u64,
    churn_messages: u64,
    queues_declared: u64,
    queues_deleted: u64,
    exchanges_declared: u64,
    bindings: u64,
    expected_errors: u64,
    errors: u64,
    error_log: Vec<String>,
    lanes: Vec<LaneSummary>,
}

fn summary(soak: &Soak, missing: u64) -> SoakSummary {
    let c = &soak.c;
    let g = |a: &AtomicU64| a.load(Relaxed);
    let errors = g(&c.errors);
    SoakSummary {
        mode: "soak",
        pass: errors == 0 && missing == 0,
        duration_s: (soak.elapsed() * 10.0).round() / 10.0,
        published: g(&c.published),
        confirmed: g(&c.confirmed),
        nacked: g(&c.nacked),
        returned: g(&c.returned),
        acked: g(&c.acked),
        requeued: g(&c.requeued),
        rejected_to_dlx: g(&c.rejected_to_dlx),
        dead_letters: g(&c.dead_letters),
        redelivered: g(&c.redelivered),
        duplicates: g(&c.duplicates),
        missing,
        megabytes_published: (g(&c.bytes) as f64 / 1e5).round() / 10.0,
        consumer_restarts: g(&c.consumer_restarts),
        churn_connections: g(&c.churn_connections),
        churn_abrupt: g(&c.churn_abrupt),
        churn_lingering: g(&c.churn_lingering),
        churn_channels: g(&c.churn_channels),
        churn_messages: g(&c.churn_messages),
        queues_declared: g(&c.queues_declared),
        queues_deleted: g(&c.queues_deleted),
        exchanges_declared: g(&c.exchanges_declared),
        bindings: g(&c.bindings),
        expected_errors: g(&c.expected_errors),
        errors,
        error_log: lock(&soak.error_log).clone(),
        lanes: soak
            .lanes
            .iter()
            .map(|l| {
                let s = lock(&l.stream);
                LaneSummary {
                    queue: l.queue.clone(),
                    kind: l.kind,
                    published: l.next_seq.load(Relaxed),
                    confirmed: s.confirmed_n,
                    missing: s.outstanding(),
                }
            })
            .collect(),
    }
}

fn render(s: &SoakSummary) -> String {
    let mut out = format!(
        "soak {} after {:.0} s\n\
         messages: {} published ({} MB), {} confirmed, {} nacked, {} returned\n\
         \x20         {} acked, {} requeued, {} rejected to the DLX, {} dead letters consumed,\n\
         \x20         {} redelivered, {} duplicates, {} confirmed but never delivered\n\
         consumers: {} flaky restarts\n\
         churn: {} connections ({} dropped without close, {} lingering), {} channels,\n\
         \x20      {} queues declared / {} deleted, {} exchanges, {} bindings, {} messages\n\
         errors: {} expected (provoked), {} unexpected",
        if s.pass { "PASSED" } else { "FAILED" },
        s.duration_s,
        s.published,
        s.megabytes_published,
        s.confirmed,
        s.nacked,
        s.returned,
        s.acked,
        s.requeued,
        s.rejected_to_dlx,
        s.dead_letters,
        s.redelivered,
        s.duplicates,
        s.missing,
        s.consumer_restarts,
        s.churn_connections,
        s.churn_abrupt,
        s.churn_lingering,
        s.churn_channels,
        s.queues_declared,
        s.queues_deleted,
        s.exchanges_declared,
        s.bindings,
        s.churn_messages,
        s.expected_errors,
        s.errors,
    );
    for e in &s.error_log {
        out.push_str(&format!("\n  {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_corruption_is_seen() {
        for seq in [0, 49, 50, 80, 95, 99, 1234] {
            let mut b = body(3, seq);
            assert_eq!(b.len(), size_of_message(seq));
            assert_eq!(check_body(&b).unwrap(), (3, seq));
            let last = b.len() - 1;
            b[last] ^= 1;
            assert!(check_body(&b).is_err());
        }
        assert!(check_body(&body(1, 0)[..40]).is_err());
    }

    #[test]
    fn bits() {
        let mut b = Bits::default();
        assert!(!b.get(1000));
        assert!(b.set(1000));
        assert!(!b.set(1000));
        assert!(b.get(1000) && !b.get(999) && !b.get(1001));
    }
}
