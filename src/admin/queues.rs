//! `/api/queues`: queues with their counts, rates and consumers; declared,
//! deleted and purged over HTTP as an AMQP client of the caller's
//! permissions would. Reading and moving messages is `queue_messages`'.

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::body::JsonBody;
use super::format::{add_deliver_get, counter, iso8601, message_stats};
use super::listing::{ListParams, Listing};
use super::{ApiError, created_or_updated, durable, short_name};
use crate::broker::auth::Access;
use crate::broker::vhost::QueueDeclare;
use crate::broker::{Broker, ClientConnection, VHost};
use crate::fields::json::{json_to_table, table_to_json};
use crate::metrics::ChurnEvent;
use crate::queue::{ConsumerView, QUEUE_EVENTS, Queue};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/queues", get(list_all))
        .route("/api/queues/", get(list_all))
        .route("/api/queues/{vhost}", get(list_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(show).put(put).delete(delete_queue),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(purge))
}

/// Where a consumer's channel is, as `consumer_details` and the consumers
/// list show it.
pub fn channel_details(conn: Option<&ClientConnection>, channel: u16) -> Value {
    match conn {
        Some(c) => json!({
            "connection_name": c.details.name,
            "name": format!("{} ({channel})", c.details.name),
            "node": "",
            "number": channel,
            "peer_host": c.peer.ip().to_canonical().to_string(),
            "peer_port": c.peer.port(),
            "user": c.user,
        }),
        None => json!({"number": channel}),
    }
}

/// One consumer as RabbitMQ shows it.
pub fn consumer_json(b: &Broker, q: &Queue, c: &ConsumerView) -> Value {
    let conn = b.connection(c.connection);
    let mut details = channel_details(conn.as_deref(), c.channel);
    if let Some(m) = details.as_object_mut() {
        m.insert("node".into(), b.node_name.clone().into());
    }
    let mut out = json!({
        "arguments": table_to_json(&c.arguments),
        "ack_required": c.ack_required,
        "active": c.active,
        "activity_status": if c.active { "up" } else { "waiting" },
        "channel_details": details,
        "consumer_tag": c.tag.as_str(),
        "consumer_timeout": c.timeout_ms.or(q.consumer_timeout()).unwrap_or(b.config.limits.consumer_timeout_ms),
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch_count,
        "priority": c.priority,
        "queue": {"name": q.name(), "vhost": q.config.vhost},
    });
    // Beyond RabbitMQ: how far behind on acknowledgements it is.
    if let Some(m) = out.as_object_mut() {
        m.insert("messages_unacknowledged".into(), c.unacked.into());
        let since = (c.last_settled_ms != 0)
            .then(|| crate::queue::now_ms().saturating_sub(c.last_settled_ms));
        m.insert("ms_since_last_ack".into(), since.into());
    }
    // Where a stream consumer is, as `rabbitmq-streams
    // list_stream_consumers` names it.
    if let (Some((offset, lag)), Some(m)) = (c.stream_position, out.as_object_mut()) {
        m.insert("offset".into(), offset.into());
        m.insert("offset_lag".into(), lag.into());
    }
    out
}

