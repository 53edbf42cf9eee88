//! Command-line flags and the topology they describe.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

const JSON_HELP: &str = "\
SCENARIOS:
  default              producers publish to queues that consumers consume;
                       live stats every second on stderr, summary at the end
  --queue-declare-bench N
                       declare N queues pipelined on one channel, then delete them
  --idle-connections N open N connections (one channel each), hold them for
                       --idle-hold seconds, report how many succeeded
  --soak SECONDS       a long, mixed, self-checking workload: publishers with
                       confirms, consumers that ack, reject, requeue and
                       reconnect, TTL and dead-lettering, and a churn of
                       short-lived connections declaring, binding and
                       deleting queues and exchanges; fails on any lost
                       message, stuck lane or unprovoked error (bench/soak.sh
                       runs it against a fresh broker and watches its memory)
  --queue-depth QUEUE  passive queue.declare: print the queue's message and
                       consumer counts, then exit (for scripts that poll)

MEASUREMENT:
  Each message body starts with an 8-byte big-endian send timestamp (ns since
  the Unix epoch, read off the monotonic clock) and an 8-byte sequence number
  (producer id << 40 | message number). Consumers subtract it from the time the
  read that carried the message completed: end-to-end latency. Rates are
  averaged over the production phase minus its first second (warm-up); a drain
  (-D with no producers) over its whole length, to its last message (within
  10 ms). Latency percentiles cover every delivered message.

JSON (--json prints one object on stdout; the human summary goes to stderr):
  throughput: mode=\"throughput\", uri, producers, consumers, queues, exchange,
    exchange_type, size, confirm, persistent, auto_ack, prefetch,
    multi_ack_every, rate_target (msg/s per producer or null), duration_s,
    rate_window_s [start,end], sent, confirmed, nacked, returned, received,
    expected, send_rate, confirm_rate, receive_rate (msg/s),
    latency_us and confirm_latency_us ({count,min,mean,p50,p75,p95,p99,p999,max}
    in µs, or null), broker and client ({pid, cpu_s, cpu_us_per_msg,
    rss_start_kb, rss_peak_kb, rss_final_kb, hwm_kb}; broker is null without
    --broker-pid)
  queue-declare: mode=\"queue-declare\", uri, queues, durable, declare_s,
    declares_per_s, delete_s, deletes_per_s, broker, broker_bytes_per_queue
  idle-connections: mode=\"idle-connections\", uri, requested, opened, failed,
    first_error, open_s, opens_per_s, hold_s, still_open, broker,
    broker_bytes_per_connection
  queue-depth: mode=\"queue-depth\", uri, queue, messages, consumers
  soak: mode=\"soak\", pass, duration_s, published, confirmed, nacked,
    returned, acked, requeued, rejected_to_dlx, dead_letters, redelivered,
    duplicates, missing (confirmed, never delivered), megabytes_published,
    consumer_restarts, churn_connections, churn_abrupt, churn_lingering,
    churn_channels, churn_messages, queues_declared, queues_deleted,
    exchanges_declared, bindings, expected_errors, errors, error_log,
    lanes [{queue, kind, published, confirmed, missing}]

EXIT STATUS:
  0 success; 1 error (connection refused, broker closed a connection or
  channel, bad arguments; a soak that failed a check); 3 the run completed but messages were nacked or
  returned.";

