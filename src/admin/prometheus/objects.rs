//! The per-object families of RabbitMQ's Prometheus plugin: queues,
//! channels and connections, each sampled once per scrape.
//!
//! `/metrics` sums each family over all objects into one unlabelled
//! sample (RabbitMQ's default aggregation); `/metrics/per-object` labels
//! one sample per object; `/metrics/detailed?family=…` writes the groups
//! asked for, under the `rabbitmq_detailed_` prefix, optionally for some
//! vhosts only. A scrape reads each queue once, under its own lock, and
//! builds nothing per queue beyond its lines.

use std::sync::Arc;

use metrics::Label;

use super::consumers::{self, ConsumerSample};
use super::exposition::{Exposition, Family, Kind};
use super::queue_health::{self, HealthSample};
use super::streams::{self, StreamSample};
use crate::broker::connections::{ChannelInfo, RECV_CNT, RECV_OCT, SEND_CNT, SEND_OCT};
use crate::broker::{Broker, ClientConnection};
use crate::queue::{ConsumerView, QueueEvent, QueueGauges};

/// How samples are labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One sum per family.
    Aggregated,
    /// One sample per object.
    PerObject,
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
    }
}

struct QueueSample {
    vhost: String,
    name: String,
    g: QueueGauges,
    published: u64,
}

type QueueValue = fn(&QueueSample) -> f64;

/// Queue families by detailed group, as RabbitMQ names them.
const QUEUE_COARSE: [(Family, QueueValue); 3] = [
    (
        gauge(
            "queue_messages_ready",
            "Messages ready to be delivered to consumers",
        ),
        |q| q.g.ready as f64,
    ),
    (
        gauge(
            "queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
        ),
        |q| q.g.unacked as f64,
    ),
    (
        gauge(
            "queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
        ),
        |q| (q.g.ready + q.g.unacked) as f64,
    ),
];

const QUEUE_CONSUMERS: [(Family, QueueValue); 1] =
    [(gauge("queue_consumers", "Consumers on a queue"), |q| {
        q.g.consumers as f64
    })];

const QUEUE_METRICS: [(Family, QueueValue); 12] = [
    (gauge("queue_consumer_capacity", "Consumer capacity"), |q| {
        if q.g.consumers > 0 { 1.0 } else { 0.0 }
    }),
    (
        gauge("queue_consumer_utilisation", "Same as consumer capacity"),
        |q| if q.g.consumers > 0 { 1.0 } else { 0.0 },
    ),
    (
        gauge(
            "queue_process_memory_bytes",
            "Memory in bytes used by the queue's messages",
        ),
        |q| q.g.memory_bytes as f64,
    ),
    (
        gauge(
            "queue_messages_ram",
            "Ready and unacknowledged messages stored in memory",
        ),
        |q| (q.g.ready_in_memory + q.g.unacked) as f64,
    ),
    (
        gauge(
            "queue_messages_ram_bytes",
            "Size of ready and unacknowledged messages stored in memory",
        ),
        |q| q.g.memory_bytes as f64,
    ),
    (
        gauge(
            "queue_messages_ready_ram",
            "Ready messages stored in memory",
        ),
        |q| q.g.ready_in_memory as f64,
    ),
    (
        gauge(
            "queue_messages_unacked_ram",
            "Unacknowledged messages stored in memory",
        ),
        |q| q.g.unacked as f64,
    ),
    (
        gauge(
            "queue_messages_bytes",
            "Size in bytes of ready and unacknowledged messages",
        ),
        |q| q.g.ready_bytes as f64,
    ),
    (
        gauge(
            "queue_messages_ready_bytes",
            "Size in bytes of ready messages",
        ),
        |q| q.g.ready_bytes as f64,
    ),
    (
        gauge("queue_messages_paged_out", "Messages paged out to disk"),
        |q| q.g.ready.saturating_sub(q.g.ready_in_memory) as f64,
    ),
    (
        gauge(
            "queue_messages_paged_out_bytes",
            "Size in bytes of messages paged out to disk",
        ),
        |q| q.g.ready_bytes.saturating_sub(q.g.memory_bytes) as f64,
    ),
    (
        counter(
            "queue_messages_published_total",
            "Total number of messages published to queues",
        ),
        |q| q.published as f64,
    ),
];

struct ChannelSample {
    name: String,
    info: ChannelInfo,
}

type ChannelValue = fn(&ChannelSample) -> f64;

fn stat(info: &ChannelInfo, name: &str) -> f64 {
    info.stats
        .iter()
        .find(|s| s.0 == name)
        .map_or(0.0, |s| s.1 as f64)
}

