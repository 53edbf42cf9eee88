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
