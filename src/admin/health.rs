//! Health checks, with RabbitMQ's paths and bodies: `200 {"status":"ok"}`
//! or `503 {"status":"failed","reason":...}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::auth::ManagementUser;
use crate::broker::Broker;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route("/api/health/checks/is-in-service", get(in_service))
        .route("/api/health/checks/ready-to-serve-clients", get(in_service))
}

async fn alarms(
    _user: ManagementUser,
    State(broker): State<Arc<Broker>>,
) -> (StatusCode, Json<Value>) {
    let active = broker.alarms.active();
    if active.is_empty() {
        return (StatusCode::OK, Json(json!({"status": "ok"})));
    }
    let alarms: Vec<Value> = active
        .iter()
        .map(|r| json!({"node": broker.node_name, "resource": r.as_str()}))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "failed",
            "reason": "resource alarm(s) in effect",
            "alarms": alarms,
        })),
    )
}

/// Unauthenticated, as in RabbitMQ 4.x: the broker is up and accepting.
async fn in_service() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