const CHANNEL_METRICS: [(Family, ChannelValue); 7] = [
    (gauge("channel_consumers", "Consumers on a channel"), |c| {
        c.info.consumer_count as f64
    }),
    (
        gauge(
            "channel_messages_unacked",
            "Delivered but not yet acknowledged messages",
        ),
        |c| c.info.messages_unacknowledged as f64,
    ),
    (
        gauge(
            "channel_messages_unconfirmed",
            "Published but not yet confirmed messages",
        ),
        |c| c.info.messages_unconfirmed as f64,
    ),
    (
        gauge(
            "channel_messages_uncommitted",
            "Messages received in a transaction but not yet committed",
        ),
        |c| c.info.messages_uncommitted as f64,
    ),
    (
        gauge(
            "channel_acks_uncommitted",
            "Message acknowledgements in a transaction not yet committed",
        ),
        |c| c.info.acks_uncommitted as f64,
    ),
    (
        gauge(
            "consumer_prefetch",
            "Limit of unacknowledged messages for each consumer",
        ),
        |c| f64::from(c.info.prefetch_count),
    ),
    (
        gauge(
            "channel_prefetch",
            "Total limit of unacknowledged messages for all consumers on a channel",
        ),
        |c| f64::from(c.info.global_prefetch_count),
    ),
];

const CHANNEL_EXCHANGE: [(Family, ChannelValue); 4] = [
    (
        counter(
            "channel_messages_published_total",
            "Total number of messages published into an exchange on a channel",
        ),
        |c| stat(&c.info, "publish"),
    ),
    (
        counter(
            "channel_messages_confirmed_total",
            "Total number of messages published into an exchange and confirmed on the channel",
        ),
        |c| stat(&c.info, "confirm"),
    ),
    (
        counter(
            "channel_messages_unroutable_returned_total",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
        ),
        |c| stat(&c.info, "return_unroutable"),
    ),
    (
        counter(
            "channel_messages_unroutable_dropped_total",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
        ),
        |c| stat(&c.info, "drop_unroutable"),
    ),
];

const CHANNEL_QUEUE: [(Family, ChannelValue); 7] = [
    (
        counter(
            "channel_get_ack_total",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
        ),
        |c| stat(&c.info, "get"),
    ),
    (
        counter(
            "channel_get_total",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
        ),
        |c| stat(&c.info, "get_no_ack"),
    ),
    (
        counter(
            "channel_messages_delivered_ack_total",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
        ),
        |c| stat(&c.info, "deliver"),
    ),
    (
        counter(
            "channel_messages_delivered_total",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
        ),
        |c| stat(&c.info, "deliver_no_ack"),
    ),
    (
        counter(
            "channel_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
        ),
        |c| stat(&c.info, "redeliver"),
    ),
    (
        counter(
            "channel_messages_acked_total",
            "Total number of messages acknowledged by consumers",
        ),
        |c| stat(&c.info, "ack"),
    ),
    (
        counter(
            "channel_get_empty_total",
            "Total number of times basic.get operations fetched no message",
        ),
        |c| stat(&c.info, "get_empty"),
    ),
];

struct ConnectionSample {
    name: String,
    traffic: [u64; 4],
    channels: usize,
    pending: usize,
}

type ConnectionValue = fn(&ConnectionSample) -> f64;

const CONNECTION_COARSE: [(Family, ConnectionValue); 2] = [
    (
        counter(
            "connection_incoming_bytes_total",
            "Total number of bytes received on a connection",
        ),
        |c| c.traffic[RECV_OCT] as f64,
    ),
    (
        counter(
            "connection_outgoing_bytes_total",
            "Total number of bytes sent on a connection",
        ),
        |c| c.traffic[SEND_OCT] as f64,
    ),
];

const CONNECTION_METRICS: [(Family, ConnectionValue); 4] = [
    (
        counter(
            "connection_incoming_packets_total",
            "Total number of packets received on a connection",
        ),
        |c| c.traffic[RECV_CNT] as f64,
    ),
    (
        counter(
            "connection_outgoing_packets_total",
            "Total number of packets sent on a connection",
        ),
        |c| c.traffic[SEND_CNT] as f64,
    ),
    (
        gauge(
            "connection_pending_packets",
            "Number of packets waiting to be sent on a connection",
        ),
        |c| c.pending as f64,
    ),
    (
        gauge("connection_channels", "Channels on a connection"),
        |c| c.channels as f64,
    ),
];

/// What one scrape saw.
pub struct Snapshot {
    queues: Vec<QueueSample>,
    health: Vec<HealthSample>,
    streams: Vec<StreamSample>,
    consumers: Vec<ConsumerSample>,
    channels: Vec<ChannelSample>,
    connections: Vec<ConnectionSample>,
}

