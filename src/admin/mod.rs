//! The HTTP side: RabbitMQ management API paths on the admin port, and the
//! Prometheus endpoint on the metrics port.
//!
//! Routers are built apart from serving (`router`, `metrics_router`) so
//! tests can drive them directly; `serve` runs one on a bound listener until
//! shutdown.

mod auth;
mod error;
mod health;
mod prometheus;

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

pub use error::ApiError;

/// The management API (`/api/...`).
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new().merge(health::routes()).with_state(broker)
}

/// The Prometheus endpoint (`/metrics`).
pub fn metrics_router(broker: Arc<Broker>) -> Router {
    prometheus::routes().with_state(broker)
}

/// Serve `router` on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("HTTP listener failed: {e}");
    }
}
