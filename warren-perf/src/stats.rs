//! Counters, latency histograms, and the reports built from them.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters and histograms shared by all producer and consumer tasks. Tasks
/// update them once per read or write batch, not once per message.
pub struct Shared {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub received: AtomicU64,
    /// End-to-end latency (ns) recorded since the last progress tick.
    pub latency: Mutex<Histogram<u64>>,
    /// Publish-to-confirm latency (ns) since the last progress tick.
    pub confirm_latency: Mutex<Histogram<u64>>,
    /// Producers that reached --pmessages and stopped publishing.
    pub producers_stopped: AtomicUsize,
    pub producer_stopped_notify: tokio::sync::Notify,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            received: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            confirm_latency: Mutex::new(new_histogram()),
            producers_stopped: AtomicUsize::new(0),
            producer_stopped_notify: tokio::sync::Notify::new(),
        }
    }

    pub fn producer_stopped(&self) {
        self.producers_stopped.fetch_add(1, Ordering::Relaxed);
        self.producer_stopped_notify.notify_one();
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }

    /// Record a batch of latencies (ns) under one lock.
    pub fn record_latencies(hist: &Mutex<Histogram<u64>>, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let mut h = hist.lock().unwrap_or_else(|e| e.into_inner());
        for &v in values {
            h.saturating_record(v.max(1));
        }
    }

    /// Move what was recorded since the last call out of `hist` (leaving it
    /// empty) and add it to `total`; returns the interval's histogram.
    pub fn take_interval(
        hist: &Mutex<Histogram<u64>>,
        total: &mut Histogram<u64>,
    ) -> Histogram<u64> {
        let interval = {
            let mut h = hist.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *h, new_histogram())
        };
        // Same bounds, so adding cannot run out of range.
        let _ = total.add(&interval);
        interval
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub received: u64,
}

/// Longest latency tracked (ns); longer ones are recorded as this.
const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;

/// A histogram of nanoseconds (1 ns to 1 hour) with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3) {
        Ok(h) => h,
        // Constant, valid bounds.
        Err(_) => unreachable!("hdrhistogram rejected constant bounds"),
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        Some(Percentiles {
            count: h.len(),
            min: us(h.min()),
            mean: round1(h.mean() / 1000.0),
            p50: us(h.value_at_quantile(0.50)),
            p75: us(h.value_at_quantile(0.75)),
            p95: us(h.value_at_quantile(0.95)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Microseconds for humans: one decimal below 10 µs, whole numbers above.
pub fn fmt_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// The line printed every second.
pub fn progress_line(
    elapsed_s: f64,
    sent_rate: f64,
    confirm_rate: Option<f64>,
    received_rate: f64,
    latency: Option<&Percentiles>,
) -> String {
    let mut s = format!("time: {elapsed_s:.1}s, sent: {sent_rate:.0} msg/s");
    if let Some(c) = confirm_rate {
        let _ = write!(s, ", confirmed: {c:.0} msg/s");
    }
    let _ = write!(s, ", received: {received_rate:.0} msg/s");
    match latency {
        Some(p) => {
            let _ = write!(
                s,
                ", min/median/75th/95th/99th latency: {}/{}/{}/{}/{} µs",
                fmt_us(p.min),
                fmt_us(p.p50),
                fmt_us(p.p75),
                fmt_us(p.p95),
                fmt_us(p.p99)
            );
        }
        None => s.push_str(", latency: n/a"),
    }
    s
}

/// Broker (or client) resource use over a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessStats {
    pub pid: String,
    /// User + system CPU seconds over the measured part of the run.
    pub cpu_s: f64,
    /// `cpu_s` in µs divided by messages delivered to consumers (or by the
    /// scenario's operation count); null when nothing was delivered.
    pub cpu_us_per_msg: Option<f64>,
    pub rss_start_kb: u64,
    /// Largest VmRSS seen in the once-a-second samples.
    pub rss_peak_kb: u64,
    pub rss_final_kb: u64,
    /// VmHWM at the end (peak RSS over the process's whole life).
    pub hwm_kb: u64,
}

/// The summary of a throughput run (`"mode": "throughput"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    pub mode: &'static str,
    pub uri: String,
    pub producers: usize,
    pub consumers: usize,
    pub queues: usize,
    pub exchange: String,
    pub exchange_type: String,
    pub size: usize,
    pub confirm: u32,
    pub persistent: bool,
    pub auto_ack: bool,
    pub prefetch: u16,
    pub multi_ack_every: u32,
    /// Target publish rate per producer (msg/s); null = unlimited.
    pub rate_target: Option<f64>,
    /// Seconds from the producers' start to their stop.
    pub duration_s: f64,
    /// [start, end] in seconds of the window the rates are averaged over:
    /// the production phase minus its first second (warm-up), when it lasted
    /// at least two seconds, else all of it.
    pub rate_window_s: [f64; 2],
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub received: u64,
    /// Deliveries expected for the messages sent (sent × copies per message).
    pub expected: u64,
    /// Average rates over `rate_window_s`, msg/s (all producers/consumers).
    pub send_rate: f64,
    pub confirm_rate: f64,
    pub receive_rate: f64,
    /// End-to-end latency of every delivered message (µs).
    pub latency_us: Option<Percentiles>,
    /// Publish-to-confirm latency (µs), with --confirm.
    pub confirm_latency_us: Option<Percentiles>,
    pub broker: Option<ProcessStats>,
    /// warren-perf's own CPU use (its `cpu_us_per_msg` is per delivered
    /// message, or per sent one when nothing is consumed).
    pub client: ProcessStats,
}

impl RunSummary {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "summary: {} producer(s), {} consumer(s), {} queue(s), {} B messages, exchange '{}' ({}), ran {:.1} s",
            self.producers,
            self.consumers,
            self.queues,
            self.size,
            self.exchange,
            self.exchange_type,
            self.duration_s
        );
        let _ = writeln!(
            s,
            "  messages: sent {}, confirmed {}, nacked {}, returned {}, received {} (expected {})",
            self.sent, self.confirmed, self.nacked, self.returned, self.received, self.expected
        );
        let _ = writeln!(
            s,
            "  rates ({:.1}-{:.1} s): sent {:.0} msg/s, confirmed {:.0} msg/s, received {:.0} msg/s",
            self.rate_window_s[0],
            self.rate_window_s[1],
            self.send_rate,
            self.confirm_rate,
            self.receive_rate
        );
        if let Some(p) = &self.latency_us {
            let _ = writeln!(s, "  latency: {}", render_percentiles(p));
        }
        if let Some(p) = &self.confirm_latency_us {
            let _ = writeln!(s, "  confirm latency: {}", render_percentiles(p));
        }
        if let Some(b) = &self.broker {
            let _ = writeln!(s, "  broker: {}", render_process(b, "msg"));
        }
        let _ = write!(s, "  client: {}", render_process(&self.client, "msg"));
        s
    }
}

