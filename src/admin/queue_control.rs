//! Pausing and resuming a queue's deliveries over HTTP (Warren's, on
//! LavinMQ's paths): `PUT /api/queues/{vhost}/{name}/pause` and
//! `…/resume` answer 204. A paused queue keeps taking messages; its
//! consumers get nothing and `basic.get` finds it empty until it is
//! resumed; it stays paused across restarts. Needs configure permission on
//! the queue.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use serde_json::json;

use super::auth::Caller;
use super::queues::find;
use super::{ApiError, durable};
use crate::broker::Broker;
use crate::broker::auth::Access;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/queues/{vhost}/{name}/pause", put(pause))
        .route("/api/queues/{vhost}/{name}/resume", put(resume))
}

async fn pause(
    caller: Caller,
    state: State<Arc<Broker>>,
    path: Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    switch(caller, state, path, true).await
}

async fn resume(
    caller: Caller,
    state: State<Arc<Broker>>,
    path: Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    switch(caller, state, path, false).await
}

async fn switch(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    paused: bool,
) -> Result<StatusCode, ApiError> {
    let (v, _) = find(&caller, &vhost, &name)?;
    caller.check(&vhost, Access::Configure, "queue", &name)?;
    let durability = v.set_queue_paused(&name, paused)?;
    let event = if paused {
        "queue.paused"
    } else {
        "queue.resumed"
    };
    b.audit.record(
        event,
        Some(&caller.actor()),
        json!({"vhost": vhost, "name": name}),
    );
    durable(&b, durability).await?;
    Ok(StatusCode::NO_CONTENT)
}
