//! `/api/vhost-limits` and `/api/user-limits`: one limit at a time is set
//! (`PUT …/{name}` with `{"value": n}`) or cleared; lists show every
//! vhost's or user's limits as `{"vhost"|"user": …, "value": {…}}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use super::body::JsonBody;
use super::listing::ListParams;
use crate::broker::Broker;
use crate::broker::limits::{UserLimits, VhostLimits};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/vhost-limits", get(vhost_list))
        .route("/api/vhost-limits/{vhost}", get(vhost_show))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(vhost_put).delete(vhost_delete),
        )
        .route("/api/user-limits", get(user_list))
        .route("/api/user-limits/{user}", get(user_show))
        .route(
            "/api/user-limits/{user}/{name}",
            put(user_put).delete(user_delete),
        )
}

#[derive(Debug, Deserialize)]
struct PutLimit {
    value: Value,
}

fn limit_value(v: &Value) -> Result<i64, ApiError> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ApiError::BadRequest(format!("limit value {v} is not an integer")))
}

fn unknown_limit(name: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Validation failed\n\n{name} is not a recognised limit"
    ))
}

async fn vhost_list(
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let rows: Vec<(String, VhostLimits)> = caller
        .visible_vhosts()
        .iter()
        .map(|v| (v.name.clone(), v.limits()))
        .filter(|(_, l)| *l != VhostLimits::default())
        .collect();
    params.check()?.list(
        rows,
        "vhost",
        |r| &r.0,
        |(vhost, l)| Some(json!({"vhost": vhost, "value": l})),
    )
}

async fn vhost_show(
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = caller.vhost(&vhost)?;
    let l = v.limits();
    let rows = if l == VhostLimits::default() {
        Vec::new()
    } else {
        vec![(vhost, l)]
    };
    params.check()?.list(
        rows,
        "vhost",
        |r| &r.0,
        |(vhost, l)| Some(json!({"vhost": vhost, "value": l})),
    )
}

async fn vhost_put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutLimit>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let v = caller.vhost(&vhost)?;
    let value = limit_value(&body.value)?;
    let mut limits = v.limits();
    match name.as_str() {
        "max-connections" => limits.max_connections = Some(value),
        "max-queues" => limits.max_queues = Some(value),
        _ => return Err(unknown_limit(&name)),
    }
    b.set_vhost_limits(&vhost, limits, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn vhost_delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let v = caller.vhost(&vhost)?;
    let mut limits = v.limits();
    match name.as_str() {
        "max-connections" => limits.max_connections = None,
        "max-queues" => limits.max_queues = None,
        _ => return Err(unknown_limit(&name)),
    }
    b.set_vhost_limits(&vhost, limits, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

fn user_rows(b: &Broker, only: Option<&str>) -> Vec<(String, UserLimits)> {
    let mut rows: Vec<(String, UserLimits)> = b
        .users
        .users()
        .into_iter()
        .filter(|u| !u.limits.is_empty() && only.is_none_or(|o| o == u.name))
        .map(|u| (u.name, u.limits))
        .collect();
    rows.sort_by(|a, c| a.0.cmp(&c.0));
    rows
}

async fn user_list(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    params.check()?.list(
        user_rows(&b, None),
        "user",
        |r| &r.0,
        |(user, l)| Some(json!({"user": user, "value": l})),
    )
}

async fn user_show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(user): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    b.users.user(&user).ok_or_else(ApiError::not_found)?;
    params.check()?.list(
        user_rows(&b, Some(&user)),
        "user",
        |r| &r.0,
        |(user, l)| Some(json!({"user": user, "value": l})),
    )
}

async fn user_put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((user, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutLimit>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let u = b
        .users
        .user(&user)
        .ok_or_else(|| ApiError::BadRequest("user_not_found".into()))?;
    let value = limit_value(&body.value)?;
    let mut limits = u.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = Some(value),
        "max-channels" => limits.max_channels = Some(value),
        _ => return Err(unknown_limit(&name)),
    }
    b.set_user_limits(&user, limits, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((user, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let u = b.users.user(&user).ok_or_else(ApiError::not_found)?;
    let mut limits = u.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = None,
        "max-channels" => limits.max_channels = None,
        _ => return Err(unknown_limit(&name)),
    }
    b.set_user_limits(&user, limits, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}
