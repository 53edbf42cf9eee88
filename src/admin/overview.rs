//! The broker as a whole: `/api/overview`, `/api/nodes`, and the small
//! routes tools read first (`whoami`, `cluster-name`, `version`,
//! `extensions`, `auth`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::format::{add_deliver_get, counter, message_stats};
use super::listing::{ListParams, json_response};
use super::{ApiError, process};
use crate::broker::stats::OVERVIEW_MESSAGES;
use crate::broker::{Broker, RABBITMQ_VERSION};
use crate::exchange::ExchangeKind;
use crate::metrics::CHURN_EVENTS;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/cluster-name", get(cluster_name).put(set_cluster_name))
        .route("/api/whoami", get(whoami))
        .route("/api/version", get(version))
        .route("/api/extensions", get(extensions))
        .route("/api/auth", get(auth))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/nodes/{node}/memory", get(node_memory))
}

/// The exchange types this broker routes with, as the overview lists them.
pub fn exchange_types() -> Vec<Value> {
    ExchangeKind::ALL
        .iter()
        .map(|k| {
            json!({
                "name": k.as_str(),
                "description": k.description(),
                "enabled": true,
            })
        })
        .collect()
}

async fn overview(caller: Caller, State(b): State<Arc<Broker>>) -> Json<Value> {
    let (counts, rates) = (
        OVERVIEW_MESSAGES.map(|(_, e)| b.metrics.total(e)),
        b.overview.messages.get(),
    );
    let names = OVERVIEW_MESSAGES.map(|(n, _)| n);
    let mut messages = message_stats(&names, &counts, &rates);
    add_deliver_get(&mut messages);
    let (churn_counts, churn_rates) = b.metrics.churn.counts.snapshot();
    let churn = message_stats(&CHURN_EVENTS, &churn_counts, &churn_rates);
    // Counted now (one short lock per queue), so a test or a script sees
    // what it just did; the rates are the sampler's.
    let mut totals = [0u64; 3];
    for v in b.vhosts() {
        for q in v.queues() {
            let (ready, unacked) = q.depth();
            totals[0] += ready + unacked;
            totals[1] += ready;
            totals[2] += unacked;
        }
    }
    let total_rates = b.overview.queue_totals.get();
    let mut queue_totals = Map::new();
    for (i, name) in ["messages", "messages_ready", "messages_unacknowledged"]
        .iter()
        .enumerate()
    {
        counter(&mut queue_totals, name, totals[i], total_rates[i]);
    }
    let vhosts = caller.visible_vhosts();
    let connections: Vec<_> = b
        .connections()
        .into_iter()
        .filter(|c| caller.sees_user(&c.user))
        .collect();
    let channels: Vec<_> = connections
        .iter()
        .flat_map(|c| c.probe.channels())
        .collect();
    let object_totals = json!({
        "channels": channels.len(),
        "connections": connections.len(),
        "consumers": channels.iter().map(|c| c.consumer_count).sum::<usize>(),
        "exchanges": vhosts.iter().map(|v| v.exchanges().len()).sum::<usize>(),
        "queues": vhosts.iter().map(|v| v.queue_count()).sum::<usize>(),
    });
    Json(json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {
            "global": [600, 3600, 28800, 86400],
            "basic": [600, 3600],
            "detailed": [600],
        },
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": b.cluster_name(),
        "erlang_version": "n/a",
        "erlang_full_version": format!("Warren {} (Rust)", env!("CARGO_PKG_VERSION")),
        "release_series_support_status": "supported",
        "disable_stats": false,
        "is_op_policy_updating_enabled": true,
        "enable_queue_totals": false,
        "message_stats": messages,
        "churn_rates": churn,
        "queue_totals": queue_totals,
        "object_totals": object_totals,
        "statistics_db_event_queue": 0,
        "node": b.node_name,
        "listeners": listeners(&b),
        "contexts": contexts(&b),
    }))
}

fn listeners(b: &Broker) -> Vec<Value> {
    b.listeners()
        .iter()
        .map(|l| {
            json!({
                "node": b.node_name,
                "protocol": l.protocol,
                "ip_address": l.address.ip().to_string(),
                "port": l.address.port(),
                "socket_opts": {},
            })
        })
        .collect()
}

fn contexts(b: &Broker) -> Vec<Value> {
    b.listeners()
        .iter()
        .filter(|l| l.protocol.starts_with("http"))
        .map(|l| {
            let description = if l.protocol.ends_with("prometheus") {
                "Prometheus exporter API over HTTP"
            } else {
                "RabbitMQ Management"
            };
            json!({
                "node": b.node_name,
                "description": description,
                "path": "/",
                "port": l.address.port().to_string(),
                "ssl_opts": [],
            })
        })
        .collect()
}