/// A load generator for AMQP 0-9-1 brokers (Warren, RabbitMQ, ...), in the
/// spirit of RabbitMQ's PerfTest.
#[derive(Parser, Debug, Clone)]
#[command(name = "warren-perf", version, after_long_help = JSON_HELP)]
pub struct Args {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Number of producers (one connection each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers (one connection each).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in bytes (at least 16: timestamp + sequence number).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Bodies are JSON documents of --size bytes (at least 54) with
    /// content-type application/json: `{"t":"<hex timestamp>","s":"<hex
    /// sequence>","p":"<padding>"}` — for schema validation runs.
    #[arg(long)]
    pub json_body: bool,
    /// Publish with delivery-mode 2 and declare durable queues/exchanges.
    #[arg(short = 'f', long)]
    pub persistent: bool,
    /// Publisher confirms with at most N unconfirmed messages per producer
    /// (0 = no confirms).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub confirm: u32,
    /// Consume with no-ack (auto-ack) instead of manual acks.
    #[arg(short = 'a', long)]
    pub auto_ack: bool,
    /// basic.qos prefetch count for manual-ack consumers (0 = unlimited).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub prefetch: u16,
    /// Ack with multiple=true every N messages (1 = ack each message).
    #[arg(short = 'A', long, default_value_t = 1)]
    pub multi_ack_every: u32,
    /// Exchange type; without --exchange the exchange is named perf-<type>.
    #[arg(short = 't', long, value_enum)]
    pub exchange_type: Option<ExchangeType>,
    /// Exchange to publish to (default: the default exchange "", which
    /// routes by queue name). amq.* exchanges are used, not declared.
    #[arg(short = 'e', long)]
    pub exchange: Option<String>,
    /// Routing key for every message. With a direct or topic exchange every
    /// queue is then bound with it (each message reaches all queues); without
    /// it each producer routes to one queue by name.
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,
    /// Binding key for the consumed queues (default: the routing key), e.g.
    /// a wildcard pattern on a topic exchange.
    #[arg(long)]
    pub queue_binding_key: Option<String>,
    /// Number of queues; consumers and producers are spread over them round
    /// robin. With fanout every consumer gets its own queue.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Queue names; %d is replaced by 1..=N.
    #[arg(short = 'u', long, default_value = "perf-%d")]
    pub queue_pattern: String,
    /// Extra bindings (non-matching, e.g. topic wildcards) from the exchange
    /// to a side queue named after --queue-pattern with %d = "side", to
    /// measure routing cost.
    #[arg(long, default_value_t = 0)]
    pub bindings: usize,
    /// Binding keys of the extra bindings; %d is replaced by 0..N.
    #[arg(long, default_value = "perf.*.key%d")]
    pub binding_pattern: String,
    /// Arguments of the declared queues, k=v[,k=v...] (PerfTest's -qa):
    /// integers go as long integers, true/false as booleans, anything else
    /// as a string, e.g. x-message-ttl=60000,x-max-priority=10.
    #[arg(long, value_name = "K=V,...", value_delimiter = ',', value_parser = parse_queue_arg)]
    pub queue_args: Vec<(String, ArgValue)>,
    /// Arguments of every basic.consume, k=v[,k=v...] (PerfTest's
    /// --consumer-args), e.g. x-stream-offset=first. With
    /// x-queue-type=stream in --queue-args every consumer of a queue
    /// receives every message published to it.
    #[arg(long, value_name = "K=V,...", value_delimiter = ',', value_parser = parse_queue_arg)]
    pub consumer_args: Vec<(String, ArgValue)>,
    /// Properties of every published message, k=v[,k=v...] (PerfTest's
    /// -mp): expiration (ms), priority, timestamp (s), content-type,
    /// content-encoding, correlation-id, reply-to, message-id, type,
    /// user-id, app-id, cluster-id. Names are also accepted in PerfTest's
    /// camelCase (contentType, ...).
    #[arg(long, value_name = "K=V,...", value_delimiter = ',', value_parser = parse_message_property)]
    pub message_properties: Vec<MessageProperty>,
    /// String headers of every published message, k=v[,k=v...] (as
    /// clients such as Celery send them; routing and dead-lettering headers
    /// are Warren's, not set here).
    #[arg(long = "header", value_name = "K=V,...", value_delimiter = ',', value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Give each message expiration + (message number mod MS) instead of a
    /// fixed expiration, so per-message TTLs differ and messages do not
    /// expire in queue order. Needs --message-properties expiration=...
    #[arg(long, value_name = "MS")]
    pub expiration_spread: Option<u64>,
    /// Publish rate per producer in msg/s (0 = as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,
    /// Run for this many seconds (default: until --pmessages, --cmessages or Ctrl-C).
    #[arg(short = 'z', long)]
    pub time: Option<f64>,
    /// Stop each producer after N messages.
    #[arg(short = 'C', long)]
    pub pmessages: Option<u64>,
    /// Stop the run once consumers have received N messages in all (checked
    /// every second); with no producers, this drains a prefilled queue.
    #[arg(short = 'D', long)]
    pub cmessages: Option<u64>,
    /// Publish with mandatory=true (unroutable messages come back as
    /// basic.return and are counted).
    #[arg(long)]
    pub mandatory: bool,
    /// Do not delete queues and exchanges at the end.
    #[arg(long)]
    pub keep_queues: bool,
    /// Heartbeat in seconds to ask for (0 = disable heartbeats, the default;
    /// otherwise the smaller of this and the server's proposal).
    #[arg(long, default_value_t = 0)]
    pub heartbeat: u16,
    /// Sample this broker process's CPU and memory from /proc.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No live progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Runtime worker threads (1 = everything on one thread, the cheapest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// After producers stop, wait at most this long (seconds) for consumers
    /// to receive what was sent and for outstanding confirms.
    #[arg(long, default_value_t = 2.0)]
    pub drain_timeout: f64,
    /// Bytes a producer buffers per write syscall.
    #[arg(long, default_value_t = 64 * 1024)]
    pub write_batch: usize,
    /// Declare N queues as fast as possible (pipelined), then delete them.
    #[arg(long, value_name = "N")]
    pub queue_declare_bench: Option<usize>,
    /// Queue declarations in flight at once in --queue-declare-bench.
    #[arg(long, default_value_t = 1000)]
    pub declare_window: usize,
    /// Open N idle connections (one channel each), hold them, report.
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<usize>,
    /// Seconds to hold the idle connections open.
    #[arg(long, default_value_t = 5.0)]
    pub idle_hold: f64,
    /// Connections opened concurrently in --idle-connections.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// Print QUEUE's message and consumer counts (passive queue.declare)
    /// and exit.
    #[arg(long, value_name = "QUEUE")]
    pub queue_depth: Option<String>,
    /// Schedule N messages through an x-delayed-message exchange, due over
    /// --delayed-over seconds, and measure how late they are routed (-f:
    /// persistent; -s: body size).
    #[arg(long, value_name = "N")]
    pub delayed: Option<u64>,
    /// --delayed: the seconds the due times spread over.
    #[arg(long, default_value_t = 60.0)]
    pub delayed_over: f64,
    /// --delayed: seconds from the start to the first due time (room to
    /// publish them all first).
    #[arg(long, default_value_t = 1.0)]
    pub delayed_lead: f64,
    /// Run the soak for SECONDS (see SCENARIOS in --help; the other
    /// scenario flags are ignored).
    #[arg(long, value_name = "SECONDS")]
    pub soak: Option<f64>,
    /// Soak: publishers, one lane (queue) each; lane kinds durable,
    /// transient, mixed (dead-lettering) and ttl, round robin.
    #[arg(long, default_value_t = 8)]
    pub soak_publishers: usize,
    /// Soak: messages per second per publisher.
    #[arg(long, default_value_t = 50.0)]
    pub soak_rate: f64,
    /// Soak: churn connections opened per second, in all.
    #[arg(long, default_value_t = 20.0)]
    pub soak_churn_rate: f64,
    /// Soak: churn workers (connections being worked at once, besides the
    /// lingering ones).
    #[arg(long, default_value_t = 8)]
    pub soak_churn_workers: usize,
    /// Soak: lingering churn connections held open at once, at most.
    #[arg(long, default_value_t = 100)]
    pub soak_linger: usize,
    /// Soak: a lane with confirmed messages outstanding and no delivery for
    /// this many seconds is stuck (an error).
    #[arg(long, default_value_t = 30.0)]
    pub soak_stuck_after: f64,
}

/// The value of one `--queue-args` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgValue {
    Long(i64),
    Bool(bool),
    Str(String),
}

