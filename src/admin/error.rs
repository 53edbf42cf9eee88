//! API errors in the management API's shape: `{"error": ..., "reason": ...}`
//! with RabbitMQ's status codes and words, and how broker errors map onto
//! them. RabbitMQ spells a failed login `not_authorized` and every other
//! refusal `not_authorised`; both are kept.

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
    /// Wrong credentials: 401 `not_authorized` with the Basic challenge.
    LoginFailed,
    /// Refused for a missing tag, or for this vhost or object: 401
    /// `not_authorised`, no challenge.
    NotAuthorised(String),
    /// 404 `Object Not Found` for an object looked up by its path
    /// (RabbitMQ's reason is "Not Found" unless the broker said more).
    NotFound(Option<String>),
    /// 404 `not_found`: what an operation needed is missing (a vhost to
    /// declare in, a queue to bind).
    Missing(String),
    BadRequest(String),
    /// Bad `page`/`page_size`.
    Pagination(String),
    /// A page past the last.
    PageOutOfRange(String),
    /// The broker could not do it (e.g. the store failed).
    Internal(String),
}

impl ApiError {
    pub fn not_found() -> ApiError {
        ApiError::NotFound(None)
    }
}

fn challenge(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, reason) = match self {
            ApiError::Unauthenticated => {
                return challenge(StatusCode::UNAUTHORIZED.into_response());
            }
            ApiError::LoginFailed => {
                let body = json!({"error": "not_authorized", "reason": "Login failed"});
                return challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response());
            }
            ApiError::NotAuthorised(reason) => (StatusCode::UNAUTHORIZED, "not_authorised", reason),
            ApiError::NotFound(reason) => (
                StatusCode::NOT_FOUND,
                "Object Not Found",
                reason.unwrap_or_else(|| "Not Found".into()),
            ),
            ApiError::Missing(reason) => (StatusCode::NOT_FOUND, "not_found", reason),
            ApiError::BadRequest(reason) => (StatusCode::BAD_REQUEST, "bad_request", reason),
            ApiError::Pagination(reason) => (
                StatusCode::BAD_REQUEST,
                "invalid_pagination_parameters",
                reason,
            ),
            ApiError::PageOutOfRange(reason) => {
                (StatusCode::BAD_REQUEST, "page_out_of_range", reason)
            }
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
/// the channel exception behind an HTTP call: 404 `not_found` for
/// NOT_FOUND, 401 "Access refused." for ACCESS_REFUSED, 400 for the rest,
/// each with the AMQP text (without its `CODE_NAME - ` prefix).
impl From<AmqpError> for ApiError {
    fn from(e: AmqpError) -> ApiError {
        match e.code.code() {
            404 => ApiError::Missing(e.detail),
            403 => ApiError::NotAuthorised("Access refused.".into()),
            541 => ApiError::Internal(e.detail),
            _ => ApiError::BadRequest(e.detail),
        }
    }
}

/// The router's answer to a path it does not know: RabbitMQ's 404 body.
/// Marked with [`NoRoute`] so tests can tell it from a route's own 404.
pub async fn no_route() -> Response {
    let mut r = ApiError::not_found().into_response();
    r.extensions_mut().insert(NoRoute);
    r
}

/// Set on the response to a path no route serves.
#[derive(Clone, Copy, Debug)]
pub struct NoRoute;
