//! The schema registry over HTTP, shaped like Confluent Schema Registry's
//! (per vhost): register a version (`PUT /api/schemas/{vhost}/{subject}`
//! → `{"id", "version"}`; 409 with the reason when it breaks the subject's
//! compatibility level, 422 when it is not a schema), list versions, read
//! one (or `latest`), a subject's compatibility level, a schema by global
//! id, and the catalogue of subjects and where each is bound.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use super::body::JsonBody;
use crate::broker::Broker;
use crate::broker::schemas::SchemaError;
use crate::schema::{self, Level};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/schemas", get(catalogue))
        .route("/api/schemas/ids/{id}", get(by_id))
        .route("/api/schemas/{vhost}", get(vhost_catalogue))
        .route(
            "/api/schemas/{vhost}/{subject}",
            get(versions).put(register).delete(delete_subject),
        )
        .route(
            "/api/schemas/{vhost}/{subject}/config",
            get(config).put(set_config),
        )
        .route(
            "/api/schemas/{vhost}/{subject}/versions/{version}",
            get(version),
        )
}

/// Confluent's error body, with RabbitMQ's fields too.
fn refusal(status: StatusCode, error_code: u32, message: String) -> Response {
    let body = json!({
        "error_code": error_code,
        "message": message,
        "error": status.canonical_reason().unwrap_or("error").to_lowercase(),
        "reason": message,
    });
    (status, Json(body)).into_response()
}

async fn catalogue(caller: Caller, State(b): State<Arc<Broker>>) -> Json<Value> {
    let items: Vec<Value> = b
        .schema_catalogue(None)
        .into_iter()
        .filter(|s| s["vhost"].as_str().is_some_and(|v| caller.sees_vhost(v)))
        .collect();
    Json(Value::Array(items))
}

async fn vhost_catalogue(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.vhost(&vhost)?;
    Ok(Json(Value::Array(b.schema_catalogue(Some(&vhost)))))
}

#[derive(Debug, Deserialize)]
struct RegisterBody {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

async fn register(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, subject)): Path<(String, String)>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Response, ApiError> {
    caller.policymaker(&vhost)?;
    let kind = body.schema_type.as_deref().unwrap_or("AVRO");
    match b.register_schema(&vhost, &subject, kind, &body.schema, &caller.actor()) {
        Ok(r) => Ok(Json(json!({"id": r.id, "version": r.version})).into_response()),
        Err(SchemaError::Invalid(m)) => Ok(refusal(StatusCode::UNPROCESSABLE_ENTITY, 42201, m)),
        Err(SchemaError::Incompatible(m)) => Ok(refusal(StatusCode::CONFLICT, 409, m)),
        Err(SchemaError::Access(e)) => Err(e.into()),
    }
}

fn subject_of(
    caller: &Caller,
    b: &Broker,
    vhost: &str,
    subject: &str,
) -> Result<Arc<schema::Subject>, Box<Response>> {
    if let Err(e) = caller.vhost(vhost) {
        return Err(Box::new(e.into_response()));
    }
    b.schemas.subject(vhost, subject).ok_or_else(|| {
        Box::new(refusal(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        ))
    })
}

async fn versions(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, subject)): Path<(String, String)>,
) -> Response {
    match subject_of(&caller, &b, &vhost, &subject) {
        Ok(s) => Json(json!(
            s.versions.iter().map(|v| v.version).collect::<Vec<_>>()
        ))
        .into_response(),
        Err(r) => *r,
    }
}

async fn version(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, subject, version)): Path<(String, String, String)>,
) -> Response {
    let s = match subject_of(&caller, &b, &vhost, &subject) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let found = match version.as_str() {
        "latest" | "-1" => s.latest(),
        n => n.parse().ok().and_then(|n| s.version(n)),
    };
    match found {
        Some(v) => Json(json!({
            "subject": subject, "version": v.version, "id": v.id,
            "schemaType": v.kind.as_str(), "schema": v.text,
        }))
        .into_response(),
        None => refusal(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        ),
    }
}

async fn delete_subject(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, subject)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.policymaker(&vhost)?;
    let s = match subject_of(&caller, &b, &vhost, &subject) {
        Ok(s) => s,
        Err(r) => return Ok(*r),
    };
    b.clear_parameter(schema::COMPONENT, &vhost, &subject, &caller.actor())?;
    Ok(Json(json!(
        s.versions.iter().map(|v| v.version).collect::<Vec<_>>()
    ))
    .into_response())
}

async fn config(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, subject)): Path<(String, String)>,
) -> Response {
    match subject_of(&caller, &b, &vhost, &subject) {
        Ok(s) => Json(json!({"compatibilityLevel": s.level().as_str()})).into_response(),
        Err(r) => *r,
    }
}

#[derive(Debug, Deserialize)]
struct ConfigBody {
    compatibility: String,
}

async fn set_config(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, subject)): Path<(String, String)>,
    JsonBody(body): JsonBody<ConfigBody>,
) -> Result<Response, ApiError> {
    caller.policymaker(&vhost)?;
    let Some(level) = Level::parse(&body.compatibility) else {
        return Ok(refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("Invalid compatibility level '{}'", body.compatibility),
        ));
    };
    b.set_schema_compatibility(&vhost, &subject, level, &caller.actor())?;
    Ok(Json(json!({"compatibility": level.as_str()})).into_response())
}

async fn by_id(caller: Caller, State(b): State<Arc<Broker>>, Path(id): Path<String>) -> Response {
    let found = id
        .parse()
        .ok()
        .and_then(|id| b.schemas.by_id(id))
        .filter(|(vhost, _, _)| caller.sees_vhost(vhost));
    match found {
        Some((vhost, subject, v)) => Json(json!({
            "schema": v.text, "schemaType": v.kind.as_str(),
            "vhost": vhost, "subject": subject, "version": v.version,
        }))
        .into_response(),
        None => refusal(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        ),
    }
}