/// One queue as RabbitMQ lists it; `details` adds `consumer_details`.
pub fn queue_json(
    b: &Broker,
    v: &VHost,
    q: &Arc<Queue>,
    listing: &Listing,
    details: bool,
) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), q.name().into());
    out.insert("vhost".into(), q.config.vhost.clone().into());
    out.insert("type".into(), q.config.args.queue_type.as_str().into());
    out.insert("durable".into(), q.config.durable.into());
    out.insert("auto_delete".into(), q.config.auto_delete.into());
    out.insert(
        "exclusive".into(),
        q.config.exclusive_owner.is_some().into(),
    );
    out.insert("arguments".into(), table_to_json(&q.config.arguments));
    out.insert("node".into(), b.node_name.clone().into());
    out.insert(
        "state".into(),
        if q.is_paused() { "paused" } else { "running" }.into(),
    );
    let view = q.view();
    if listing.disable_stats && !listing.queue_totals {
        return Value::Object(out);
    }
    let rates = q.stats.depth.get();
    // A stream's messages are what it holds, acknowledged or not.
    let total = if q.stream.is_some() {
        view.ready
    } else {
        view.ready + view.unacked
    };
    counter(&mut out, "messages", total, rates[0]);
    counter(&mut out, "messages_ready", view.ready, rates[1]);
    counter(&mut out, "messages_unacknowledged", view.unacked, rates[2]);
    if listing.disable_stats {
        return Value::Object(out);
    }
    let policy = view.policy.clone();
    let definition = effective_definition(v, policy.as_deref(), view.operator_policy.as_deref());
    out.insert("policy".into(), policy.map_or(Value::Null, Value::from));
    out.insert(
        "operator_policy".into(),
        view.operator_policy
            .clone()
            .map_or(Value::Null, Value::from),
    );
    out.insert("effective_policy_definition".into(), definition);
    let owner = q.config.exclusive_owner.and_then(|id| b.connection(id));
    out.insert(
        "owner_pid_details".into(),
        owner.map_or(Value::Null, |c| {
            json!({
                "name": c.details.name,
                "peer_host": c.peer.ip().to_canonical().to_string(),
                "peer_port": c.peer.port(),
            })
        }),
    );
    out.insert("exclusive_consumer_tag".into(), {
        let exclusive = view.consumers.iter().find(|c| c.exclusive);
        exclusive.map_or(Value::Null, |c| c.tag.as_str().into())
    });
    out.insert("single_active_consumer_tag".into(), {
        let single = q.config.args.single_active_consumer;
        let active = view.consumers.iter().find(|c| c.active);
        match (single, active) {
            (true, Some(c)) => c.tag.as_str().into(),
            _ => Value::Null,
        }
    });
    let consumers = view.consumers.len();
    out.insert("consumers".into(), consumers.into());
    let utilisation = if consumers > 0 { 1.0 } else { 0.0 };
    out.insert("consumer_capacity".into(), utilisation.into());
    out.insert("consumer_utilisation".into(), utilisation.into());
    out.insert(
        "idle_since".into(),
        q.stats
            .idle_since()
            .map_or(Value::Null, |t| iso8601(t).into()),
    );
    out.insert("head_message_timestamp".into(), Value::Null);
    if q.stream.is_none() {
        // Warren's: how old the oldest ready message is, and how long
        // messages waited for their first delivery.
        let age = view
            .oldest_ready_ms
            .map(|t| crate::queue::now_ms().saturating_sub(t));
        out.insert(
            "oldest_ready_message_age_ms".into(),
            age.map_or(Value::Null, Value::from),
        );
        out.insert(
            "delivery_latency".into(),
            latency_json(&q.stats.latency.snapshot()),
        );
    }
    out.insert("memory".into(), view.memory_bytes.into());
    let paged_out = view.ready - view.ready_in_memory.min(view.ready);
    for (name, value) in [
        ("message_bytes", view.ready_bytes),
        ("message_bytes_ready", view.ready_bytes),
        ("message_bytes_unacknowledged", 0),
        ("message_bytes_ram", view.memory_bytes),
        (
            "message_bytes_paged_out",
            view.ready_bytes.saturating_sub(view.memory_bytes),
        ),
        ("messages_ram", view.ready_in_memory + view.unacked),
        ("messages_ready_ram", view.ready_in_memory),
        ("messages_unacknowledged_ram", view.unacked),
        ("messages_paged_out", paged_out),
        ("messages_persistent", view.persistent),
    ] {
        out.insert(name.into(), value.into());
    }
    let (counts, rates) = q.stats.events.snapshot();
    let mut stats = message_stats(&QUEUE_EVENTS, &counts, &rates);
    add_deliver_get(&mut stats);
    out.insert("message_stats".into(), Value::Object(stats));
    if let Some(stream) = &q.stream {
        let info = stream.info();
        out.insert("committed_offset".into(), info.committed_offset.into());
        out.insert("first_offset".into(), info.first_offset.into());
        // The newest offset written, if any.
        let last = info
            .committed_offset
            .checked_sub(1)
            .filter(|l| *l >= info.first_offset);
        out.insert("last_offset".into(), last.map_or(Value::Null, Value::from));
        out.insert("segments".into(), info.segments.into());
        out.insert("stream_bytes".into(), info.bytes.into());
        out.insert("leader".into(), b.node_name.clone().into());
        out.insert("members".into(), json!([b.node_name]));
        out.insert("online".into(), json!([b.node_name]));
    }
    if details {
        let consumers: Vec<Value> = view
            .consumers
            .iter()
            .map(|c| consumer_json(b, q, c))
            .collect();
        out.insert("consumer_details".into(), consumers.into());
        out.insert("deliveries".into(), json!([]));
        out.insert("incoming".into(), json!([]));
    }
    Value::Object(out)
}

