//! warren-perf: a load generator for AMQP 0-9-1 brokers in the spirit of
//! RabbitMQ's PerfTest. See `warren-perf --help` for the flags, the
//! scenarios, how latency is measured and the JSON summary's fields.
//!
//! Design: every producer and consumer owns one TCP connection and is one
//! tokio task (by default all on one thread). A task reads into one buffer
//! and cuts frames off it in place; it writes from one buffer that collects
//! many frames (a producer's batch of publishes, a consumer's acks for a
//! whole read) per write syscall. Per-message work is a template copy plus
//! two integers on the way out and a few byte comparisons on the way in.

mod bench;
mod cli;
mod clock;
mod conn;
mod consumer;
mod delayed;
mod pacer;
mod procstat;
mod producer;
mod setup;
mod soak;
mod stats;
mod transport;
mod uri;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::{Args, Topology};
use crate::conn::Conn;
use crate::consumer::ConsumerCfg;
use crate::procstat::ProcSample;
use crate::producer::{ExpirationSpread, ProducerCfg};
use crate::stats::{Counts, Percentiles, ProcessStats, RunSummary, Shared};
use crate::uri::AmqpUri;

/// The phases of a run, broadcast to every task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Connections are being opened; consumers are registering.
    Setup,
    /// Producers publish.
    Go,
    /// Producers finish (await confirms) and close.
    StopProducers,
    /// Consumers ack what they hold and close.
    StopConsumers,
}

