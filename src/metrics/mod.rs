//! Prometheus metrics with RabbitMQ's names.
//!
//! Each broker owns its own recorder (not the process-global one), so
//! several brokers can run in one test process. Handles are registered once
//! here and kept; the per-message counters are striped per thread
//! ([`MessageCounters`]) and handed to the exporter at each scrape. Names and
//! labels follow RabbitMQ's `rabbitmq_prometheus` plugin so its Grafana
//! dashboards and alert rules work unchanged.

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub use churn::{CHURN_EVENTS, Churn, ChurnEvent};
pub use message_counters::{MessageCounters, MessageEvent, SIZE_BUCKETS, SizeHistogram};

pub mod churn;
mod message_counters;
pub mod rates;

const PROTOCOL: &str = "amqp091";

/// The label set a message counter is exported with.
#[derive(Clone, Copy)]
enum Labels {
    Protocol,
    ClassicQueue,
    DeadLetter,
}

/// The message counters and the RabbitMQ names they are exported under.
const EXPORTED: [(MessageEvent, &str, Labels); 18] = {
    use Labels::*;
    use MessageEvent::*;
    [
        (
            Received,
            "rabbitmq_global_messages_received_total",
            Protocol,
        ),
        (
            ReceivedConfirm,
            "rabbitmq_global_messages_received_confirm_total",
            Protocol,
        ),
        (Routed, "rabbitmq_global_messages_routed_total", Protocol),
        (
            UnroutableDropped,
            "rabbitmq_global_messages_unroutable_dropped_total",
            Protocol,
        ),
        (
            UnroutableReturned,
            "rabbitmq_global_messages_unroutable_returned_total",
            Protocol,
        ),
        (
            Confirmed,
            "rabbitmq_global_messages_confirmed_total",
            Protocol,
        ),
        (
            Delivered,
            "rabbitmq_global_messages_delivered_total",
            ClassicQueue,
        ),
        (
            Redelivered,
            "rabbitmq_global_messages_redelivered_total",
            ClassicQueue,
        ),
        (
            DeliveredConsumeAutoAck,
            "rabbitmq_global_messages_delivered_consume_auto_ack_total",
            ClassicQueue,
        ),
        (
            DeliveredConsumeManualAck,
            "rabbitmq_global_messages_delivered_consume_manual_ack_total",
            ClassicQueue,
        ),
        (
            DeliveredGetAutoAck,
            "rabbitmq_global_messages_delivered_get_auto_ack_total",
            ClassicQueue,
        ),
        (
            DeliveredGetManualAck,
            "rabbitmq_global_messages_delivered_get_manual_ack_total",
            ClassicQueue,
        ),
        (
            GetEmpty,
            "rabbitmq_global_messages_get_empty_total",
            ClassicQueue,
        ),
        (
            Acknowledged,
            "rabbitmq_global_messages_acknowledged_total",
            ClassicQueue,
        ),
        (
            DeadLetteredExpired,
            "rabbitmq_global_messages_dead_lettered_expired_total",
            DeadLetter,
        ),
        (
            DeadLetteredMaxLen,
            "rabbitmq_global_messages_dead_lettered_maxlen_total",
            DeadLetter,
        ),
        (
            DeadLetteredRejected,
            "rabbitmq_global_messages_dead_lettered_rejected_total",
            DeadLetter,
        ),
        (
            DeadLetteredDeliveryLimit,
            "rabbitmq_global_messages_dead_lettered_delivery_limit_total",
            DeadLetter,
        ),
    ]
};

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub connections: Gauge,
    pub channels: Gauge,
    pub queues: Gauge,
    pub consumers: Gauge,
    /// Connections, channels and queues created and deleted; exported at
    /// each scrape as the `churn_families` counters.
    pub churn: std::sync::Arc<Churn>,
    churn_families: Vec<Counter>,
    /// Connections held back by flow control now, and how often one was.
    pub connections_in_flow: Gauge,
    pub flow_pauses: Counter,
    /// Bumped per message; folded into `exported` at each scrape.
    messages: MessageCounters,
    exported: Vec<(MessageEvent, Counter)>,
    auth_attempts: Counter,
    auth_succeeded: Counter,
    auth_failed: Counter,
    /// (address, user) pairs counted in the detailed auth families, so
    /// their number stays bounded.
    auth_sources: parking_lot::Mutex<std::collections::HashSet<(std::net::IpAddr, String)>>,
}

