//! Erasure by header over HTTP: `POST /api/erasures/{vhost}` with
//! `{"header": "x-subject-id", "value": "1234"}` removes every message of
//! the vhost whose header equals the value, from every queue and stream,
//! and answers once that is durable, with how many went from where.
//! Administrators only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use super::auth::Caller;
use super::body::JsonBody;
use crate::broker::Broker;
use crate::broker::erasure::{Erasure, ErasureError};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/api/erasures/{vhost}", post(erase))
}

#[derive(Debug, Deserialize)]
struct EraseBody {
    header: String,
    /// A string, a number or a boolean; compared with the header as text.
    value: Value,
}

async fn erase(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    JsonBody(body): JsonBody<EraseBody>,
) -> Result<Json<Erasure>, ApiError> {
    caller.admin()?;
    let value = match body.value {
        Value::String(s) => s,
        v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "value must be a string, a number or a boolean".into(),
            ));
        }
    };
    let actor = caller.actor();
    let broker = b.clone();
    let done = tokio::task::spawn_blocking(move || {
        broker.erase_by_header(&vhost, &body.header, &value, &actor)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the erasure did not finish: {e}")))?;
    let report = match done {
        Ok(report) => report,
        Err(ErasureError::Access(e)) => return Err(e.into()),
        Err(e @ ErasureError::NoHeader) => return Err(ApiError::BadRequest(e.to_string())),
        Err(e @ ErasureError::Store { .. }) => return Err(ApiError::Internal(e.to_string())),
    };
    // Removed records are gone for good once the store has synced.
    super::durable(&b, crate::broker::vhost::Durability::Durable).await?;
    Ok(Json(report))
}
