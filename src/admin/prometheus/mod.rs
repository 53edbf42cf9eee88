//! The Prometheus endpoint (default port 15692, no auth), with
//! RabbitMQ's `rabbitmq_*` family names and labels so its Grafana
//! dashboards and alert rules work unchanged:
//!
//! - `/metrics`: the broker's counters and gauges, with the per-object
//!   families summed into one sample each (RabbitMQ's default);
//! - `/metrics/per-object`: the same with one sample per queue, channel
//!   and connection;
//! - `/metrics/detailed?family=…&vhost=…`: only the groups asked for, one
//!   sample per object, under `rabbitmq_detailed_`.

mod consumers;
mod exposition;
mod links;
mod objects;
mod queue_health;
mod streams;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::Label;

use self::exposition::{Exposition, Family, Kind};
use self::objects::{Shape, Snapshot};
use crate::broker::Broker;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn aggregated(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || everything(&broker, Shape::Aggregated))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE, TEXT)], text)
}

async fn per_object(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || everything(&broker, Shape::PerObject))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE, TEXT)], text)
}

async fn detailed(
    State(broker): State<Arc<Broker>>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let (mut families, mut vhosts) = (Vec::new(), Vec::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "family" => families.push(v.into_owned()),
            "vhost" => vhosts.push(v.into_owned()),
            _ => {}
        }
    }
    let text = tokio::task::spawn_blocking(move || {
        let vhosts = (!vhosts.is_empty()).then_some(vhosts.as_slice());
        let snapshot = Snapshot::take(&broker, vhosts, true);
        let mut out = Exposition::new(String::new());
        identity(&broker, &mut out, "detailed");
        snapshot.write(
            &mut out,
            "rabbitmq_detailed_",
            Shape::PerObject,
            Some(&families),
        );
        out.text
    })
    .await
    .unwrap_or_default();
    ([(CONTENT_TYPE, TEXT)], text)
}

/// The recorder's families, the node's, and the per-object ones in
/// `shape`.
fn everything(broker: &Broker, shape: Shape) -> String {
    let m = &broker.metrics;
    let snapshot = Snapshot::take(broker, None, shape == Shape::PerObject);
    let queues: usize = broker.vhosts().iter().map(|v| v.queue_count()).sum();
    m.queues.set(queues as f64);
    let rss = super::process::resident_memory_bytes().unwrap_or(0);
    m.gauge("rabbitmq_process_resident_memory_bytes")
        .set(rss as f64);
    let (fds, max_fds) = super::process::file_descriptors();
    m.gauge("rabbitmq_process_open_fds").set(fds as f64);
    m.gauge("rabbitmq_process_max_fds").set(max_fds as f64);
    m.gauge("rabbitmq_disk_space_available_bytes")
        .set(broker.disk_free.load(Ordering::Relaxed) as f64);
    let mut out = Exposition::new(m.render());
    let node = |name: &'static str, help: &'static str| Family {
        name,
        kind: Kind::Gauge,
        help,
    };
    out.single(
        "rabbitmq_",
        &node("erlang_uptime_seconds", "Node uptime"),
        broker.started.elapsed().as_secs_f64(),
    );
    out.single(
        "rabbitmq_",
        &node("process_open_tcp_sockets", "Open TCP sockets"),
        broker.connections().len() as f64,
    );
    out.single(
        "rabbitmq_",
        &node("process_max_tcp_sockets", "Open TCP sockets limit"),
        max_fds as f64,
    );
    out.single(
        "rabbitmq_",
        &node(
            "alarms_file_descriptor_limit",
            "is 1 if file descriptor limit alarm is in effect",
        ),
        0.0,
    );
    let protocol = || vec![Label::new("protocol", "amqp091")];
    out.family(
        "rabbitmq_",
        &node("global_publishers", "Current number of publishers"),
        &[(protocol(), snapshot.publishers() as f64)],
    );
    out.family(
        "rabbitmq_",
        &node("global_consumers", "Current number of consumers"),
        &[(protocol(), snapshot.consumers() as f64)],
    );
    let sizes = m.message_sizes();
    out.histogram(
        "rabbitmq_message_size_bytes",
        "Size of messages received",
        protocol(),
        &crate::metrics::SIZE_BUCKETS,
        &sizes.buckets,
        sizes.sum,
    );
    if shape == Shape::Aggregated {
        out.single(
            "",
            &node(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
            ),
            start_time(broker),
        );
    }
    snapshot.write(&mut out, "rabbitmq_", shape, None);
    links::write(broker, &mut out, "rabbitmq_");
    out.text
}

fn start_time(broker: &Broker) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    now - broker.started.elapsed().as_secs_f64()
}

/// `rabbitmq_identity_info` for endpoints that do not render the
/// recorder (the detailed one).
fn identity(broker: &Broker, out: &mut Exposition, endpoint: &str) {
    let family = Family {
        name: "identity_info",
        kind: Kind::Gauge,
        help: "RabbitMQ node & cluster identity info",
    };
    out.family(
        "rabbitmq_",
        &family,
        &[(
            vec![
                Label::new("rabbitmq_node", broker.node_name.clone()),
                Label::new("rabbitmq_cluster", broker.cluster_name()),
                Label::new("rabbitmq_cluster_permanent_id", broker.cluster_name()),
                Label::new("rabbitmq_endpoint", endpoint.to_string()),
            ],
            1.0,
        )],
    );
}
