//! `/api/permissions` and `/api/topic-permissions`, and their views from a
//! user (`/api/users/{u}/permissions`) and from a vhost
//! (`/api/vhosts/{vh}/permissions`). Administrators only.

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
use crate::broker::auth::PermissionPatterns;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/permissions", get(list))
        .route("/api/permissions/", get(list))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(show).put(put).delete(delete),
        )
        .route("/api/users/{user}/permissions", get(of_user))
        .route("/api/vhosts/{vhost}/permissions", get(of_vhost))
        .route("/api/topic-permissions", get(list_topic))
        .route("/api/topic-permissions/", get(list_topic))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(show_topic).put(put_topic).delete(delete_topic),
        )
        .route("/api/users/{user}/topic-permissions", get(topic_of_user))
        .route("/api/vhosts/{vhost}/topic-permissions", get(topic_of_vhost))
}

type Row = (String, String, PermissionPatterns);

fn rows(b: &Broker, keep: impl Fn(&str, &str) -> bool) -> Vec<Row> {
    let mut rows: Vec<Row> = b
        .users
        .permissions()
        .into_iter()
        .filter(|(u, v, _)| keep(u, v))
        .collect();
    rows.sort_by(|a, c| (&a.1, &a.0).cmp(&(&c.1, &c.0)));
    rows
}

fn row_json((user, vhost, p): &Row) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

fn respond(params: ListParams, rows: Vec<Row>) -> Result<Response, ApiError> {
    params
        .check()?
        .list(rows, "user", |r| &r.0, |r| Some(row_json(r)))
}

async fn list(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    respond(params, rows(&b, |_, _| true))
}

async fn of_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(user): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    b.users.user(&user).ok_or_else(ApiError::not_found)?;
    respond(params, rows(&b, |u, _| u == user))
}

async fn of_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    respond(params, rows(&b, |_, v| v == vhost))
}

async fn show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, user)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let row = rows(&b, |u, v| u == user && v == vhost)
        .pop()
        .ok_or_else(ApiError::not_found)?;
    Ok(params.check()?.one(row_json(&row)))
}

#[derive(Debug, Deserialize)]
struct PutPermission {
    configure: String,
    write: String,
    read: String,
}

async fn put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutPermission>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    if b.users.user(&user).is_none() || b.vhost(&vhost).is_none() {
        return Err(ApiError::BadRequest("vhost_or_user_not_found".into()));
    }
    let existed = !rows(&b, |u, v| u == user && v == vhost).is_empty();
    b.set_permissions(
        &user,
        &vhost,
        &body.configure,
        &body.write,
        &body.read,
        &caller.actor(),
    )?;
    Ok(created_or_updated(!existed))
}

async fn delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    b.clear_permissions(&user, &vhost, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

/// (user, vhost, exchange, write, read)
type TopicRow = (String, String, String, String, String);

fn topic_rows(b: &Broker, keep: impl Fn(&str, &str) -> bool) -> Vec<TopicRow> {
    let mut rows: Vec<TopicRow> = b
        .users
        .topic_permissions()
        .into_iter()
        .filter(|(u, v, ..)| keep(u, v))
        .collect();
    rows.sort_by(|a, c| (&a.1, &a.0, &a.2).cmp(&(&c.1, &c.0, &c.2)));
    rows
}

fn topic_json((user, vhost, exchange, write, read): &TopicRow) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "exchange": exchange,
        "write": write,
        "read": read,
    })
}

fn respond_topic(params: ListParams, rows: Vec<TopicRow>) -> Result<Response, ApiError> {
    params
        .check()?
        .list(rows, "user", |r| &r.0, |r| Some(topic_json(r)))
}

async fn list_topic(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    respond_topic(params, topic_rows(&b, |_, _| true))
}

async fn topic_of_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(user): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    b.users.user(&user).ok_or_else(ApiError::not_found)?;
    respond_topic(params, topic_rows(&b, |u, _| u == user))
}

async fn topic_of_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    respond_topic(params, topic_rows(&b, |_, v| v == vhost))
}

/// A user's topic permissions in one vhost: a list, one per exchange.
async fn show_topic(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, user)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let rows = topic_rows(&b, |u, v| u == user && v == vhost);
    if rows.is_empty() {
        return Err(ApiError::not_found());
    }
    respond_topic(params, rows)
}

#[derive(Debug, Deserialize)]
struct PutTopicPermission {
    exchange: String,
    write: String,
    read: String,
}

async fn put_topic(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutTopicPermission>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let existed = topic_rows(&b, |u, v| u == user && v == vhost)
        .iter()
        .any(|r| r.2 == body.exchange);
    b.set_topic_permissions(
        &user,
        &vhost,
        &body.exchange,
        &body.write,
        &body.read,
        &caller.actor(),
    )?;
    Ok(created_or_updated(!existed))
}

async fn delete_topic(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    b.clear_topic_permissions(&user, &vhost, None, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}
