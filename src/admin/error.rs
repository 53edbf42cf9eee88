//! API errors in the management API's shape: `{"error": ..., "reason": ...}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    /// No credentials: 401 with a Basic challenge and an empty body.
    Unauthenticated,
    /// Wrong credentials or missing tag: 401 with a reason.
    NotAuthorized(&'static str),
    NotFound,
    BadRequest(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthenticated => {
                let mut r = StatusCode::UNAUTHORIZED.into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
                );
                r
            }
            ApiError::NotAuthorized(reason) => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "not_authorized", "reason": reason})),
            )
                .into_response(),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "Object Not Found", "reason": "Not Found"})),
            )
                .into_response(),
            ApiError::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad_request", "reason": reason})),
            )
                .into_response(),
        }
    }
}