pub fn render_percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {} µs, p95 {} µs, p99 {} µs, p99.9 {} µs, max {} µs (min {} µs, mean {} µs, {} samples)",
        fmt_us(p.p50),
        fmt_us(p.p95),
        fmt_us(p.p99),
        fmt_us(p.p999),
        fmt_us(p.max),
        fmt_us(p.min),
        fmt_us(p.mean),
        p.count
    )
}

pub fn render_process(p: &ProcessStats, unit: &str) -> String {
    let per = match p.cpu_us_per_msg {
        Some(v) => format!(" ({v:.2} µs/{unit})"),
        None => String::new(),
    };
    format!(
        "pid {}, CPU {:.2} s{per}, RSS start {} / peak {} / final {} MiB, VmHWM {} MiB",
        p.pid,
        p.cpu_s,
        mib(p.rss_start_kb),
        mib(p.rss_peak_kb),
        mib(p.rss_final_kb),
        mib(p.hwm_kb)
    )
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// The summary of `--queue-declare-bench N` (`"mode": "queue-declare"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeclareSummary {
    pub mode: &'static str,
    pub uri: String,
    pub queues: usize,
    pub durable: bool,
    pub declare_s: f64,
    pub declares_per_s: f64,
    /// 0 when --keep-queues.
    pub delete_s: f64,
    pub deletes_per_s: f64,
    /// Broker CPU over declare + delete, `cpu_us_per_msg` per queue
    /// (declare + delete); RSS peak is measured with all queues declared.
    pub broker: Option<ProcessStats>,
    /// Broker RSS growth per declared queue, bytes.
    pub broker_bytes_per_queue: Option<f64>,
}

impl DeclareSummary {
    pub fn render(&self) -> String {
        let mut s = format!(
            "queue.declare: {} {}queues in {:.3} s ({:.0} declares/s)",
            self.queues,
            if self.durable { "durable " } else { "" },
            self.declare_s,
            self.declares_per_s
        );
        if self.delete_s > 0.0 {
            let _ = write!(
                s,
                "; queue.delete: {:.3} s ({:.0} deletes/s)",
                self.delete_s, self.deletes_per_s
            );
        }
        if let Some(b) = &self.broker {
            let _ = write!(s, "\n  broker: {}", render_process(b, "queue"));
        }
        if let Some(bpq) = self.broker_bytes_per_queue {
            let _ = write!(s, "\n  broker RSS growth: {:.0} bytes/queue", bpq);
        }
        s
    }
}

/// The answer of `--queue-depth QUEUE` (`"mode": "queue-depth"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepthSummary {
    pub mode: &'static str,
    pub uri: String,
    pub queue: String,
    pub messages: u32,
    pub consumers: u32,
}

impl DepthSummary {
    /// `QUEUE MESSAGES CONSUMERS` on one line, for `read` in a shell loop.
    pub fn render(&self) -> String {
        format!("{} {} {}", self.queue, self.messages, self.consumers)
    }
}