/// A timer for sending heartbeats at half the negotiated interval (never
/// fires usefully when heartbeats are off; callers disable the branch).
pub fn heartbeat_timer(heartbeat: u16) -> tokio::time::Interval {
    let period = Duration::from_millis(u64::from(heartbeat.max(1)) * 500);
    let mut t = tokio::time::interval_at(Instant::now() + period, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    // The soak's client library runs a thread per connection that blocks
    // on the runtime: it needs worker threads of its own.
    let threads = if args.soak.is_some() {
        args.threads.max(2)
    } else {
        args.threads
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let uri = uri::parse(&args.uri)?;
    clock::now_ns(); // fix the clock's anchor before anything is stamped
    if let Some(pid) = args.broker_pid {
        procstat::sample(&pid.to_string())
            .with_context(|| format!("--broker-pid {pid}: no such process?"))?;
    }
    if let Some(seconds) = args.soak {
        return soak::run(&args, seconds).await;
    }
    if let Some(n) = args.delayed {
        let s = delayed::run(&args, &args.uri, n).await?;
        print_summary(&args, &s.render(), &s)?;
        return Ok(if s.delivered == n && s.early == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    }
    if let Some(n) = args.queue_declare_bench {
        let s = bench::queue_declare(&args, &uri, n).await?;
        print_summary(&args, &s.render(), &s)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(q) = &args.queue_depth {
        let s = bench::queue_depth(&args, &uri, q).await?;
        print_summary(&args, &s.render(), &s)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(n) = args.idle_connections {
        let s = bench::idle_connections(&args, &uri, n).await?;
        print_summary(&args, &s.render(), &s)?;
        return Ok(if s.failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    throughput(args, uri).await
}

fn print_summary<T: serde::Serialize>(args: &Args, text: &str, value: &T) -> Result<()> {
    if args.json {
        eprintln!("{text}");
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

/// Spawn a task whose error, if any, is reported on `errors`.
fn spawn_reporting<F>(
    label: String,
    errors: &mpsc::UnboundedSender<anyhow::Error>,
    fut: F,
) -> JoinHandle<()>
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    let errors = errors.clone();
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            let _ = errors.send(e.context(label));
        }
    })
}

/// Sample a process, or None without a pid.
fn sample_opt(pid: Option<&str>) -> Option<ProcSample> {
    pid.and_then(|p| procstat::sample(p).ok())
}

pub fn process_stats(
    pid: &str,
    start: &ProcSample,
    end: &ProcSample,
    peak_rss: u64,
    ops: u64,
) -> ProcessStats {
    let cpu_s = procstat::cpu_seconds(start, end);
    ProcessStats {
        pid: pid.to_string(),
        cpu_s: (cpu_s * 1000.0).round() / 1000.0,
        cpu_us_per_msg: (ops > 0).then(|| ((cpu_s * 1e6 / ops as f64) * 1000.0).round() / 1000.0),
        rss_start_kb: start.rss_kb,
        rss_peak_kb: peak_rss.max(end.rss_kb).max(start.rss_kb),
        rss_final_kb: end.rss_kb,
        hwm_kb: end.hwm_kb,
    }
}

/// Wait for `n` readiness signals, failing on the first task error.
async fn await_ready(
    what: &str,
    n: usize,
    ready: &mut mpsc::Receiver<()>,
    errors: &mut mpsc::UnboundedReceiver<anyhow::Error>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        tokio::select! {
            r = ready.recv() => { r.ok_or_else(|| anyhow!("{what} setup ended early"))?; }
            e = errors.recv() => return Err(e.unwrap_or_else(|| anyhow!("{what} setup failed"))),
            _ = tokio::time::sleep_until(deadline) => bail!("{what} were not ready within 60 s"),
        }
    }
    Ok(())
}

async fn throughput(args: Args, uri: AmqpUri) -> Result<ExitCode> {
    let topo = Topology::plan(&args)?;
    let shared = Arc::new(Shared::new());
    let broker_pid = args.broker_pid.map(|p| p.to_string());

    let mut setup_conn = Conn::open(&uri, args.heartbeat, "warren-perf setup").await?;
    let t = Instant::now();
    let bindings = setup::declare(&mut setup_conn, &topo, args.persistent).await?;
    if bindings > 100 && !args.quiet {
        eprintln!(
            "declared {} queue(s) and {bindings} binding(s) in {:.3} s",
            topo.queues.len() + usize::from(topo.side.is_some()),
            t.elapsed().as_secs_f64()
        );
    }
    setup_conn.close().await?;

    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (err_tx, mut err_rx) = mpsc::unbounded_channel::<anyhow::Error>();
    let result = drive(
        &args,
        &uri,
        &topo,
        &shared,
        broker_pid.as_deref(),
        &phase_tx,
        phase_rx,
        &err_tx,
        &mut err_rx,
    )
    .await;
    // Whatever happened, stop every task and try to leave the broker clean.
    let _ = phase_tx.send(Phase::StopConsumers);
    if !args.keep_queues {
        let cleanup = async {
            let mut c = Conn::open(&uri, 0, "warren-perf teardown").await?;
            setup::teardown(&mut c, &topo).await?;
            c.close().await
        };
        match tokio::time::timeout(Duration::from_secs(30), cleanup).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cleanup failed: {e:#}"),
            Err(_) => eprintln!("warning: cleanup timed out"),
        }
    }
    let summary = result?;
    print_summary(&args, &summary.render(), &summary)?;
    if summary.nacked > 0 || summary.returned > 0 {
        eprintln!(
            "error: {} message(s) nacked and {} returned by the broker",
            summary.nacked, summary.returned
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &Args,
    uri: &AmqpUri,
    topo: &Topology,
    shared: &Arc<Shared>,
    broker_pid: Option<&str>,
    phase_tx: &watch::Sender<Phase>,
    phase_rx: watch::Receiver<Phase>,
    err_tx: &mpsc::UnboundedSender<anyhow::Error>,
    err_rx: &mut mpsc::UnboundedReceiver<anyhow::Error>,
) -> Result<RunSummary> {
    // Consumers first: registered before anything is published.
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(args.consumers.max(args.producers).max(1));
    let mut consumer_tasks = Vec::new();
    for (id, queue) in topo.consumer_queues.iter().enumerate() {
        let cfg = ConsumerCfg {
            id,
            queue: queue.clone(),
            auto_ack: args.auto_ack,
            prefetch: args.prefetch,
            multi_ack_every: args.multi_ack_every,
            arguments: args.consumer_arguments(),
        };
        let (uri, shared, phase, ready) = (
            uri.clone(),
            shared.clone(),
            phase_rx.clone(),
            ready_tx.clone(),
        );
        let heartbeat = args.heartbeat;
        consumer_tasks.push(spawn_reporting(
            format!("consumer {id}"),
            err_tx,
            async move {
                let mut conn =
                    Conn::open(&uri, heartbeat, &format!("warren-perf consumer {id}")).await?;
                consumer::prepare(&mut conn, &cfg).await?;
                let _ = ready.send(()).await;
                consumer::run(conn, cfg, shared, phase).await
            },
        ));
    }
    await_ready(
        "consumers",
        topo.consumer_queues.len(),
        &mut ready_rx,
        err_rx,
    )
    .await?;

    let mut producer_tasks = Vec::new();
    for (id, route) in topo.routes.iter().enumerate() {
        let cfg = ProducerCfg {
            id,
            exchange: topo.exchange.clone(),
            route: route.clone(),
            size: args.size,
            json_body: args.json_body,
            properties: if args.json_body {
                args.message_properties()
                    .with_content_type("application/json".into())
            } else {
                args.message_properties()
            },
            expiration_spread: args
                .expiration_spread
                .zip(args.expiration())
                .map(|(spread_ms, base_ms)| ExpirationSpread { base_ms, spread_ms }),
            persistent: args.persistent,
            mandatory: args.mandatory,
            confirm: args.confirm,
            rate: args.rate_limit(),
            pmessages: args.pmessages,
            write_batch: args.write_batch,
            drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        };
        let (uri, shared, phase, ready) = (
            uri.clone(),
            shared.clone(),
            phase_rx.clone(),
            ready_tx.clone(),
        );
        let heartbeat = args.heartbeat;
        producer_tasks.push(spawn_reporting(
            format!("producer {id}"),
            err_tx,
            async move {
                let mut conn =
                    Conn::open(&uri, heartbeat, &format!("warren-perf producer {id}")).await?;
                producer::prepare(&mut conn, &cfg).await?;
                let _ = ready.send(()).await;
                producer::run(conn, cfg, shared, phase).await
            },
        ));
    }
    await_ready("producers", topo.routes.len(), &mut ready_rx, err_rx).await?;

    // Go.
    let broker_start = sample_opt(broker_pid);
    let client_start = procstat::sample("self")?;
    let mut broker_peak = broker_start.map_or(0, |s| s.rss_kb);
    let mut client_peak = client_start.rss_kb;
    let t0 = Instant::now();
    phase_tx.send(Phase::Go)?;
    let mut samples: Vec<(f64, Counts)> = vec![(0.0, Counts::default())];
    let mut total_latency = stats::new_histogram();
    let mut total_confirm = stats::new_histogram();
    let end_at = t0 + Duration::from_secs_f64(args.time.unwrap_or(1e7));
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let n_producers = topo.routes.len();
    // Draining a prefilled queue (-D without producers): notice the last
    // message within 10 ms rather than at the next one-second tick, so the
    // drain rate is not diluted by up to a second of nothing.
    let drain_target = args.cmessages.filter(|_| n_producers == 0);
    let mut drain_poll = tokio::time::interval(Duration::from_millis(10));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = drain_poll.tick(), if drain_target.is_some() => {
                if drain_target.is_some_and(|n| shared.counts().received >= n) {
                    break;
                }
            }
            _ = tick.tick() => {
                let t = t0.elapsed().as_secs_f64();
                let c = shared.counts();
                let interval = Shared::take_interval(&shared.latency, &mut total_latency);
                Shared::take_interval(&shared.confirm_latency, &mut total_confirm);
                if let Some(&(pt, p)) = samples.last()
                    && !args.quiet
                {
                    let dt = (t - pt).max(1e-9);
                    eprintln!(
                        "{}",
                        stats::progress_line(
                            t,
                            (c.sent - p.sent) as f64 / dt,
                            (args.confirm > 0).then(|| (c.confirmed - p.confirmed) as f64 / dt),
                            (c.received - p.received) as f64 / dt,
                            Percentiles::of(&interval).as_ref(),
                        )
                    );
                }
                samples.push((t, c));
                if let Some(s) = sample_opt(broker_pid) {
                    broker_peak = broker_peak.max(s.rss_kb);
                }
                if let Ok(s) = procstat::sample("self") {
                    client_peak = client_peak.max(s.rss_kb);
                }
                if args.cmessages.is_some_and(|n| c.received >= n) {
                    break;
                }
            }
            _ = tokio::time::sleep_until(end_at) => break,
            e = err_rx.recv() => return Err(e.unwrap_or_else(|| anyhow!("a task failed"))),
            _ = &mut ctrl_c => {
                eprintln!("interrupted: stopping");
                break;
            }
            _ = shared.producer_stopped_notify.notified(), if n_producers > 0 => {
                if shared.producers_stopped.load(Ordering::Relaxed) >= n_producers {
                    break;
                }
            }
        }
    }
    let t_stop = t0.elapsed().as_secs_f64();
    let at_stop = shared.counts();
    samples.push((t_stop, at_stop));

    // Producers finish: outstanding confirms, then connection.close.
    phase_tx.send(Phase::StopProducers)?;
    let drain = Duration::from_secs_f64(args.drain_timeout);
    for task in producer_tasks {
        tokio::select! {
            _ = task => {}
            e = err_rx.recv() => return Err(e.unwrap_or_else(|| anyhow!("a producer failed"))),
            _ = tokio::time::sleep(drain + Duration::from_secs(10)) => bail!("producers did not stop"),
        }
    }
    // Consumers drain what is still on its way.
    let c = shared.counts();
    let all_consumed = topo.consumer_queues.len() >= topo.queues.len();
    let expected = c.sent.saturating_sub(c.returned) * topo.copies;
    let drain_until = Instant::now() + drain;
    if !topo.consumer_queues.is_empty() {
        let mut last = shared.counts().received;
        let mut last_progress = Instant::now();
        loop {
            let received = shared.counts().received;
            if all_consumed && received >= expected {
                break;
            }
            if received != last {
                last = received;
                last_progress = Instant::now();
            } else if !all_consumed && last_progress.elapsed() > Duration::from_millis(500) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                e = err_rx.recv() => return Err(e.unwrap_or_else(|| anyhow!("a consumer failed"))),
                _ = tokio::time::sleep_until(drain_until) => break,
            }
        }
    }
    phase_tx.send(Phase::StopConsumers)?;
    for task in consumer_tasks {
        tokio::select! {
            _ = task => {}
            e = err_rx.recv() => return Err(e.unwrap_or_else(|| anyhow!("a consumer failed"))),
            _ = tokio::time::sleep(Duration::from_secs(10)) => bail!("consumers did not stop"),
        }
    }
    if let Ok(e) = err_rx.try_recv() {
        return Err(e);
    }
    let broker_end = sample_opt(broker_pid);
    let client_end = procstat::sample("self")?;
    Shared::take_interval(&shared.latency, &mut total_latency);
    Shared::take_interval(&shared.confirm_latency, &mut total_confirm);
    let fin = shared.counts();

    // Rates over the production phase minus its first second (a drain has
    // no warm-up: it is measured from its start).
    let (w0, c0) = if t_stop >= 2.0 && drain_target.is_none() {
        samples
            .iter()
            .find(|(t, _)| *t >= 1.0)
            .copied()
            .unwrap_or((0.0, Counts::default()))
    } else {
        (0.0, Counts::default())
    };
    let dt = (t_stop - w0).max(1e-9);
    let rate = |a: u64, b: u64| ((a.saturating_sub(b)) as f64 / dt).round();
    let delivered_or_sent = if fin.received > 0 {
        fin.received
    } else {
        fin.sent
    };
    if fin.received < expected && all_consumed && !topo.consumer_queues.is_empty() {
        eprintln!(
            "warning: received {} of {} expected deliveries within the {:.1} s drain",
            fin.received, expected, args.drain_timeout
        );
    }
    Ok(RunSummary {
        mode: "throughput",
        uri: uri.redacted(),
        producers: topo.routes.len(),
        consumers: topo.consumer_queues.len(),
        queues: topo.queues.len(),
        exchange: topo.exchange.clone(),
        exchange_type: topo.kind.as_str().to_string(),
        size: args.size,
        confirm: args.confirm,
        persistent: args.persistent,
        auto_ack: args.auto_ack,
        prefetch: args.prefetch,
        multi_ack_every: args.multi_ack_every,
        rate_target: args.rate_limit(),
        duration_s: (t_stop * 1000.0).round() / 1000.0,
        rate_window_s: [
            (w0 * 1000.0).round() / 1000.0,
            (t_stop * 1000.0).round() / 1000.0,
        ],
        sent: fin.sent,
        confirmed: fin.confirmed,
        nacked: fin.nacked,
        returned: fin.returned,
        received: fin.received,
        expected,
        send_rate: rate(at_stop.sent, c0.sent),
        confirm_rate: rate(at_stop.confirmed, c0.confirmed),
        receive_rate: rate(at_stop.received, c0.received),
        latency_us: Percentiles::of(&total_latency),
        confirm_latency_us: Percentiles::of(&total_confirm),
        broker: match (broker_pid, broker_start, broker_end) {
            (Some(pid), Some(s), Some(e)) => {
                Some(process_stats(pid, &s, &e, broker_peak, delivered_or_sent))
            }
            _ => None,
        },
        client: process_stats(
            &std::process::id().to_string(),
            &client_start,
            &client_end,
            client_peak,
            delivered_or_sent,
        ),
    })
}