/// A queue's publish-to-first-delivery latency: count, sum, the bucket
/// bounds the median and the 99th percentile fall under, and the
/// cumulative buckets (ms, as Prometheus's `le`).
fn latency_json(h: &crate::queue::LatencyHistogram) -> Value {
    let mut buckets = Map::new();
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = crate::queue::LATENCY_BUCKETS_MS
            .get(i)
            .map_or("+Inf".to_string(), u64::to_string);
        buckets.insert(le, cumulative.into());
    }
    let bound = |q| h.quantile_bound_ms(q).map_or(Value::Null, Value::from);
    json!({
        "count": h.count(),
        "sum_ms": h.sum_ms,
        "p50_ms_at_most": bound(0.5),
        "p99_ms_at_most": bound(0.99),
        "buckets_ms": buckets,
    })
}

/// The policy and operator policy merged as they apply: the operator's
/// keys where the policy has none, the lower number where both have one.
fn effective_definition(v: &VHost, policy: Option<&str>, operator: Option<&str>) -> Value {
    let mut merged = policy
        .and_then(|name| v.policies().into_iter().find(|p| p.name == name))
        .map(|p| p.definition)
        .unwrap_or_default();
    let op = operator.and_then(|name| v.operator_policies().into_iter().find(|p| p.name == name));
    for (k, value) in op.map(|p| p.definition).unwrap_or_default() {
        let lower = match (merged.get(&k).and_then(Value::as_f64), value.as_f64()) {
            (Some(a), Some(b)) if a <= b => continue,
            _ => value,
        };
        merged.insert(k, lower);
    }
    Value::Object(merged)
}

/// A queue's value at a sort path, for the fields tools sort on, read
/// without building the queue's JSON object.
fn sort_value(q: &Arc<Queue>, path: &[String]) -> Option<Value> {
    let field: Vec<&str> = path.iter().map(String::as_str).collect();
    let g = || q.gauges();
    Some(match field.as_slice() {
        ["name"] => q.name().into(),
        ["vhost"] => q.config.vhost.clone().into(),
        ["durable"] => q.config.durable.into(),
        ["auto_delete"] => q.config.auto_delete.into(),
        ["exclusive"] => q.config.exclusive_owner.is_some().into(),
        ["messages"] => {
            let g = g();
            (g.ready + g.unacked).into()
        }
        ["messages_ready"] => g().ready.into(),
        ["messages_unacknowledged"] => g().unacked.into(),
        ["consumers"] => g().consumers.into(),
        ["memory"] => g().memory_bytes.into(),
        ["message_bytes"] | ["message_bytes_ready"] => g().ready_bytes.into(),
        ["message_stats", event] => {
            let i = QUEUE_EVENTS.iter().position(|e| e == event)?;
            q.stats.events.get(i).into()
        }
        _ => return None,
    })
}