async fn cluster_name(_caller: Caller, State(b): State<Arc<Broker>>) -> Json<Value> {
    Json(json!({ "name": b.cluster_name() }))
}

#[derive(Debug, serde::Deserialize)]
struct ClusterName {
    name: String,
}

/// Names the cluster (the `cluster_name` global parameter), as RabbitMQ.
async fn set_cluster_name(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    crate::admin::body::JsonBody(body): crate::admin::body::JsonBody<ClusterName>,
) -> Result<axum::http::StatusCode, crate::admin::error::ApiError> {
    caller.admin()?;
    if body.name.is_empty() {
        return Err(crate::admin::error::ApiError::BadRequest(
            "cluster name must not be empty".into(),
        ));
    }
    b.set_global_parameter(
        crate::broker::parameters::CLUSTER_NAME,
        Value::String(body.name),
        &caller.actor(),
    )?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({
        "name": caller.user.name,
        "tags": caller.user.tags,
        "is_internal_user": true,
    }))
}

/// Unauthenticated, as in RabbitMQ 4.x.
async fn version() -> Json<Value> {
    Json(Value::String(RABBITMQ_VERSION.into()))
}

async fn extensions(_caller: Caller) -> Json<Value> {
    Json(json!([]))
}

/// What the UI needs before login (RabbitMQ 4.x: unauthenticated).
async fn auth() -> Json<Value> {
    Json(json!({
        "oauth_enabled": false,
        "oauth_disable_basic_auth": false,
    }))
}

async fn nodes(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.monitor()?;
    let listing = params.check()?;
    let name = b.node_name.clone();
    listing.list(vec![name], "name", |n| n.as_str(), |_| Some(node_info(&b)))
}

async fn node(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.monitor()?;
    if name != b.node_name {
        return Err(ApiError::not_found());
    }
    Ok(params.check()?.one(node_info(&b)))
}

async fn node_memory(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.monitor()?;
    if name != b.node_name {
        return Err(ApiError::not_found());
    }
    let rss = process::resident_memory_bytes().unwrap_or(0);
    let held = b.memory_used();
    Ok(json_response(&json!({
        "memory": {
            "total": {"rss": rss, "allocated": rss, "used": rss},
            "queue_procs": held,
            "other_proc": rss.saturating_sub(held),
        }
    })))
}

/// One node's figures: RabbitMQ's field names, Warren's process.
fn node_info(b: &Broker) -> Value {
    let rss = process::resident_memory_bytes().unwrap_or(0);
    let (fd_used, fd_total) = process::file_descriptors();
    let uptime_ms = b.started.elapsed().as_millis() as u64;
    let alarms = b.alarms.active();
    let mem_alarm = alarms.contains(&crate::broker::alarms::Resource::Memory);
    let disk_alarm = alarms.contains(&crate::broker::alarms::Resource::Disk);
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sockets = b.connections().len();
    json!({
        "name": b.node_name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": uptime_ms,
        "run_queue": 0,
        "processors": processors,
        "mem_used": rss,
        "mem_used_details": {"rate": 0.0},
        "mem_limit": b.memory_limit,
        "mem_alarm": mem_alarm,
        "mem_calculation_strategy": "rss",
        "disk_free": b.disk_free.load(Ordering::Relaxed),
        "disk_free_details": {"rate": 0.0},
        "disk_free_limit": b.disk_free_limit,
        "disk_free_alarm": disk_alarm,
        "fd_used": fd_used,
        "fd_used_details": {"rate": 0.0},
        "fd_total": fd_total,
        "sockets_used": sockets,
        "sockets_used_details": {"rate": 0.0},
        "sockets_total": fd_total,
        "proc_used": sockets,
        "proc_total": 1_048_576,
        "rates_mode": "basic",
        "partitions": [],
        "net_ticktime": 60,
        "enabled_plugins": BUILT_IN_PLUGINS,
        "applications": BUILT_IN_PLUGINS.iter().map(|p| json!({
            "name": p,
            "description": "built into Warren",
            "version": RABBITMQ_VERSION,
        })).collect::<Vec<_>>(),
        "exchange_types": exchange_types(),
        "auth_mechanisms": b.config.auth.mechanisms.iter().map(|m| json!({
            "name": m, "description": "", "enabled": true,
        })).collect::<Vec<_>>(),
        "log_files": [],
        "config_files": [],
        "db_dir": b.config.storage.data_dir.display().to_string(),
        "cluster_links": [],
        "metrics_gc_queue_length": {},
    })
}

/// The plugins whose features Warren has built in, so tools that check
/// for them find them.
pub const BUILT_IN_PLUGINS: &[&str] = &["rabbitmq_management", "rabbitmq_prometheus"];