/// How many (address, user) pairs get their own detailed auth counters;
/// attempts beyond are counted only in the totals.
const MAX_AUTH_SOURCES: usize = 4096;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(node: &str, cluster: &str, version: &str, churn: std::sync::Arc<Churn>) -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &meta);
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &meta);
        let labelled = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &meta)
        };
        let proto = || vec![Label::new("protocol", PROTOCOL)];
        let proto_classic = || {
            vec![
                Label::new("protocol", PROTOCOL),
                Label::new("queue_type", "rabbit_classic_queue"),
            ]
        };

        recorder
            .register_gauge(
                &Key::from_parts(
                    "rabbitmq_identity_info",
                    vec![
                        Label::new("rabbitmq_node", node.to_string()),
                        Label::new("rabbitmq_cluster", cluster.to_string()),
                        Label::new("rabbitmq_cluster_permanent_id", cluster.to_string()),
                        Label::new("rabbitmq_endpoint", "metrics"),
                    ],
                ),
                &meta,
            )
            .set(1.0);
        recorder
            .register_gauge(
                &Key::from_parts(
                    "rabbitmq_build_info",
                    vec![
                        Label::new("rabbitmq_version", version.to_string()),
                        // No Erlang here; the dashboard's table shows it.
                        Label::new("erlang_version", "n/a"),
                        Label::new("prometheus_plugin_version", version.to_string()),
                        Label::new("prometheus_client_version", env!("CARGO_PKG_VERSION")),
                        Label::new("product", "Warren"),
                        Label::new("product_version", env!("CARGO_PKG_VERSION")),
                    ],
                ),
                &meta,
            )
            .set(1.0);

        Metrics {
            connections: gauge("rabbitmq_connections"),
            channels: gauge("rabbitmq_channels"),
            queues: gauge("rabbitmq_queues"),
            consumers: gauge("rabbitmq_consumers"),
            churn,
            churn_families: churn::CHURN_FAMILIES.iter().map(|n| counter(n)).collect(),
            connections_in_flow: gauge("warren_connections_in_flow"),
            flow_pauses: counter("warren_connection_flow_pauses_total"),
            auth_attempts: labelled("rabbitmq_auth_attempts_total", proto()),
            auth_succeeded: labelled("rabbitmq_auth_attempts_succeeded_total", proto()),
            auth_failed: labelled("rabbitmq_auth_attempts_failed_total", proto()),
            auth_sources: Default::default(),
            messages: MessageCounters::new(),
            exported: EXPORTED
                .iter()
                .map(|&(event, name, labels)| {
                    let labels = match labels {
                        Labels::Protocol => proto(),
                        Labels::ClassicQueue => proto_classic(),
                        Labels::DeadLetter => vec![
                            Label::new("queue_type", "rabbit_classic_queue"),
                            Label::new("dead_letter_strategy", "at_most_once"),
                        ],
                    };
                    (event, labelled(name, labels))
                })
                .collect(),
            recorder,
            handle,
        }
    }

    /// A connection, channel or queue came or went.
    pub fn churn(&self, event: ChurnEvent) {
        self.churn.count(event);
    }

    /// A message of `bytes` was published (the size histogram).
    #[inline]
    pub fn message_size(&self, bytes: u64) {
        self.messages.size(bytes);
    }

    pub fn message_sizes(&self) -> SizeHistogram {
        self.messages.sizes()
    }

    /// The count so far of messages that met `event`.
    pub fn total(&self, event: MessageEvent) -> u64 {
        self.messages.total(event)
    }

    /// Count `n` messages that met `event`.
    pub fn count(&self, event: MessageEvent, n: u64) {
        self.messages.add(event, n);
    }

    /// Count a login attempt, in total and per client address and user
    /// (RabbitMQ's `auth_attempts` and `auth_attempts_detailed` families).
    pub fn auth_attempt(&self, address: std::net::IpAddr, user: &str, succeeded: bool) {
        self.auth_attempts.increment(1);
        if succeeded {
            self.auth_succeeded.increment(1);
        } else {
            self.auth_failed.increment(1);
        }
        let address = address.to_canonical();
        {
            let mut sources = self.auth_sources.lock();
            let key = (address, user.to_string());
            if !sources.contains(&key) {
                if sources.len() >= MAX_AUTH_SOURCES {
                    return;
                }
                sources.insert(key);
            }
        }
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let labels = || {
            vec![
                Label::new("remote_address", address.to_string()),
                Label::new("username", user.to_string()),
                Label::new("protocol", PROTOCOL),
            ]
        };
        let count = |name: &'static str| {
            self.recorder
                .register_counter(&Key::from_parts(name, labels()), &meta)
                .increment(1)
        };
        count("rabbitmq_auth_attempts_detailed_total");
        count(if succeeded {
            "rabbitmq_auth_attempts_detailed_succeeded_total"
        } else {
            "rabbitmq_auth_attempts_detailed_failed_total"
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        for (event, counter) in &self.exported {
            counter.absolute(self.messages.total(*event));
        }
        for (i, counter) in self.churn_families.iter().enumerate() {
            counter.absolute(self.churn.counts.get(i));
        }
        self.handle.render()
    }

    /// A message refused for not matching the schema of `subject`.
    pub fn schema_refused(&self, vhost: &str, subject: &str) {
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let labels = vec![
            Label::new("vhost", vhost.to_string()),
            Label::new("subject", subject.to_string()),
        ];
        self.recorder
            .register_counter(
                &Key::from_parts("rabbitmq_schema_messages_refused_total", labels),
                &meta,
            )
            .increment(1);
    }

    /// Messages erased by header from queues and streams of `vhost`.
    pub fn erased(&self, vhost: &str, n: u64) {
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let labels = vec![Label::new("vhost", vhost.to_string())];
        self.recorder
            .register_counter(
                &Key::from_parts("warren_messages_erased_total", labels),
                &meta,
            )
            .increment(n);
    }

    /// Register an extra gauge (e.g. process figures sampled at scrape time).
    pub fn gauge(&self, name: &'static str) -> Gauge {
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.recorder
            .register_gauge(&Key::from_static_name(name), &meta)
    }
}
