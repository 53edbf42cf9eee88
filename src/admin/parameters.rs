//! `/api/parameters/{component}/{vhost}/{name}` (runtime parameters:
//! shovels, federation upstreams, vhost limits; policymakers) and
//! `/api/global-parameters/{name}` (administrators).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::body::JsonBody;
use super::listing::ListParams;
use super::{ApiError, created_or_updated};
use crate::broker::Broker;
use crate::store::{GlobalParameterRecord, ParameterRecord};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/parameters", get(list_all))
        .route("/api/parameters/", get(list_all))
        .route("/api/parameters/{component}", get(list_component))
        .route("/api/parameters/{component}/{vhost}", get(list_vhost))
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            get(show).put(put).delete(delete),
        )
        .route("/api/global-parameters", get(list_global))
        .route("/api/global-parameters/", get(list_global))
        .route(
            "/api/global-parameters/{name}",
            get(show_global).put(put_global).delete(delete_global),
        )
}

fn param_json(p: &ParameterRecord) -> Value {
    json!({"component": p.component, "vhost": p.vhost, "name": p.name, "value": p.value})
}

fn rows(
    caller: &Caller,
    b: &Broker,
    keep: impl Fn(&ParameterRecord) -> bool,
) -> Vec<ParameterRecord> {
    // A vhost's limits are a parameter too, as RabbitMQ lists them.
    let limits = b.vhosts().into_iter().filter_map(|v| {
        let l = v.limits();
        (l != Default::default()).then(|| ParameterRecord {
            component: "vhost-limits".into(),
            vhost: v.name.clone(),
            name: "limits".into(),
            value: serde_json::to_value(l).unwrap_or(Value::Null),
        })
    });
    let mut rows: Vec<ParameterRecord> = b
        .parameters()
        .into_iter()
        .chain(limits)
        .filter(|p| keep(p) && caller.policymaker(&p.vhost).is_ok())
        .collect();
    rows.sort_by(|a, c| (&a.vhost, &a.component, &a.name).cmp(&(&c.vhost, &c.component, &c.name)));
    rows
}

fn respond(params: ListParams, rows: Vec<ParameterRecord>) -> Result<Response, ApiError> {
    params
        .check()?
        .list(rows, "name", |p| &p.name, |p| Some(param_json(p)))
}

async fn list_all(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond(p, rows(&caller, &b, |_| true))
}

async fn list_component(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(component): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond(p, rows(&caller, &b, |r| r.component == component))
}

async fn list_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((component, vhost)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.policymaker(&vhost)?;
    respond(
        p,
        rows(&caller, &b, |r| {
            r.component == component && r.vhost == vhost
        }),
    )
}

async fn show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((component, vhost, name)): Path<(String, String, String)>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.policymaker(&vhost)?;
    let found = rows(&caller, &b, |r| {
        r.component == component && r.vhost == vhost && r.name == name
    })
    .pop()
    .ok_or_else(ApiError::not_found)?;
    Ok(p.check()?.one(param_json(&found)))
}

/// The body of a parameter `PUT`: the value, and optionally the names the
/// path already gives.
#[derive(Debug, Deserialize)]
struct PutParameter {
    value: Value,
}

async fn put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((component, vhost, name)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<PutParameter>,
) -> Result<StatusCode, ApiError> {
    caller.policymaker(&vhost)?;
    let existed = b
        .parameters()
        .iter()
        .any(|r| r.component == component && r.vhost == vhost && r.name == name);
    b.set_parameter(&component, &vhost, &name, body.value, &caller.actor())?;
    Ok(created_or_updated(!existed))
}

async fn delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.policymaker(&vhost)?;
    b.clear_parameter(&component, &vhost, &name, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

fn global_json(p: &GlobalParameterRecord) -> Value {
    json!({"name": p.name, "value": p.value})
}

fn globals(b: &Broker) -> Vec<GlobalParameterRecord> {
    let mut rows = b.global_parameters();
    rows.sort_by(|a, c| a.name.cmp(&c.name));
    rows
}

async fn list_global(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    p.check()?
        .list(globals(&b), "name", |g| &g.name, |g| Some(global_json(g)))
}

async fn show_global(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let g = globals(&b)
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(ApiError::not_found)?;
    Ok(p.check()?.one(global_json(&g)))
}

async fn put_global(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutParameter>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let existed = globals(&b).iter().any(|g| g.name == name);
    b.set_global_parameter(&name, body.value, &caller.actor())?;
    Ok(created_or_updated(!existed))
}

async fn delete_global(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    b.clear_global_parameter(&name, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}
