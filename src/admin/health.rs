//! Health checks, with RabbitMQ's paths and bodies: `200 {"status":"ok"}`
//! or `503 {"status":"failed","reason":...}`. `is-in-service`,
//! `ready-to-serve-clients` and `reached-target-cluster-size` need no
//! credentials (RabbitMQ 4.x: the Kubernetes operator's probes call them
//! without any), nor do the conventional `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use crate::broker::Broker;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
        .route("/api/health/checks/virtual-hosts", get(authenticated_ok))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(authenticated_ok),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(authenticated_ok),
        )
        .route(
            "/api/health/checks/metadata-store/initialized",
            get(authenticated_ok),
        )
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(authenticated_ok),
        )
        .route(
            "/api/health/checks/below-node-connection-limit",
            get(connection_limit),
        )
        .route("/api/health/checks/is-in-service", get(ok))
        .route("/api/health/checks/ready-to-serve-clients", get(ok))
        .route("/api/health/checks/reached-target-cluster-size", get(ok))
        .route("/api/healthchecks/node", get(authenticated_ok))
        .route("/api/healthchecks/node/{node}", get(authenticated_ok))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
}

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn alarms(_caller: Caller, State(broker): State<Arc<Broker>>) -> Response {
    let active = broker.alarms.active();
    if active.is_empty() {
        return Json(json!({"status": "ok"})).into_response();
    }
    let alarms: Vec<Value> = active
        .iter()
        .map(|r| json!({"node": broker.node_name, "resource": r.as_str()}))
        .collect();
    failed(json!({
        "status": "failed",
        "reason": "resource alarm(s) in effect",
        "alarms": alarms,
    }))
}

async fn port_listener(
    _caller: Caller,
    State(broker): State<Arc<Broker>>,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid port '{port}'")))?;
    let mut ports: Vec<u16> = broker
        .listeners()
        .iter()
        .map(|l| l.address.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(if ports.contains(&port) {
        Json(json!({"status": "ok", "port": port})).into_response()
    } else {
        failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": port,
            "ports": ports,
        }))
    })
}

async fn protocol_listener(
    _caller: Caller,
    State(broker): State<Arc<Broker>>,
    Path(protocol): Path<String>,
) -> Response {
    let mut protocols: Vec<&str> = broker.listeners().iter().map(|l| l.protocol).collect();
    protocols.sort_unstable();
    protocols.dedup();
    // RabbitMQ accepts its aliases: amqp091 and amqp0-9-1 for amqp.
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp0.9.1" => "amqp",
        "amqps" => "amqp/ssl",
        "prometheus" => "http/prometheus",
        p => p,
    };
    if protocols.contains(&wanted) {
        Json(json!({"status": "ok", "protocol": wanted})).into_response()
    } else {
        failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": protocol,
            "protocols": protocols,
        }))
    }
}

async fn connection_limit(_caller: Caller, State(broker): State<Arc<Broker>>) -> Response {
    let max = broker.config.limits.max_connections;
    let open = broker.connections().len();
    if max != 0 && open as u64 >= u64::from(max) {
        return failed(json!({
            "status": "failed",
            "reason": format!("node connection limit ({max}) is reached"),
        }));
    }
    Json(json!({"status": "ok"})).into_response()
}

/// Checks that cannot fail on a single node.
async fn authenticated_ok(_caller: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Unauthenticated: the broker is up and accepting.
async fn ok() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Deprecated and a no-op since RabbitMQ 4.1; the vhost must exist.
async fn aliveness(caller: Caller, Path(vhost): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.vhost(&vhost)?;
    Ok(Json(json!({"status": "ok"})))
}
