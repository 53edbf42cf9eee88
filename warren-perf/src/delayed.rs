//! `--delayed N`: schedule N messages through an `x-delayed-message`
//! exchange, due at random times over `--delayed-over` seconds (starting
//! `--delayed-lead` seconds after the run starts), and consume them: how late each is routed (receive time
//! minus due time; negative would be early), and what the broker spends
//! meanwhile (CPU, peak RSS). Publishes with confirms, persistent with
//! `-f`; every body carries its due time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;

use crate::cli::Args;
use crate::procstat;

const EXCHANGE: &str = "perf.delayed";
const QUEUE: &str = "perf.delayed.q";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Serialize)]
pub struct DelayedSummary {
    pub mode: &'static str,
    pub scheduled: u64,
    pub delivered: u64,
    pub early: u64,
    pub publish_rate: f64,
    pub lateness_ms_p50: u64,
    pub lateness_ms_p99: u64,
    pub lateness_ms_max: u64,
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_pct: Option<f64>,
    pub broker_rss_peak_mib: Option<f64>,
    pub broker_rss_end_mib: Option<f64>,
}

impl DelayedSummary {
    pub fn render(&self) -> String {
        format!(
            "delayed: {} scheduled over the run, {} delivered, {} early; publish {:.0} msg/s; \
             lateness p50 {} ms, p99 {} ms, max {} ms; broker CPU {}, peak RSS {}",
            self.scheduled,
            self.delivered,
            self.early,
            self.publish_rate,
            self.lateness_ms_p50,
            self.lateness_ms_p99,
            self.lateness_ms_max,
            self.broker_cpu_pct
                .map_or("-".into(), |p| format!("{p:.1} % of a core")),
            self.broker_rss_peak_mib
                .map_or("-".into(), |m| format!("{m:.0} MiB")),
        )
    }
}

pub async fn run(args: &Args, uri: &str, n: u64) -> Result<DelayedSummary> {
    let persistent = args.persistent;
    let over_ms = (args.delayed_over * 1000.0) as u64;
    let lead_ms = (args.delayed_lead * 1000.0) as u64;
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .context("connect")?;
    let ch = conn.create_channel().await?;
    let mut xargs = FieldTable::default();
    xargs.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString(LongString::from("direct")),
    );
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        EXCHANGE.into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        durable,
        xargs,
    )
    .await
    .context("declare the x-delayed-message exchange")?;
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(QUEUE.into(), qopts, FieldTable::default())
        .await?;
    ch.queue_purge(QUEUE.into(), Default::default()).await?;
    ch.queue_bind(
        QUEUE.into(),
        EXCHANGE.into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;

    // The consumer runs from the start on its own connection.
    let consumer_conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let cch = consumer_conn.create_channel().await?;
    cch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            QUEUE.into(),
            "delayed-perf".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Everything is due by lead + over; a message not there 30 s after that
    // is lost (or the publishing took longer than the lead: then later).
    let last_due = Instant::now() + Duration::from_millis(lead_ms + over_ms);
    let consume = tokio::spawn(async move {
        let mut lateness = hdrhistogram::Histogram::<u64>::new(3).ok();
        let (mut delivered, mut early) = (0u64, 0u64);
        while delivered < n {
            let wait = last_due.saturating_duration_since(Instant::now()) + Duration::from_secs(30);
            let Ok(Some(Ok(d))) = tokio::time::timeout(wait, consumer.next()).await else {
                break;
            };
            let got = now_ms();
            let due = d
                .data
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            if got < due {
                early += 1;
            } else if let Some(h) = lateness.as_mut() {
                let _ = h.record(got - due);
            }
            delivered += 1;
            if delivered % 1000 == 0 || delivered == n {
                let _ = d.acker.ack(BasicAckOptions { multiple: true }).await;
            }
        }
        (delivered, early, lateness)
    });

    let pid = args.broker_pid.map(|p| p.to_string());
    let before = pid.as_deref().and_then(|p| procstat::sample(p).ok());
    let started = Instant::now();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = pid.clone().map(|p| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(s) = procstat::sample(&p) {
                    peak.fetch_max(s.rss_kb, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });

    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let base = now_ms();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut pending = Vec::with_capacity(1000);
    for _ in 0..n {
        // xorshift: a due time uniform over [lead, lead + over).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let due = base + lead_ms + rng % over_ms.max(1);
        let now = now_ms();
        let delay = due.saturating_sub(now).max(1);
        let mut headers = FieldTable::default();
        headers.insert("x-delay".into(), AMQPValue::LongLongInt(delay as i64));
        let mut body = due.to_be_bytes().to_vec();
        body.resize(args.size.max(8), 0);
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(if persistent { 2 } else { 1 });
        let confirm = ch
            .basic_publish(
                EXCHANGE.into(),
                "k".into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?;
        pending.push(confirm);
        if pending.len() >= 1000 {
            for c in pending.drain(..) {
                c.await?;
            }
        }
    }
    for c in pending.drain(..) {
        c.await?;
    }
    let publish_rate = n as f64 / started.elapsed().as_secs_f64();
    let (delivered, early, lateness) = consume.await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = pid.as_deref().and_then(|p| procstat::sample(p).ok());
    if let Some(s) = sampler {
        s.abort();
    }
    let cpu_s = match (before, after) {
        (Some(b), Some(a)) => {
            Some((a.cpu_ticks - b.cpu_ticks) as f64 / procstat::clock_ticks() as f64)
        }
        _ => None,
    };
    let q = |p: f64| lateness.as_ref().map_or(0, |h| h.value_at_quantile(p));
    let _ = ch
        .exchange_delete(EXCHANGE.into(), Default::default())
        .await;
    let _ = ch.queue_delete(QUEUE.into(), Default::default()).await;
    Ok(DelayedSummary {
        mode: "delayed",
        scheduled: n,
        delivered,
        early,
        publish_rate,
        lateness_ms_p50: q(0.5),
        lateness_ms_p99: q(0.99),
        lateness_ms_max: lateness.as_ref().map_or(0, |h| h.max()),
        broker_cpu_s: cpu_s,
        broker_cpu_pct: cpu_s.map(|c| c / elapsed * 100.0),
        broker_rss_peak_mib: pid
            .as_ref()
            .map(|_| peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0),
        broker_rss_end_mib: after.map(|a| a.rss_kb as f64 / 1024.0),
    })
}
