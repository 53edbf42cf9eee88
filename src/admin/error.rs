//! API errors in the management API's shape: `{"error": ..., "reason": ...}`
//! with RabbitMQ's status codes, and how broker errors map onto them.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::AccessError;
use crate::error::AmqpError;

#[derive(Debug)]
pub enum ApiError {
    /// No credentials: 401 with a Basic challenge and an empty body.
    Unauthenticated,
    /// Wrong credentials or missing tag: 401 with a reason.
    NotAuthorized(&'static str),
    /// Refused for this vhost or object: 401 `not_authorised`.
    NotAuthorised(String),
    /// 404 `Object Not Found` (RabbitMQ's reason is "Not Found" unless the
    /// broker said more).
    NotFound(Option<String>),
    BadRequest(String),
    /// Bad `page`/`page_size`.
    Pagination(String),
    /// The broker could not do it (e.g. the store failed).
    Internal(String),
}

impl ApiError {
    pub fn not_found() -> ApiError {
        ApiError::NotFound(None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, reason) = match self {
            ApiError::Unauthenticated => {
                let mut r = StatusCode::UNAUTHORIZED.into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
                );
                return r;
            }
            ApiError::NotAuthorized(reason) => (
                StatusCode::UNAUTHORIZED,
                "not_authorized",
                reason.to_string(),
            ),
            ApiError::NotAuthorised(reason) => (StatusCode::UNAUTHORIZED, "not_authorised", reason),
            ApiError::NotFound(reason) => (
                StatusCode::NOT_FOUND,
                "Object Not Found",
                reason.unwrap_or_else(|| "Not Found".into()),
            ),
            ApiError::BadRequest(reason) => (StatusCode::BAD_REQUEST, "bad_request", reason),
            ApiError::Pagination(reason) => (
                StatusCode::BAD_REQUEST,
                "invalid_pagination_parameters",
                reason,
            ),
            ApiError::Internal(reason) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                reason,
            ),
        };
        (status, Json(json!({"error": error, "reason": reason}))).into_response()
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> ApiError {
        match e {
            AccessError::NotFound(_) => ApiError::not_found(),
            AccessError::Invalid(reason) => ApiError::BadRequest(reason),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// An AMQP error from the broker, as RabbitMQ's management plugin reports
/// the channel exception behind an HTTP call: 404 for NOT_FOUND, 401 for
/// ACCESS_REFUSED, 400 for the rest, each with the AMQP text (without its
/// `CODE_NAME - ` prefix).
impl From<AmqpError> for ApiError {
    fn from(e: AmqpError) -> ApiError {
        match e.code.code() {
            404 => ApiError::NotFound(Some(e.detail)),
            403 => ApiError::NotAuthorised(e.detail),
            541 => ApiError::Internal(e.detail),
            _ => ApiError::BadRequest(e.detail),
        }
    }
}
