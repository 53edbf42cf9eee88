//! The HTTP side: RabbitMQ management API paths on the admin port, and the
//! Prometheus endpoint on the metrics port.
//!
//! Routers are built apart from serving (`router`, `metrics_router`) so
//! tests can drive them directly; `serve` runs one on a bound listener until
//! shutdown.

mod auth;
mod bindings;
mod body;
mod connections;
mod definitions;
mod erasure;
mod error;
mod exchanges;
mod format;
mod health;
mod limits;
mod links;
mod listing;
mod message_json;
mod openapi;
mod overview;
mod parameters;
mod permissions;
mod policies;
mod process;
mod prometheus;
mod queue_control;
mod queue_messages;
mod queues;
mod schemas;
mod ui;
mod users;
mod vhosts;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;

use amq_protocol::types::ShortString;

use crate::broker::Broker;
use crate::broker::vhost::Durability;

pub use error::{ApiError, NoRoute};

/// The management API (`/api/...`).
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(overview::routes())
        .merge(users::routes())
        .merge(vhosts::routes())
        .merge(policies::routes())
        .merge(parameters::routes())
        .merge(links::routes())
        .merge(schemas::routes())
        .merge(erasure::routes())
        .merge(definitions::routes())
        .merge(permissions::routes())
        .merge(limits::routes())
        .merge(queues::routes())
        .merge(queue_messages::routes())
        .merge(queue_control::routes())
        .merge(exchanges::routes())
        .merge(bindings::routes())
        .merge(connections::routes())
        .merge(ui::routes())
        .merge(openapi::routes())
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(body::MAX_BODY))
        .with_state(broker)
}

/// Wait until a change the broker made durable is on disk, as an AMQP
/// client's `declare-ok` waits.
async fn durable(broker: &Broker, durability: Durability) -> Result<(), ApiError> {
    if durability == Durability::Durable {
        broker
            .store
            .synced()
            .await
            .map_err(|_| ApiError::Internal("the store stopped".into()))?
            .map_err(|e| ApiError::Internal(format!("cannot write definitions: {e}")))?;
    }
    Ok(())
}

/// A name from a URL or a body as AMQP carries it: at most 255 bytes.
fn short_name(name: &str, what: &str) -> Result<ShortString, ApiError> {
    ShortString::try_new(name).map_err(|_| {
        ApiError::BadRequest(format!(
            "{what} '{}…' is longer than 255 bytes",
            name.chars().take(40).collect::<String>()
        ))
    })
}

/// RabbitMQ answers a PUT with 201 when it created the object and 204
/// when it already existed.
fn created_or_updated(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

/// The Prometheus endpoint (`/metrics`).
pub fn metrics_router(broker: Arc<Broker>) -> Router {
    prometheus::routes()
        .fallback(error::no_route)
        .with_state(broker)
}

/// Serve `router` on `listener` (plain TCP, or TLS streams from
/// [`crate::tls::http::TlsListener`]) until `shutdown` fires.
pub async fn serve<L>(listener: L, router: Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    use axum::serve::ListenerExt;
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // `tap_io` gives any listener whose address is a SocketAddr axum's
    // `ConnectInfo<SocketAddr>` (the handlers read the peer from it).
    let result = axum::serve(listener.tap_io(|_| {}), service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("HTTP listener failed: {e}");
    }
}
