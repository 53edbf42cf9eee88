//! Request bodies: JSON whatever the `content-type` says (curl sends
//! form-encoded by default; RabbitMQ reads the body as JSON anyway), an
//! empty body read as `{}` (`PUT /api/vhosts/x` with no body creates it),
//! and RabbitMQ's `400 not_json` for anything that is not JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::ApiError;

/// The largest body the API reads (a definitions file may be large).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parse a body as `T`: `not_json` if it is not JSON at all, the serde
/// error (what is wrong, and where) if it is JSON of the wrong shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|_| ApiError::BadRequest("not_json".into()))?;
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(e.to_string()))
}