impl ArgValue {
    fn to_amqp(&self) -> AMQPValue {
        match self {
            ArgValue::Long(n) => AMQPValue::LongLongInt(*n),
            ArgValue::Bool(b) => AMQPValue::Boolean(*b),
            ArgValue::Str(s) => AMQPValue::LongString(s.as_str().into()),
        }
    }
}

fn split_kv(s: &str) -> Result<(&str, &str), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v.trim())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

fn parse_queue_arg(s: &str) -> Result<(String, ArgValue), String> {
    let (k, v) = split_kv(s)?;
    let value = if let Ok(n) = v.parse::<i64>() {
        ArgValue::Long(n)
    } else {
        match v {
            "true" => ArgValue::Bool(true),
            "false" => ArgValue::Bool(false),
            _ => ArgValue::Str(v.to_string()),
        }
    };
    Ok((k.to_string(), value))
}

/// One `--message-properties` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageProperty {
    Expiration(u64),
    Priority(u8),
    Timestamp(u64),
    /// A short-string property, by its `BasicProperties` setter.
    Text(TextProperty, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextProperty {
    ContentType,
    ContentEncoding,
    CorrelationId,
    ReplyTo,
    MessageId,
    Type,
    UserId,
    AppId,
    ClusterId,
}

fn parse_message_property(s: &str) -> Result<MessageProperty, String> {
    let (k, v) = split_kv(s)?;
    let number = |what: &str| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("{k}: expected {what}, got '{v}'"))
    };
    // content-type, content_type and contentType all name one property.
    let key: String = k
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let text = |p| Ok(MessageProperty::Text(p, v.to_string()));
    match key.as_str() {
        "expiration" => Ok(MessageProperty::Expiration(number("milliseconds")?)),
        "priority" => v
            .parse()
            .map(MessageProperty::Priority)
            .map_err(|_| format!("{k}: expected 0..=255, got '{v}'")),
        "timestamp" => Ok(MessageProperty::Timestamp(number("seconds")?)),
        "contenttype" => text(TextProperty::ContentType),
        "contentencoding" => text(TextProperty::ContentEncoding),
        "correlationid" => text(TextProperty::CorrelationId),
        "replyto" => text(TextProperty::ReplyTo),
        "messageid" => text(TextProperty::MessageId),
        "type" => text(TextProperty::Type),
        "userid" => text(TextProperty::UserId),
        "appid" => text(TextProperty::AppId),
        "clusterid" => text(TextProperty::ClusterId),
        "deliverymode" | "headers" => Err(format!(
            "{k} is not settable here (use -f for delivery-mode 2)"
        )),
        _ => Err(format!("unknown message property '{k}'")),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got '{s}'")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

impl Args {
    pub fn validate(&self) -> Result<()> {
        if self.soak.is_some() {
            let positive = |v: f64| v.is_finite() && v > 0.0;
            if !(positive(self.soak_rate)
                && positive(self.soak_churn_rate)
                && positive(self.soak_stuck_after))
            {
                bail!("--soak-rate, --soak-churn-rate and --soak-stuck-after must be positive");
            }
            if self.soak_churn_workers == 0 {
                bail!("--soak-churn-workers must be at least 1");
            }
        }
        if self.size < 16 {
            bail!("--size must be at least 16 (8-byte timestamp + 8-byte sequence number)");
        }
        if self.multi_ack_every == 0 {
            bail!("--multi-ack-every must be at least 1");
        }
        if !self.auto_ack && self.prefetch > 0 && self.multi_ack_every > u32::from(self.prefetch) {
            bail!(
                "--multi-ack-every {} exceeds --prefetch {}: consumers would stall waiting for messages they never get",
                self.multi_ack_every,
                self.prefetch
            );
        }
        if self.queues == 0 {
            bail!("--queues must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            bail!("--rate must be a non-negative number");
        }
        if let Some(t) = self.time
            && !(t.is_finite() && t > 0.0)
        {
            bail!("--time must be a positive number of seconds");
        }
        if !(self.drain_timeout.is_finite() && self.drain_timeout >= 0.0) {
            bail!("--drain-timeout must be a non-negative number of seconds");
        }
        if self.write_batch < 1024 {
            bail!("--write-batch must be at least 1024 bytes");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if self.declare_window == 0 || self.connect_concurrency == 0 {
            bail!("--declare-window and --connect-concurrency must be at least 1");
        }
        if self.producers == 0 && self.consumers == 0 {
            bail!("nothing to do: no producers and no consumers");
        }
        if let Some(spread) = self.expiration_spread {
            if spread == 0 {
                bail!("--expiration-spread must be at least 1 ms");
            }
            if self.expiration().is_none() {
                bail!("--expiration-spread needs --message-properties expiration=MS");
            }
        }
        Ok(())
    }

    /// The `--queue-args` as a declare's argument table.
    pub fn queue_arguments(&self) -> FieldTable {
        table(&self.queue_args)
    }

    /// The `--consumer-args` as basic.consume's argument table.
    pub fn consumer_arguments(&self) -> FieldTable {
        table(&self.consumer_args)
    }

    /// Stream queues: every consumer reads every message.
    pub fn streams(&self) -> bool {
        self.queue_args
            .iter()
            .any(|(k, v)| k == "x-queue-type" && matches!(v, ArgValue::Str(s) if s == "stream"))
    }

    /// The `--message-properties` (the last one wins for a repeated key).
    pub fn message_properties(&self) -> BasicProperties {
        let mut p = BasicProperties::default();
        for prop in &self.message_properties {
            p = match prop {
                MessageProperty::Expiration(ms) => p.with_expiration(ms.to_string().into()),
                MessageProperty::Priority(n) => p.with_priority(*n),
                MessageProperty::Timestamp(t) => p.with_timestamp(*t),
                MessageProperty::Text(kind, v) => {
                    let v = v.as_str().into();
                    match kind {
                        TextProperty::ContentType => p.with_content_type(v),
                        TextProperty::ContentEncoding => p.with_content_encoding(v),
                        TextProperty::CorrelationId => p.with_correlation_id(v),
                        TextProperty::ReplyTo => p.with_reply_to(v),
                        TextProperty::MessageId => p.with_message_id(v),
                        TextProperty::Type => p.with_type(v),
                        TextProperty::UserId => p.with_user_id(v),
                        TextProperty::AppId => p.with_app_id(v),
                        TextProperty::ClusterId => p.with_cluster_id(v),
                    }
                }
            };
        }
        if !self.headers.is_empty() {
            let mut t = FieldTable::default();
            for (k, v) in &self.headers {
                t.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
            }
            p = p.with_headers(t);
        }
        p
    }

    /// The expiration given in `--message-properties`, in ms.
    pub fn expiration(&self) -> Option<u64> {
        self.message_properties.iter().rev().find_map(|p| match p {
            MessageProperty::Expiration(ms) => Some(*ms),
            _ => None,
        })
    }

    pub fn rate_limit(&self) -> Option<f64> {
        (self.rate > 0.0).then_some(self.rate)
    }
}

fn table(pairs: &[(String, ArgValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(k.as_str().into(), v.to_amqp());
    }
    t
}

/// Replace `%d` in a name pattern.
pub fn fill(pattern: &str, value: &str) -> String {
    pattern.replace("%d", value)
}

/// One queue to declare and what to bind it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePlan {
    pub name: String,
    /// Binding keys on the exchange (none for the default exchange). For a
    /// headers exchange the key is the value of the `perf-queue` header.
    pub bindings: Vec<String>,
}

/// Where one producer sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub routing_key: String,
    /// Value of the `perf-queue` header (headers exchanges only).
    pub header: Option<String>,
}

/// Everything the flags say about exchanges, queues and bindings.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// "" is the default exchange.
    pub exchange: String,
    pub kind: ExchangeType,
    /// False for the default exchange and the predeclared amq.* ones.
    pub declare_exchange: bool,
    pub queues: Vec<QueuePlan>,
    /// Side queue and its (non-matching) binding keys.
    pub side: Option<QueuePlan>,
    pub routes: Vec<Route>,
    /// Queue consumed by each consumer.
    pub consumer_queues: Vec<String>,
    /// Deliveries each published message produces (all consumers together),
    /// assuming every queue has a consumer.
    pub copies: u64,
    /// Arguments every declared queue gets (`--queue-args`).
    pub queue_args: FieldTable,
}

/// The header a headers-exchange binding matches on.
pub const ROUTE_HEADER: &str = "perf-queue";

impl Topology {
    pub fn plan(a: &Args) -> Result<Topology> {
        let (exchange, kind) = match (&a.exchange, a.exchange_type) {
            (None, None) => (String::new(), ExchangeType::Direct),
            (None, Some(t)) => (format!("perf-{}", t.as_str()), t),
            (Some(e), Some(t)) => (e.clone(), t),
            (Some(e), None) => {
                let t = match e.as_str() {
                    "amq.fanout" => ExchangeType::Fanout,
                    "amq.topic" => ExchangeType::Topic,
                    "amq.headers" | "amq.match" => ExchangeType::Headers,
                    _ => ExchangeType::Direct,
                };
                (e.clone(), t)
            }
        };
        if exchange.is_empty() && kind != ExchangeType::Direct {
            bail!("the default exchange is a direct exchange; give --exchange a name");
        }
        if exchange.is_empty() && a.bindings > 0 {
            bail!("--bindings needs a named exchange (--exchange or --exchange-type)");
        }
        let n_queues = if kind == ExchangeType::Fanout {
            a.queues.max(a.consumers)
        } else {
            a.queues
        };
        if n_queues > 1 && !a.queue_pattern.contains("%d") {
            bail!("--queue-pattern needs %d for more than one queue");
        }
        if a.bindings > 1 && !a.binding_pattern.contains("%d") {
            bail!("--binding-pattern needs %d for more than one binding");
        }
        let names: Vec<String> = (1..=n_queues)
            .map(|i| fill(&a.queue_pattern, &i.to_string()))
            .collect();
        // A shared key binds every queue with it; otherwise each queue is
        // reached by its own name.
        let shared_key = a.routing_key.clone();
        let binding_for = |name: &str| -> Vec<String> {
            if exchange.is_empty() {
                return Vec::new();
            }
            match kind {
                ExchangeType::Fanout => vec![String::new()],
                ExchangeType::Headers => vec![name.to_string()],
                ExchangeType::Direct | ExchangeType::Topic => {
                    vec![
                        a.queue_binding_key
                            .clone()
                            .or_else(|| shared_key.clone())
                            .unwrap_or_else(|| name.to_string()),
                    ]
                }
            }
        };
        let queues: Vec<QueuePlan> = names
            .iter()
            .map(|n| QueuePlan {
                name: n.clone(),
                bindings: binding_for(n),
            })
            .collect();
        let per_queue = exchange.is_empty()
            || kind == ExchangeType::Headers
            || (matches!(kind, ExchangeType::Direct | ExchangeType::Topic)
                && shared_key.is_none()
                && a.queue_binding_key.is_none());
        let routes = (0..a.producers)
            .map(|j| {
                let q = &names[j % names.len()];
                match kind {
                    ExchangeType::Headers if !exchange.is_empty() => Route {
                        routing_key: shared_key.clone().unwrap_or_default(),
                        header: Some(q.clone()),
                    },
                    _ => Route {
                        routing_key: if per_queue {
                            shared_key.clone().unwrap_or_else(|| q.clone())
                        } else {
                            shared_key.clone().unwrap_or_default()
                        },
                        header: None,
                    },
                }
            })
            .collect();
        let side = (a.bindings > 0).then(|| QueuePlan {
            name: fill(&a.queue_pattern, "side"),
            bindings: (0..a.bindings)
                .map(|i| fill(&a.binding_pattern, &i.to_string()))
                .collect(),
        });
        let consumer_queues = (0..a.consumers)
            .map(|i| names[i % names.len()].clone())
            .collect();
        let copies = if a.streams() {
            // Each message reaches every consumer of its queue (consumers
            // spread evenly over the queues).
            let per_queue_consumers = (a.consumers / n_queues).max(1) as u64;
            per_queue_consumers * if per_queue { 1 } else { n_queues as u64 }
        } else if per_queue {
            1
        } else {
            n_queues as u64
        };
        Ok(Topology {
            declare_exchange: !exchange.is_empty() && !exchange.starts_with("amq."),
            exchange,
            kind,
            queues,
            side,
            routes,
            consumer_queues,
            copies,
            queue_args: a.queue_arguments(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["warren-perf"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults() {
        let a = args(&[]);
        assert_eq!(a.uri, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!((a.producers, a.consumers, a.size), (1, 1, 16));
        assert_eq!((a.confirm, a.prefetch, a.multi_ack_every), (0, 0, 1));
        assert!(!a.auto_ack && !a.persistent && !a.json);
        assert_eq!(a.rate_limit(), None);
        a.validate().unwrap();
        let t = Topology::plan(&a).unwrap();
        assert_eq!(t.exchange, "");
        assert!(!t.declare_exchange);
        assert_eq!(t.queues.len(), 1);
        assert_eq!(t.queues[0].name, "perf-1");
        assert!(t.queues[0].bindings.is_empty());
        assert_eq!(t.routes[0].routing_key, "perf-1");
        assert_eq!(t.copies, 1);
    }

    #[test]
    fn perftest_style_short_flags() {
        let a = args(&[
            "-x", "2", "-y", "3", "-s", "1024", "-f", "-c", "100", "-q", "50", "-A", "10", "-r",
            "5000", "-z", "10", "-C", "99",
        ]);
        assert_eq!((a.producers, a.consumers, a.size), (2, 3, 1024));
        assert!(a.persistent);
        assert_eq!((a.confirm, a.prefetch, a.multi_ack_every), (100, 50, 10));
        assert_eq!(a.rate_limit(), Some(5000.0));
        assert_eq!((a.time, a.pmessages), (Some(10.0), Some(99)));
        a.validate().unwrap();
    }

    #[test]
    fn validation() {
        assert!(args(&["--size", "15"]).validate().is_err());
        assert!(args(&["-A", "0"]).validate().is_err());
        assert!(args(&["-q", "10", "-A", "20"]).validate().is_err());
        // With auto-ack, prefetch and multi-ack do not interact.
        assert!(args(&["-a", "-q", "10", "-A", "20"]).validate().is_ok());
        assert!(args(&["--rate=-1"]).validate().is_err());
        assert!(args(&["--time", "0"]).validate().is_err());
        assert!(args(&["-x", "0", "-y", "0"]).validate().is_err());
        assert!(Args::try_parse_from(["warren-perf", "--exchange-type", "bogus"]).is_err());
    }

    #[test]
    fn spread_over_queues() {
        let a = args(&["--queues", "3", "-x", "4", "-y", "5"]);
        let t = Topology::plan(&a).unwrap();
        let qs: Vec<&str> = t.consumer_queues.iter().map(String::as_str).collect();
        assert_eq!(qs, ["perf-1", "perf-2", "perf-3", "perf-1", "perf-2"]);
        let rks: Vec<&str> = t.routes.iter().map(|r| r.routing_key.as_str()).collect();
        assert_eq!(rks, ["perf-1", "perf-2", "perf-3", "perf-1"]);
        assert_eq!(t.copies, 1);
        assert!(Topology::plan(&args(&["--queues", "2", "-u", "fixed"])).is_err());
    }

    #[test]
    fn fanout_gives_each_consumer_a_queue() {
        let a = args(&["-t", "fanout", "-y", "10"]);
        let t = Topology::plan(&a).unwrap();
        assert_eq!(t.exchange, "perf-fanout");
        assert!(t.declare_exchange);
        assert_eq!(t.queues.len(), 10);
        assert_eq!(t.consumer_queues[9], "perf-10");
        assert!(t.queues.iter().all(|q| q.bindings == [""]));
        assert_eq!(t.copies, 10);
        let t = Topology::plan(&args(&["-e", "amq.fanout", "-y", "2"])).unwrap();
        assert_eq!(t.kind, ExchangeType::Fanout);
        assert!(!t.declare_exchange);
    }

    #[test]
    fn topic_with_side_bindings() {
        let a = args(&[
            "-t",
            "topic",
            "-k",
            "perf.main.route",
            "--queue-binding-key",
            "perf.*.route",
            "--bindings",
            "1000",
        ]);
        let t = Topology::plan(&a).unwrap();
        assert_eq!(t.queues[0].bindings, ["perf.*.route"]);
        assert_eq!(t.routes[0].routing_key, "perf.main.route");
        let side = t.side.unwrap();
        assert_eq!(side.name, "perf-side");
        assert_eq!(side.bindings.len(), 1000);
        assert_eq!(side.bindings[0], "perf.*.key0");
        assert_eq!(side.bindings[999], "perf.*.key999");
        assert_eq!(t.copies, 1);
        assert!(Topology::plan(&args(&["--bindings", "5"])).is_err());
    }

    #[test]
    fn direct_shared_key_reaches_every_queue() {
        let t = Topology::plan(&args(&["-t", "direct", "-k", "rk", "--queues", "3"])).unwrap();
        assert!(t.queues.iter().all(|q| q.bindings == ["rk"]));
        assert_eq!(t.routes[0].routing_key, "rk");
        assert_eq!(t.copies, 3);
        let t = Topology::plan(&args(&["-t", "direct", "--queues", "2", "-x", "2"])).unwrap();
        assert_eq!(t.queues[1].bindings, ["perf-2"]);
        assert_eq!(t.routes[1].routing_key, "perf-2");
        assert_eq!(t.copies, 1);
    }

    #[test]
    fn headers_route_by_header() {
        let t = Topology::plan(&args(&["-t", "headers", "--queues", "2", "-x", "2"])).unwrap();
        assert_eq!(t.queues[1].bindings, ["perf-2"]);
        assert_eq!(t.routes[1].header.as_deref(), Some("perf-2"));
        assert_eq!(t.copies, 1);
        assert!(Topology::plan(&args(&["-t", "headers", "-e", ""])).is_err());
    }

    #[test]
    fn queue_args_are_typed() {
        let a = args(&[
            "--queue-args",
            "x-message-ttl=60000,x-max-priority=10,x-single-active-consumer=true",
            "--queue-args",
            "x-queue-type=quorum,x-offset=-5,x-flag=false",
        ]);
        a.validate().unwrap();
        let t = a.queue_arguments();
        let get = |k: &str| t.inner().get(k).cloned();
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongLongInt(60000)));
        assert_eq!(get("x-max-priority"), Some(AMQPValue::LongLongInt(10)));
        assert_eq!(get("x-offset"), Some(AMQPValue::LongLongInt(-5)));
        assert_eq!(
            get("x-single-active-consumer"),
            Some(AMQPValue::Boolean(true))
        );
        assert_eq!(get("x-flag"), Some(AMQPValue::Boolean(false)));
        assert_eq!(
            get("x-queue-type"),
            Some(AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(t.inner().len(), 6);
        assert_eq!(Topology::plan(&a).unwrap().queue_args, t);
        assert!(args(&[]).queue_arguments().inner().is_empty());
        for bad in ["x-message-ttl", "=5", "a=1,,b=2"] {
            assert!(
                Args::try_parse_from(["warren-perf", "--queue-args", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn message_properties_by_spec_and_perftest_names() {
        let a = args(&[
            "--message-properties",
            "expiration=10000,priority=5,contentType=text/plain,app_id=perf",
            "--message-properties",
            "message-id=m1,Type=t,timestamp=1700000000,correlationId=c",
        ]);
        a.validate().unwrap();
        let p = a.message_properties();
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("10000"));
        assert_eq!(p.priority(), &Some(5));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain")
        );
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("perf"));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("t"));
        assert_eq!(p.timestamp(), &Some(1_700_000_000));
        assert_eq!(p.correlation_id().as_ref().map(|s| s.as_str()), Some("c"));
        assert_eq!(p.delivery_mode(), &None);
        assert_eq!(a.expiration(), Some(10000));
        assert_eq!(args(&[]).message_properties(), BasicProperties::default());
        assert_eq!(args(&[]).expiration(), None);
        for bad in [
            "expiration=-1",
            "expiration=1.5",
            "priority=256",
            "delivery-mode=2",
            "bogus=1",
            "priority",
        ] {
            assert!(
                Args::try_parse_from(["warren-perf", "--message-properties", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiration_spread_needs_an_expiration() {
        let a = args(&[
            "--message-properties",
            "expiration=10000",
            "--expiration-spread",
            "5000",
        ]);
        a.validate().unwrap();
        assert_eq!(a.expiration_spread, Some(5000));
        assert!(args(&["--expiration-spread", "5000"]).validate().is_err());
        assert!(
            args(&[
                "--message-properties",
                "expiration=1",
                "--expiration-spread",
                "0"
            ])
            .validate()
            .is_err()
        );
    }

    #[test]
    fn queue_depth_mode() {
        let a = args(&["--queue-depth", "ttl-big"]);
        assert_eq!(a.queue_depth.as_deref(), Some("ttl-big"));
        a.validate().unwrap();
    }
}