/// The summary of `--idle-connections N` (`"mode": "idle-connections"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleSummary {
    pub mode: &'static str,
    pub uri: String,
    pub requested: usize,
    /// Connections that completed the handshake and opened a channel.
    pub opened: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub open_s: f64,
    pub opens_per_s: f64,
    pub hold_s: f64,
    /// Connections still open at the end of the hold (broker did not close
    /// them).
    pub still_open: usize,
    pub broker: Option<ProcessStats>,
    /// (RSS while holding − RSS before) / opened, bytes.
    pub broker_bytes_per_connection: Option<f64>,
}

impl IdleSummary {
    pub fn render(&self) -> String {
        let mut s = format!(
            "idle connections: {}/{} opened ({} failed) in {:.2} s ({:.0} conn/s), {} still open after {:.1} s",
            self.opened,
            self.requested,
            self.failed,
            self.open_s,
            self.opens_per_s,
            self.still_open,
            self.hold_s
        );
        if let Some(e) = &self.first_error {
            let _ = write!(s, "\n  first error: {e}");
        }
        if let Some(b) = &self.broker {
            let _ = write!(s, "\n  broker: {}", render_process(b, "connection"));
        }
        if let Some(bpc) = self.broker_bytes_per_connection {
            let _ = write!(
                s,
                "\n  broker RSS growth: {:.1} KiB/connection",
                bpc / 1024.0
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.saturating_record(v * 1000); // 1..1000 µs
        }
        let p = Percentiles::of(&h).unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 1.0);
        assert!((p.p50 - 500.0).abs() <= 1.0, "{}", p.p50);
        assert!((p.p99 - 990.0).abs() <= 1.0, "{}", p.p99);
        assert!((p.p999 - 999.0).abs() <= 1.0, "{}", p.p999);
        assert!((p.max - 1000.0).abs() <= 1.0, "{}", p.max);
        assert!(Percentiles::of(&new_histogram()).is_none());
    }

    #[test]
    fn interval_moves_into_total() {
        let shared = Shared::new();
        let mut total = new_histogram();
        Shared::record_latencies(&shared.latency, &[1000, 2000, 3000]);
        let i = Shared::take_interval(&shared.latency, &mut total);
        assert_eq!(i.len(), 3);
        Shared::record_latencies(&shared.latency, &[4000]);
        let i = Shared::take_interval(&shared.latency, &mut total);
        assert_eq!(i.len(), 1);
        assert_eq!(total.len(), 4);
        assert!(Shared::take_interval(&shared.latency, &mut total).is_empty());
    }

    #[test]
    fn progress_line_format() {
        let p = Percentiles {
            count: 10,
            min: 4.26,
            mean: 50.0,
            p50: 42.0,
            p75: 55.4,
            p95: 80.0,
            p99: 123.0,
            p999: 300.0,
            max: 400.0,
        };
        assert_eq!(
            progress_line(3.0, 123456.4, None, 123400.0, Some(&p)),
            "time: 3.0s, sent: 123456 msg/s, received: 123400 msg/s, \
             min/median/75th/95th/99th latency: 4.3/42/55/80/123 µs"
        );
        assert_eq!(
            progress_line(1.0, 10.0, Some(9.0), 0.0, None),
            "time: 1.0s, sent: 10 msg/s, confirmed: 9 msg/s, received: 0 msg/s, latency: n/a"
        );
    }

    #[test]
    fn summary_renders_and_serialises() {
        let client = ProcessStats {
            pid: "self".into(),
            cpu_s: 1.5,
            cpu_us_per_msg: Some(0.75),
            rss_start_kb: 1024,
            rss_peak_kb: 2048,
            rss_final_kb: 2048,
            hwm_kb: 2048,
        };
        let s = RunSummary {
            mode: "throughput",
            uri: "amqp://127.0.0.1:5672/%2f".into(),
            producers: 1,
            consumers: 1,
            queues: 1,
            exchange: String::new(),
            exchange_type: "direct".into(),
            size: 16,
            confirm: 0,
            persistent: false,
            auto_ack: true,
            prefetch: 0,
            multi_ack_every: 1,
            rate_target: None,
            duration_s: 10.0,
            rate_window_s: [1.0, 10.0],
            sent: 2_000_000,
            confirmed: 0,
            nacked: 0,
            returned: 0,
            received: 2_000_000,
            expected: 2_000_000,
            send_rate: 200_000.0,
            confirm_rate: 0.0,
            receive_rate: 199_000.0,
            latency_us: None,
            confirm_latency_us: None,
            broker: None,
            client,
        };
        let text = s.render();
        assert!(text.contains("sent 2000000, confirmed 0"), "{text}");
        assert!(text.contains("received 199000 msg/s"), "{text}");
        assert!(text.contains("CPU 1.50 s (0.75 µs/msg)"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["mode"], "throughput");
        assert_eq!(json["receive_rate"], 199_000.0);
        assert_eq!(json["rate_window_s"][1], 10.0);
        assert!(json["latency_us"].is_null());
        assert_eq!(json["client"]["cpu_us_per_msg"], 0.75);
    }
}
