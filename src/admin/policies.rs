//! `/api/policies` (policymakers) and `/api/operator-policies`
//! (administrators): settings applied to every queue or exchange whose
//! name matches a pattern.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Caller;
use super::body::JsonBody;
use super::listing::ListParams;
use super::{ApiError, created_or_updated};
use crate::broker::Broker;
use crate::store::PolicyRecord;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/policies", get(list_user))
        .route("/api/policies/", get(list_user))
        .route("/api/policies/{vhost}", get(list_user_vhost))
        .route(
            "/api/policies/{vhost}/{name}",
            get(show_user).put(put_user).delete(delete_user),
        )
        .route("/api/operator-policies", get(list_operator))
        .route("/api/operator-policies/", get(list_operator))
        .route("/api/operator-policies/{vhost}", get(list_operator_vhost))
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(show_operator).put(put_operator).delete(delete_operator),
        )
}

/// User policies or operator policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    User,
    Operator,
}

impl Kind {
    fn may(self, caller: &Caller, vhost: &str) -> Result<(), ApiError> {
        match self {
            Kind::User => caller.policymaker(vhost),
            Kind::Operator => caller
                .admin()
                .and_then(|()| caller.vhost(vhost).map(|_| ())),
        }
    }

    fn all(self, b: &Broker, vhost: Option<&str>) -> Vec<PolicyRecord> {
        match self {
            Kind::User => b.policies(vhost),
            Kind::Operator => b.operator_policies(vhost),
        }
    }
}

fn policy_json(p: &PolicyRecord) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn respond(params: ListParams, rows: Vec<PolicyRecord>) -> Result<Response, ApiError> {
    params
        .check()?
        .list(rows, "name", |p| &p.name, |p| Some(policy_json(p)))
}

fn list(
    kind: Kind,
    caller: &Caller,
    b: &Broker,
    params: ListParams,
    vhost: Option<&str>,
) -> Result<Response, ApiError> {
    let rows: Vec<PolicyRecord> = match vhost {
        Some(v) => {
            kind.may(caller, v)?;
            kind.all(b, Some(v))
        }
        None => {
            let vhosts = caller.visible_vhosts();
            kind.all(b, None)
                .into_iter()
                .filter(|p| {
                    vhosts.iter().any(|v| v.name == p.vhost) && kind.may(caller, &p.vhost).is_ok()
                })
                .collect()
        }
    };
    respond(params, rows)
}

fn show(
    kind: Kind,
    caller: &Caller,
    b: &Broker,
    params: ListParams,
    vhost: &str,
    name: &str,
) -> Result<Response, ApiError> {
    kind.may(caller, vhost)?;
    let p = kind
        .all(b, Some(vhost))
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(ApiError::not_found)?;
    Ok(params.check()?.one(policy_json(&p)))
}

/// The body of a policy `PUT`.
#[derive(Debug, Deserialize)]
struct PutPolicy {
    pattern: String,
    definition: Map<String, Value>,
    #[serde(default)]
    priority: Value,
    #[serde(rename = "apply-to")]
    apply_to: Option<String>,
}

fn put(
    kind: Kind,
    caller: &Caller,
    b: &Broker,
    vhost: &str,
    name: &str,
    body: PutPolicy,
) -> Result<StatusCode, ApiError> {
    kind.may(caller, vhost)?;
    let priority = match &body.priority {
        Value::Null => 0,
        v => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Validation failed\n\npriority {v} is not an integer\n"
                ))
            })?,
    };
    let existed = kind.all(b, Some(vhost)).iter().any(|p| p.name == name);
    let record = PolicyRecord {
        vhost: vhost.to_string(),
        name: name.to_string(),
        pattern: body.pattern,
        apply_to: body.apply_to.unwrap_or_else(|| "all".into()),
        priority,
        definition: body.definition,
    };
    match kind {
        Kind::User => b.set_policy(vhost, record, &caller.actor())?,
        Kind::Operator => b.set_operator_policy(vhost, record, &caller.actor())?,
    }
    Ok(created_or_updated(!existed))
}

fn delete(
    kind: Kind,
    caller: &Caller,
    b: &Broker,
    vhost: &str,
    name: &str,
) -> Result<StatusCode, ApiError> {
    kind.may(caller, vhost)?;
    match kind {
        Kind::User => b.clear_policy(vhost, name, &caller.actor())?,
        Kind::Operator => b.clear_operator_policy(vhost, name, &caller.actor())?,
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    list(Kind::User, &caller, &b, p, None)
}

async fn list_user_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    list(Kind::User, &caller, &b, p, Some(&vhost))
}

async fn show_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    show(Kind::User, &caller, &b, p, &vhost, &name)
}

async fn put_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutPolicy>,
) -> Result<StatusCode, ApiError> {
    put(Kind::User, &caller, &b, &vhost, &name, body)
}

async fn delete_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(Kind::User, &caller, &b, &vhost, &name)
}

async fn list_operator(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    list(Kind::Operator, &caller, &b, p, None)
}

async fn list_operator_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    list(Kind::Operator, &caller, &b, p, Some(&vhost))
}

async fn show_operator(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    show(Kind::Operator, &caller, &b, p, &vhost, &name)
}

async fn put_operator(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutPolicy>,
) -> Result<StatusCode, ApiError> {
    put(Kind::Operator, &caller, &b, &vhost, &name, body)
}

async fn delete_operator(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(Kind::Operator, &caller, &b, &vhost, &name)
}