impl Snapshot {
    /// Read every queue (of `vhosts`, if given), channel and connection
    /// once; each consumer too if `consumers` (per-object endpoints).
    pub fn take(b: &Broker, vhosts: Option<&[String]>, consumers: bool) -> Snapshot {
        let wanted = |v: &str| vhosts.is_none_or(|vs| vs.iter().any(|w| w == v));
        let mut queues = Vec::new();
        let mut health = Vec::new();
        let mut streams = Vec::new();
        let mut consumer_samples = Vec::new();
        let channel_name = |c: &ConsumerView| match b.connection(c.connection) {
            Some(conn) => format!("{} ({})", conn.details.name, c.channel),
            None => String::new(),
        };
        for v in b.vhosts().into_iter().filter(|v| wanted(&v.name)) {
            for q in v.queues_sorted() {
                streams.extend(StreamSample::of(&v.name, &q));
                if consumers {
                    consumer_samples.extend(ConsumerSample::of(&v.name, &q, channel_name));
                }
                let g = q.gauges();
                health.push(HealthSample {
                    labels: vec![
                        Label::new("vhost", v.name.clone()),
                        Label::new("queue", q.name().to_string()),
                    ],
                    oldest_ready_ms: g.oldest_ready_ms,
                    latency: q.stats.latency.snapshot(),
                });
                queues.push(QueueSample {
                    vhost: v.name.clone(),
                    name: q.name().to_string(),
                    g,
                    published: q.stats.events.get(QueueEvent::Publish as usize),
                });
            }
        }
        let conns: Vec<Arc<ClientConnection>> = b
            .connections()
            .into_iter()
            .filter(|c| wanted(&c.vhost))
            .collect();
        let mut channels = Vec::new();
        let mut connections = Vec::new();
        for c in &conns {
            let infos = c.probe.channels();
            connections.push(ConnectionSample {
                name: c.details.name.clone(),
                traffic: c.traffic.values(),
                channels: infos.len(),
                pending: 0,
            });
            for info in infos {
                channels.push(ChannelSample {
                    name: format!("{} ({})", c.details.name, info.number),
                    info,
                });
            }
        }
        Snapshot {
            queues,
            health,
            streams,
            consumers: consumer_samples,
            channels,
            connections,
        }
    }

    /// Consumers and publishing channels, for the `global_` gauges.
    pub fn consumers(&self) -> u64 {
        self.queues.iter().map(|q| q.g.consumers).sum()
    }

    pub fn publishers(&self) -> u64 {
        self.channels
            .iter()
            .filter(|c| stat(&c.info, "publish") > 0.0)
            .count() as u64
    }

    /// Write the groups in `groups` (RabbitMQ's detailed family names; all
    /// of them when `None`).
    pub fn write(
        &self,
        out: &mut Exposition,
        prefix: &str,
        shape: Shape,
        groups: Option<&[String]>,
    ) {
        let wants = |g: &str| groups.is_none_or(|gs| gs.iter().any(|w| w == g));
        let queue_label = |q: &QueueSample| {
            vec![
                Label::new("vhost", q.vhost.clone()),
                Label::new("queue", q.name.clone()),
            ]
        };
        let channel_label = |c: &ChannelSample| vec![Label::new("channel", c.name.clone())];
        let connection_label =
            |c: &ConnectionSample| vec![Label::new("connection", c.name.clone())];
        if wants("queue_coarse_metrics") {
            emit(out, prefix, shape, &QUEUE_COARSE, &self.queues, queue_label);
        }
        if wants("queue_consumer_count") {
            emit(
                out,
                prefix,
                shape,
                &QUEUE_CONSUMERS,
                &self.queues,
                queue_label,
            );
        }
        if wants("queue_metrics") {
            emit(
                out,
                prefix,
                shape,
                &QUEUE_METRICS,
                &self.queues,
                queue_label,
            );
        }
        for (group, table) in [
            ("channel_metrics", &CHANNEL_METRICS[..]),
            ("channel_exchange_metrics", &CHANNEL_EXCHANGE[..]),
            ("channel_queue_metrics", &CHANNEL_QUEUE[..]),
        ] {
            if wants(group) {
                emit(out, prefix, shape, table, &self.channels, channel_label);
            }
        }
        queue_health::write(out, prefix, shape, &self.health, wants);
        streams::write(out, prefix, shape, &self.streams, wants);
        consumers::write(out, prefix, shape, &self.consumers, wants);
        if wants("connection_coarse_metrics") {
            emit(
                out,
                prefix,
                shape,
                &CONNECTION_COARSE,
                &self.connections,
                connection_label,
            );
        }
        if wants("connection_metrics") {
            emit(
                out,
                prefix,
                shape,
                &CONNECTION_METRICS,
                &self.connections,
                connection_label,
            );
        }
    }
}

/// A family and how to read its value off one object.
type Column<T> = (Family, fn(&T) -> f64);

fn emit<T>(
    out: &mut Exposition,
    prefix: &str,
    shape: Shape,
    table: &[Column<T>],
    items: &[T],
    labels: impl Fn(&T) -> Vec<Label>,
) {
    for (family, value) in table {
        let samples: Vec<(Vec<Label>, f64)> = match shape {
            Shape::Aggregated => vec![(Vec::new(), items.iter().map(value).sum())],
            Shape::PerObject => items.iter().map(|i| (labels(i), value(i))).collect(),
        };
        out.family(prefix, family, &samples);
    }
}
