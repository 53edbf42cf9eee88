//! Prometheus metrics with RabbitMQ's names.
//!
//! Each broker owns its own recorder (not the process-global one), so
//! several brokers can run in one test process. Handles are registered once
//! here and kept, so the hot path is one atomic add per event. Names and
//! labels follow RabbitMQ's `rabbitmq_prometheus` plugin so its Grafana
//! dashboards and alert rules work unchanged.

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const PROTOCOL: &str = "amqp091";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub connections: Gauge,
    pub channels: Gauge,
    pub queues: Gauge,
    pub consumers: Gauge,
    pub connections_opened: Counter,
    pub connections_closed: Counter,
    pub channels_opened: Counter,
    pub channels_closed: Counter,
    pub queues_declared: Counter,
    pub queues_created: Counter,
    pub queues_deleted: Counter,
    pub messages_received: Counter,
    pub messages_received_confirm: Counter,
    pub messages_routed: Counter,
    pub messages_unroutable_dropped: Counter,
    pub messages_unroutable_returned: Counter,
    pub messages_confirmed: Counter,
    pub messages_delivered: Counter,
    pub messages_delivered_consume_auto_ack: Counter,
    pub messages_delivered_consume_manual_ack: Counter,
    pub messages_delivered_get_auto_ack: Counter,
    pub messages_delivered_get_manual_ack: Counter,
    pub messages_get_empty: Counter,
    pub messages_redelivered: Counter,
    pub messages_acknowledged: Counter,
    /// By reason: expired, maxlen, rejected, delivery_limit.
    dead_lettered: [Counter; 4],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(node: &str, cluster: &str, version: &str) -> Metrics {
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
            connections_opened: counter("rabbitmq_connections_opened_total"),
            connections_closed: counter("rabbitmq_connections_closed_total"),
            channels_opened: counter("rabbitmq_channels_opened_total"),
            channels_closed: counter("rabbitmq_channels_closed_total"),
            queues_declared: counter("rabbitmq_queues_declared_total"),
            queues_created: counter("rabbitmq_queues_created_total"),
            queues_deleted: counter("rabbitmq_queues_deleted_total"),
            messages_received: labelled("rabbitmq_global_messages_received_total", proto()),
            messages_received_confirm: labelled(
                "rabbitmq_global_messages_received_confirm_total",
                proto(),
            ),
            messages_routed: labelled("rabbitmq_global_messages_routed_total", proto()),
            messages_unroutable_dropped: labelled(
                "rabbitmq_global_messages_unroutable_dropped_total",
                proto(),
            ),
            messages_unroutable_returned: labelled(
                "rabbitmq_global_messages_unroutable_returned_total",
                proto(),
            ),
            messages_confirmed: labelled("rabbitmq_global_messages_confirmed_total", proto()),
            messages_delivered: labelled(
                "rabbitmq_global_messages_delivered_total",
                proto_classic(),
            ),
            messages_delivered_consume_auto_ack: labelled(
                "rabbitmq_global_messages_delivered_consume_auto_ack_total",
                proto_classic(),
            ),
            messages_delivered_consume_manual_ack: labelled(
                "rabbitmq_global_messages_delivered_consume_manual_ack_total",
                proto_classic(),
            ),
            messages_delivered_get_auto_ack: labelled(
                "rabbitmq_global_messages_delivered_get_auto_ack_total",
                proto_classic(),
            ),
            messages_delivered_get_manual_ack: labelled(
                "rabbitmq_global_messages_delivered_get_manual_ack_total",
                proto_classic(),
            ),
            messages_get_empty: labelled(
                "rabbitmq_global_messages_get_empty_total",
                proto_classic(),
            ),
            messages_redelivered: labelled(
                "rabbitmq_global_messages_redelivered_total",
                proto_classic(),
            ),
            messages_acknowledged: labelled(
                "rabbitmq_global_messages_acknowledged_total",
                proto_classic(),
            ),
            dead_lettered: ["expired", "maxlen", "rejected", "delivery_limit"].map(|reason| {
                let name: &'static str = match reason {
                    "expired" => "rabbitmq_global_messages_dead_lettered_expired_total",
                    "maxlen" => "rabbitmq_global_messages_dead_lettered_maxlen_total",
                    "rejected" => "rabbitmq_global_messages_dead_lettered_rejected_total",
                    _ => "rabbitmq_global_messages_dead_lettered_delivery_limit_total",
                };
                labelled(
                    name,
                    vec![
                        Label::new("queue_type", "rabbit_classic_queue"),
                        Label::new("dead_letter_strategy", "at_most_once"),
                    ],
                )
            }),
            recorder,
            handle,
        }
    }

    /// Count a message dead-lettered for `reason`.
    pub fn dead_lettered(&self, reason: crate::queue::dead_letter::Reason) {
        use crate::queue::dead_letter::Reason;
        let i = match reason {
            Reason::Expired => 0,
            Reason::MaxLen => 1,
            Reason::Rejected => 2,
            Reason::DeliveryLimit => 3,
        };
        self.dead_lettered[i].increment(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Register an extra gauge (e.g. process figures sampled at scrape time).
    pub fn gauge(&self, name: &'static str) -> Gauge {
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.recorder
            .register_gauge(&Key::from_static_name(name), &meta)
    }
}