/// The queues a list covers, by (vhost, name), in RabbitMQ's default order.
fn list_queues(
    b: &Broker,
    vhosts: Vec<Arc<VHost>>,
    listing: Listing,
) -> Result<Response, ApiError> {
    let default_sort = if vhosts.len() == 1 { "name" } else { "vhost" };
    let keys: Vec<(Arc<VHost>, Arc<Queue>)> = vhosts
        .iter()
        .flat_map(|v| v.queues_sorted().into_iter().map(move |q| (v.clone(), q)))
        .collect();
    listing.list_by(
        keys,
        default_sort,
        |(_, q)| q.name(),
        |(_, q), path| sort_value(q, path),
        |(v, q)| Some(queue_json(b, v, q, &listing, false)),
    )
}

async fn list_all(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let listing = params.check()?;
    list_queues(&b, caller.visible_vhosts(), listing)
}

async fn list_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let listing = params.check()?;
    list_queues(&b, vec![caller.vhost(&vhost)?], listing)
}

/// A queue of a vhost the caller may see: 404 if there is none.
pub fn find(
    caller: &Caller,
    vhost: &str,
    name: &str,
) -> Result<(Arc<VHost>, Arc<Queue>), ApiError> {
    let v = caller.vhost(vhost)?;
    let q = v.find_queue(name).ok_or_else(ApiError::not_found)?;
    Ok((v, q))
}

async fn show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let (v, q) = find(&caller, &vhost, &name)?;
    let listing = params.check()?;
    Ok(listing.one(queue_json(&b, &v, &q, &listing, true)))
}

/// The body of `PUT /api/queues/{vhost}/{name}`.
#[derive(Debug, Deserialize)]
struct PutQueue {
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

/// Arguments from a body; `x-dead-letter-exchange` and friends keep the
/// types an AMQP client would send.
pub fn arguments(v: &Value) -> Result<FieldTable, ApiError> {
    json_to_table(v).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutQueue>,
) -> Result<StatusCode, ApiError> {
    let v = caller.vhost_to_change(&vhost)?;
    let queue_name = short_name(&name, "queue name")?;
    if name.is_empty() {
        return Err(ApiError::not_found());
    }
    caller.check(&vhost, Access::Configure, "queue", &name)?;
    let arguments = arguments(&body.arguments)?;
    let dead_letter_exchange = arguments
        .inner()
        .get("x-dead-letter-exchange")
        .map(crate::fields::value_text);
    let declared = v.declare_queue(
        0,
        &QueueDeclare {
            name: queue_name,
            passive: false,
            durable: body.durable,
            exclusive: false,
            auto_delete: body.auto_delete,
            arguments,
        },
        |final_name| {
            if let Some(dlx) = &dead_letter_exchange {
                b.users
                    .check(&caller.user.name, &vhost, Access::Read, "queue", final_name)?;
                b.users
                    .check(&caller.user.name, &vhost, Access::Write, "exchange", dlx)?;
            }
            Ok(())
        },
        &caller.user.name,
    )?;
    b.metrics.churn(ChurnEvent::QueueDeclared);
    if declared.created {
        b.audit.record(
            "queue.created",
            Some(&caller.actor()),
            json!({"vhost": vhost, "name": name, "durable": body.durable,
                   "auto_delete": body.auto_delete}),
        );
    }
    durable(&b, declared.durability).await?;
    Ok(created_or_updated(declared.created))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
}

async fn delete_queue(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let (v, _) = find(&caller, &vhost, &name)?;
    caller.check(&vhost, Access::Configure, "queue", &name)?;
    let (_, durability) = v.delete_queue(
        0,
        &name,
        q.if_unused.as_deref() == Some("true"),
        q.if_empty.as_deref() == Some("true"),
        &caller.user.name,
    )?;
    b.audit.record(
        "queue.deleted",
        Some(&caller.actor()),
        json!({"vhost": vhost, "name": name}),
    );
    durable(&b, durability).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn purge(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (v, _) = find(&caller, &vhost, &name)?;
    caller.check(&vhost, Access::Read, "queue", &name)?;
    let (_, durability) = v.purge_queue(0, &name)?;
    durable(&b, durability).await?;
    Ok(StatusCode::NO_CONTENT)
}
