//! The non-messaging scenarios: queue declaration throughput and idle
//! connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{Args, fill};
use crate::conn::Conn;
use crate::procstat::{self, ProcSample};
use crate::setup;
use crate::stats::{DeclareSummary, DepthSummary, IdleSummary};
use crate::uri::AmqpUri;

fn sample(pid: Option<&str>) -> Option<ProcSample> {
    pid.and_then(|p| procstat::sample(p).ok())
}

fn per_second(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs).round()
    } else {
        0.0
    }
}

/// `--queue-declare-bench N`: declare N queues on one channel with up to
/// `--declare-window` declarations in flight, then delete them the same way.
pub async fn queue_declare(args: &Args, uri: &AmqpUri, n: usize) -> Result<DeclareSummary> {
    if n > 1 && !args.queue_pattern.contains("%d") {
        bail!("--queue-pattern needs %d to name {n} queues");
    }
    let pid = args.broker_pid.map(|p| p.to_string());
    let names: Vec<String> = (1..=n)
        .map(|i| fill(&args.queue_pattern, &i.to_string()))
        .collect();
    let queue_args = args.queue_arguments();
    let mut conn = Conn::open(uri, args.heartbeat, "warren-perf declare-bench").await?;
    let start = sample(pid.as_deref());
    let t = Instant::now();
    conn.pipeline(
        names
            .iter()
            .map(|q| setup::queue_declare(q, args.persistent, &queue_args)),
        args.declare_window,
        setup::is_declare_ok,
    )
    .await?;
    let declare_s = t.elapsed().as_secs_f64();
    // Let the broker settle (and the RSS show what the queues hold on to).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let declared = sample(pid.as_deref());
    let mut delete_s = 0.0;
    if !args.keep_queues {
        let t = Instant::now();
        conn.pipeline(
            names.iter().map(|q| setup::queue_delete(q)),
            args.declare_window,
            setup::is_delete_ok,
        )
        .await?;
        delete_s = t.elapsed().as_secs_f64();
    }
    conn.close().await?;
    let end = sample(pid.as_deref());
    let broker = match (&pid, start, declared, end) {
        (Some(pid), Some(s), Some(d), Some(e)) => {
            Some(crate::process_stats(pid, &s, &e, d.rss_kb, n as u64))
        }
        _ => None,
    };
    let broker_bytes_per_queue = match (start, declared) {
        (Some(s), Some(d)) if n > 0 => {
            Some(((d.rss_kb as f64 - s.rss_kb as f64) * 1024.0 / n as f64).round())
        }
        _ => None,
    };
    Ok(DeclareSummary {
        mode: "queue-declare",
        uri: uri.redacted(),
        queues: n,
        durable: args.persistent,
        declare_s: round3(declare_s),
        declares_per_s: per_second(n, declare_s),
        delete_s: round3(delete_s),
        deletes_per_s: per_second(if delete_s > 0.0 { n } else { 0 }, delete_s),
        broker,
        broker_bytes_per_queue,
    })
}

/// `--queue-depth QUEUE`: one passive queue.declare.
pub async fn queue_depth(args: &Args, uri: &AmqpUri, queue: &str) -> Result<DepthSummary> {
    let mut conn = Conn::open(uri, args.heartbeat, "warren-perf queue-depth").await?;
    let (messages, consumers) = setup::queue_counts(&mut conn, queue).await?;
    conn.close().await?;
    Ok(DepthSummary {
        mode: "queue-depth",
        uri: uri.redacted(),
        queue: queue.to_string(),
        messages,
        consumers,
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `--idle-connections N`: open N connections with one channel each (up to
/// `--connect-concurrency` handshakes at once), hold them, close them.
pub async fn idle_connections(args: &Args, uri: &AmqpUri, n: usize) -> Result<IdleSummary> {
    // Each connection is a file descriptor here too.
    if let Err(e) = rlimit::increase_nofile_limit(n as u64 + 256) {
        eprintln!("warning: cannot raise the open-files limit: {e}");
    }
    let pid = args.broker_pid.map(|p| p.to_string());
    let start = sample(pid.as_deref());
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut set = JoinSet::new();
    let t = Instant::now();
    for i in 0..n {
        let (sem, uri, hb) = (sem.clone(), uri.clone(), args.heartbeat);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            tokio::time::timeout(
                Duration::from_secs(30),
                Conn::open(&uri, hb, &format!("warren-perf idle {i}")),
            )
            .await
            .map_err(|_| anyhow::anyhow!("handshake timed out after 30 s"))?
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let open_s = t.elapsed().as_secs_f64();
    if !args.quiet {
        eprintln!(
            "opened {}/{} connections in {open_s:.2} s; holding for {:.1} s",
            conns.len(),
            n,
            args.idle_hold
        );
    }
    let hold_until = Instant::now() + Duration::from_secs_f64(args.idle_hold);
    let mut peak = start.map_or(0, |s| s.rss_kb);
    while Instant::now() < hold_until {
        let step = hold_until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        tokio::time::sleep(step).await;
        if let Some(s) = sample(pid.as_deref()) {
            peak = peak.max(s.rss_kb);
        }
    }
    let held = sample(pid.as_deref());
    // A connection the broker closed in the meantime has something to read
    // (connection.close or EOF); an idle open one has nothing.
    let still_open = conns.iter().filter(|c| c.rd.looks_idle()).count();
    let opened = conns.len();
    let mut set = JoinSet::new();
    for c in conns {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let _ = c.close().await;
        });
    }
    while set.join_next().await.is_some() {}
    let end = sample(pid.as_deref());
    let broker = match (&pid, start, end) {
        (Some(pid), Some(s), Some(e)) => Some(crate::process_stats(
            pid,
            &s,
            &e,
            peak.max(held.map_or(0, |h| h.rss_kb)),
            opened as u64,
        )),
        _ => None,
    };
    let broker_bytes_per_connection = match (start, held) {
        (Some(s), Some(h)) if opened > 0 => {
            Some(((h.rss_kb as f64 - s.rss_kb as f64) * 1024.0 / opened as f64).round())
        }
        _ => None,
    };
    Ok(IdleSummary {
        mode: "idle-connections",
        uri: uri.redacted(),
        requested: n,
        opened,
        failed,
        first_error,
        open_s: round3(open_s),
        opens_per_s: per_second(opened, open_s),
        hold_s: args.idle_hold,
        still_open,
        broker,
        broker_bytes_per_connection,
    })
}
