//! Reading and moving a queue's messages over HTTP.
//!
//! `POST /api/queues/{vhost}/{name}/get` is RabbitMQ's: it takes messages
//! as `basic.get` would, then acks, requeues or rejects them (`ackmode`).
//! Two routes are Warren's own, for operators who asked for them:
//!
//! - `GET /api/queues/{vhost}/{name}/messages?count=N` browses the first
//!   N ready messages without taking them: no redelivered flag is set and
//!   the order is unchanged (messages paged out to disk are not shown);
//! - `POST /api/queues/{vhost}/{name}/move` with
//!   `{"destination": "<queue>", "count": N}` (count optional: all) moves
//!   messages to another queue of the vhost — a dead-letter queue redrive —
//!   keeping their properties, headers and `x-death`. Each message is
//!   enqueued on the destination before it leaves the source, so a crash
//!   may duplicate one but never loses one.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use super::body::JsonBody;
use super::listing::json_response;
use super::message_json::{Encoding, message_json};
use super::queues::find;
use crate::broker::Broker;
use crate::broker::auth::Access;
use crate::metrics::MessageEvent;
use crate::queue::{Enqueued, QueuedMessage, Return};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/messages", get(browse))
        .route("/api/queues/{vhost}/{name}/move", post(move_messages))
}

/// The body of `POST …/get`.
#[derive(Debug, Deserialize)]
struct GetBody {
    count: Value,
    ackmode: Option<String>,
    /// RabbitMQ 3.6 and older: `requeue` instead of `ackmode`.
    requeue: Option<Value>,
    encoding: Option<String>,
    truncate: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckMode {
    AckRequeue,
    Ack,
    RejectRequeue,
    Reject,
}

fn number(v: &Value, what: &str) -> Result<u64, ApiError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ApiError::BadRequest(format!("{what} must be a non-negative integer")))
}

async fn get_messages(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<GetBody>,
) -> Result<Response, ApiError> {
    // A get runs on a channel: a missing queue is its 404.
    let v = caller.vhost(&vhost)?;
    let q = v.find_queue(&name).ok_or_else(|| {
        ApiError::Missing(format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"))
    })?;
    caller.check(&vhost, Access::Read, "queue", &name)?;
    let count = number(&body.count, "count")?;
    let mode = match (body.ackmode.as_deref(), &body.requeue) {
        (Some("ack_requeue_true"), _) => AckMode::AckRequeue,
        (Some("ack_requeue_false"), _) => AckMode::Ack,
        (Some("reject_requeue_true"), _) => AckMode::RejectRequeue,
        (Some("reject_requeue_false"), _) => AckMode::Reject,
        (None, Some(r)) if r.as_bool() == Some(true) || r.as_str() == Some("true") => {
            AckMode::AckRequeue
        }
        (None, Some(_)) => AckMode::Ack,
        (Some(other), _) => {
            return Err(ApiError::BadRequest(format!("unknown ackmode '{other}'")));
        }
        (None, None) => return Err(ApiError::BadRequest("ackmode is required".into())),
    };
    let encoding = match body.encoding.as_deref() {
        None => return Err(ApiError::BadRequest("encoding is required".into())),
        e => Encoding::parse(e)?,
    };
    let truncate = match &body.truncate {
        None | Some(Value::Null) => None,
        Some(t) => Some(number(t, "truncate")? as usize),
    };
    let mut taken: Vec<QueuedMessage> = Vec::new();
    let mut items: Vec<Value> = Vec::new();
    for _ in 0..count {
        let mut got = None;
        q.get(false, |m, left| got = Some((m, left)));
        let Some((m, left)) = got else { break };
        b.metrics.count(MessageEvent::Delivered, 1);
        b.metrics.count(MessageEvent::DeliveredGetManualAck, 1);
        items.push(message_json(
            &m.message,
            m.redelivered,
            left,
            encoding,
            truncate,
        ));
        taken.push(m);
    }
    if taken.is_empty() {
        b.metrics.count(MessageEvent::GetEmpty, 1);
    }
    match mode {
        AckMode::AckRequeue | AckMode::RejectRequeue => q.requeue(None, taken, Return::Returned),
        AckMode::Ack => {
            b.metrics
                .count(MessageEvent::Acknowledged, taken.len() as u64);
            q.ack(None, taken);
        }
        AckMode::Reject => q.discard(None, taken),
    }
    Ok(json_response(&Value::Array(items)))
}

#[derive(Debug, Deserialize)]
struct BrowseQuery {
    count: Option<String>,
    encoding: Option<String>,
    truncate: Option<String>,
}

async fn browse(
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<BrowseQuery>,
) -> Result<Response, ApiError> {
    let (_, q) = find(&caller, &vhost, &name)?;
    caller.check(&vhost, Access::Read, "queue", &name)?;
    let count = match &query.count {
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest("count must be a non-negative integer".into()))?,
        None => 1,
    };
    let encoding = Encoding::parse(query.encoding.as_deref())?;
    let truncate = match &query.truncate {
        Some(t) => Some(
            t.parse::<usize>()
                .map_err(|_| ApiError::BadRequest("truncate must be an integer".into()))?,
        ),
        None => None,
    };
    let messages = q.browse(count.min(10_000));
    let ready = q.depth().0;
    let items: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let left = ready.saturating_sub(i as u64 + 1);
            message_json(
                &m.message,
                m.redelivered,
                u32::try_from(left).unwrap_or(u32::MAX),
                encoding,
                truncate,
            )
        })
        .collect();
    Ok(json_response(&Value::Array(items)))
}

#[derive(Debug, Deserialize)]
struct MoveBody {
    destination: String,
    count: Option<Value>,
}

async fn move_messages(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<MoveBody>,
) -> Result<Json<Value>, ApiError> {
    let (v, source) = find(&caller, &vhost, &name)?;
    caller.check(&vhost, Access::Read, "queue", &name)?;
    let destination = v.find_queue(&body.destination).ok_or_else(|| {
        ApiError::NotFound(Some(format!(
            "no queue '{}' in vhost '{vhost}'",
            body.destination
        )))
    })?;
    if Arc::ptr_eq(&source, &destination) {
        return Err(ApiError::BadRequest(
            "source and destination are the same queue".into(),
        ));
    }
    // Moving is publishing to the destination through the default
    // exchange, as a shovel would.
    caller.check(&vhost, Access::Write, "exchange", "")?;
    let limit = match &body.count {
        None | Some(Value::Null) => u64::MAX,
        Some(c) => number(c, "count")?,
    };
    let (mut moved, mut stored) = (0u64, false);
    while moved < limit {
        let mut got = None;
        source.get(false, |m, _| got = Some(m));
        let Some(m) = got else { break };
        // Arrived in the destination now: its TTL and wait count from here.
        let moved_message = Arc::new(crate::message::Message {
            received_ms: crate::queue::now_ms(),
            ..m.message.as_ref().clone()
        });
        match destination.publish(moved_message) {
            Enqueued::Yes { stored: s, .. } => {
                stored |= s;
                source.ack(None, vec![m]);
                moved += 1;
            }
            Enqueued::Gone | Enqueued::Rejected => {
                // Put it back where it was, untouched but for the flag.
                source.requeue(None, vec![m], Return::Returned);
                break;
            }
        }
    }
    if stored || moved > 0 {
        let flushed = b.store.synced();
        if let Ok(Err(e)) = flushed.await {
            return Err(ApiError::Internal(format!(
                "cannot store moved messages: {e}"
            )));
        }
    }
    Ok(Json(json!({ "moved": moved })))
}
