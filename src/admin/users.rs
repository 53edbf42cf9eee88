//! `/api/users`, `/api/whoami`'s cousins: users with their password hashes
//! and tags, created or updated with a clear-text password or a hash in
//! RabbitMQ's format. Administrators only.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::body::JsonBody;
use super::listing::ListParams;
use super::{ApiError, created_or_updated};
use crate::broker::Broker;
use crate::broker::access::Password;
use crate::broker::auth::{HashingAlgorithm, User};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/users", get(list))
        .route("/api/users/", get(list))
        .route("/api/users/without-permissions", get(without_permissions))
        .route("/api/users/bulk-delete", post(bulk_delete))
        .route("/api/users/{user}", get(show).put(put).delete(delete))
}

pub fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm.name(),
        "tags": u.tags,
        "limits": u.limits,
    })
}

fn sorted_users(b: &Broker) -> Vec<User> {
    let mut users = b.users.users();
    users.sort_by(|a, c| a.name.cmp(&c.name));
    users
}

async fn list(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    params.check()?.list(
        sorted_users(&b),
        "name",
        |u| &u.name,
        |u| Some(user_json(u)),
    )
}

async fn without_permissions(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let with: std::collections::HashSet<String> = b
        .users
        .permissions()
        .into_iter()
        .map(|(u, _, _)| u)
        .collect();
    let users: Vec<User> = sorted_users(&b)
        .into_iter()
        .filter(|u| !with.contains(&u.name))
        .collect();
    params
        .check()?
        .list(users, "name", |u| &u.name, |u| Some(user_json(u)))
}

async fn show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let u = b.users.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(params.check()?.one(user_json(&u)))
}

/// The body of `PUT /api/users/{name}`.
#[derive(Debug, Deserialize)]
struct PutUser {
    password: Option<String>,
    password_hash: Option<String>,
    hashing_algorithm: Option<String>,
    #[serde(default)]
    tags: Tags,
}

/// Tags as RabbitMQ takes them: `"a,b"` or `["a", "b"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Tags {
    #[default]
    None,
    Text(String),
    List(Vec<String>),
}

impl Tags {
    pub fn into_vec(self) -> Vec<String> {
        let list = match self {
            Tags::None => Vec::new(),
            Tags::Text(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
            Tags::List(l) => l,
        };
        list.into_iter().filter(|t| !t.is_empty()).collect()
    }
}

async fn put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutUser>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let existed = b.users.user(&name);
    let password = match (body.password, body.password_hash) {
        (Some(p), _) => Password::Clear(p),
        (None, Some(h)) if h.is_empty() => Password::None,
        (None, Some(hash)) => {
            let algorithm = match body.hashing_algorithm.as_deref() {
                None => HashingAlgorithm::Sha256,
                Some(a) => HashingAlgorithm::parse(a).ok_or_else(|| {
                    ApiError::BadRequest(format!("unknown hashing algorithm '{a}'"))
                })?,
            };
            Password::Hash { hash, algorithm }
        }
        (None, None) => match &existed {
            // Tags only: the password stays.
            Some(u) => Password::Hash {
                hash: u.password_hash.clone(),
                algorithm: u.hashing_algorithm,
            },
            None => {
                return Err(ApiError::BadRequest(
                    "Either password or password_hash must be set".into(),
                ));
            }
        },
    };
    let password = match password {
        Password::Hash { hash, .. } if hash.is_empty() => Password::None,
        p => p,
    };
    b.put_user(&name, password, body.tags.into_vec(), &caller.actor())?;
    Ok(created_or_updated(existed.is_none()))
}

async fn delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    b.delete_user(&name, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct BulkDelete {
    users: Vec<String>,
}

async fn bulk_delete(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    JsonBody(body): JsonBody<BulkDelete>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    for name in &body.users {
        if b.users.user(name).is_some() {
            b.delete_user(name, &caller.actor())?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
