//! `/api/vhosts`: virtual hosts with their message totals; created and
//! deleted by administrators.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::body::JsonBody;
use super::format::{add_deliver_get, counter, message_stats};
use super::listing::ListParams;
use super::users::Tags;
use super::{ApiError, created_or_updated};
use crate::broker::{Broker, VHost};
use crate::queue::QUEUE_EVENTS;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/vhosts", get(list))
        .route("/api/vhosts/", get(list))
        .route("/api/vhosts/{vhost}", get(show).put(put).delete(delete))
}

/// One vhost as RabbitMQ lists it.
pub fn vhost_json(b: &Broker, v: &VHost) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    let (mut ready_rate, mut unacked_rate) = (0f64, 0f64);
    for q in v.queues() {
        let (r, u) = q.depth();
        ready += r;
        unacked += u;
        let rates = q.stats.depth.get();
        ready_rate += rates[1];
        unacked_rate += rates[2];
    }
    let meta = b.vhost_metadata(&v.name).unwrap_or_default();
    let mut out = Map::new();
    out.insert("name".into(), v.name.clone().into());
    out.insert("description".into(), meta.description.clone().into());
    out.insert("tags".into(), json!(meta.tags));
    let queue_type = meta.default_queue_type.as_deref().unwrap_or("classic");
    out.insert("default_queue_type".into(), queue_type.into());
    out.insert(
        "metadata".into(),
        json!({
            "description": meta.description,
            "tags": meta.tags,
            "default_queue_type": queue_type,
        }),
    );
    out.insert("tracing".into(), v.is_tracing().into());
    out.insert(
        "cluster_state".into(),
        json!({ b.node_name.clone(): "running" }),
    );
    counter(
        &mut out,
        "messages",
        ready + unacked,
        ready_rate + unacked_rate,
    );
    counter(&mut out, "messages_ready", ready, ready_rate);
    counter(&mut out, "messages_unacknowledged", unacked, unacked_rate);
    out.insert("message_stats".into(), Value::Object(message_stats_of(v)));
    Value::Object(out)
}

/// A vhost's message counts: what was published to its exchanges, and
/// what its queues delivered (summed, with their rates).
fn message_stats_of(v: &VHost) -> Map<String, Value> {
    let (mut publish, mut publish_rate) = (0u64, 0f64);
    for x in v.exchanges() {
        let (counts, rates) = x.stats.snapshot();
        publish += counts[crate::exchange::PUBLISH_IN];
        publish_rate += rates[crate::exchange::PUBLISH_IN];
    }
    let (mut counts, mut rates) = ([0u64; 7], [0f64; 7]);
    for q in v.queues() {
        let (c, r) = q.stats.events.snapshot();
        for i in 0..7 {
            counts[i] += c[i];
            rates[i] += r[i];
        }
    }
    let mut m = message_stats(&QUEUE_EVENTS, &counts, &rates);
    // A queue's `publish` counts enqueues; the vhost's, publishes.
    counter(&mut m, "publish", publish, publish_rate);
    add_deliver_get(&mut m);
    m
}

async fn list(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let vhosts = caller.visible_vhosts();
    params
        .check()?
        .list(vhosts, "name", |v| &v.name, |v| Some(vhost_json(&b, v)))
}

/// Administrators only, in RabbitMQ 3.10 even for a vhost the caller may
/// use.
async fn show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let v = caller.vhost(&name)?;
    Ok(params.check()?.one(vhost_json(&b, &v)))
}

#[derive(Debug, Default, Deserialize)]
struct PutVhost {
    description: Option<String>,
    #[serde(default)]
    tags: Tags,
    default_queue_type: Option<String>,
    /// Firehose tracing, switched at run time.
    tracing: Option<bool>,
}

async fn put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutVhost>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let existed = b.vhost(&name).is_some();
    let mut meta = b.vhost_metadata(&name).unwrap_or_default();
    if let Some(d) = body.description {
        meta.description = d;
    }
    let tags = body.tags.into_vec();
    if !tags.is_empty() {
        meta.tags = tags;
    }
    if let Some(t) = body.default_queue_type {
        meta.default_queue_type = Some(t);
    }
    b.create_vhost_with(&name, meta, &caller.actor())?;
    if let Some(on) = body.tracing {
        b.set_tracing(&name, on, &caller.actor())?;
    }
    if !existed {
        // As RabbitMQ: whoever creates a vhost over HTTP may use it.
        b.set_permissions(&caller.user.name, &name, ".*", ".*", ".*", &caller.actor())?;
    }
    Ok(created_or_updated(!existed))
}

async fn delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    b.delete_vhost(&name, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}
