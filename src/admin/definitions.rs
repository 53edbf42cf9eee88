//! `/api/definitions` and `/api/definitions/{vhost}`: export and import
//! in RabbitMQ's definitions format. An import is all or nothing: a bad
//! document is refused with the first fault's location and changes
//! nothing. Administrators only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use super::auth::Caller;
use super::listing::json_response;
use crate::broker::Broker;
use crate::broker::definitions::{DefinitionsError, DefinitionsErrorKind};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route("/api/definitions/", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

#[derive(Debug, Default, Deserialize)]
struct ExportQuery {
    /// RabbitMQ's UI asks for a file to save.
    download: Option<String>,
}

fn exported(defs: Value, q: ExportQuery) -> Response {
    let mut r = json_response(&defs);
    if let Some(name) = q.download.filter(|n| !n.is_empty())
        && let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            name.replace('"', "")
        ))
    {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn export_all(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    Ok(exported(b.export_definitions(None), q))
}

async fn export_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    if b.vhost(&vhost).is_none() {
        return Err(ApiError::BadRequest("vhost_not_found".into()));
    }
    Ok(exported(b.export_definitions(Some(&vhost)), q))
}

impl From<DefinitionsError> for ApiError {
    fn from(e: DefinitionsError) -> ApiError {
        match e.kind {
            DefinitionsErrorKind::NotFound => ApiError::NotFound(Some(e.to_string())),
            DefinitionsErrorKind::Internal => ApiError::Internal(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

async fn import(
    caller: Caller,
    b: Arc<Broker>,
    vhost: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.admin()?;
    if let Some(v) = &vhost
        && b.vhost(v).is_none()
    {
        return Err(ApiError::Missing("vhost_not_found".into()));
    }
    let defs: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("failed_to_parse_json".into()))?;
    let actor = caller.actor();
    // An import writes and flushes definitions: blocking work.
    tokio::task::spawn_blocking(move || b.import_definitions(&defs, vhost.as_deref(), &actor))
        .await
        .map_err(|e| ApiError::Internal(format!("the import failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn import_all(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    import(caller, b, None, body).await
}

async fn import_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    import(caller, b, Some(vhost), body).await
}
