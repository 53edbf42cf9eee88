//! `GET /metrics`: the broker's counters, plus process figures sampled at
//! scrape time.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::broker::Broker;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let m = &broker.metrics;
    let queues: usize = broker.vhosts().iter().map(|v| v.queue_count()).sum();
    m.queues.set(queues as f64);
    if let Some(rss) = super::process::resident_memory_bytes() {
        m.gauge("rabbitmq_process_resident_memory_bytes")
            .set(rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        m.gauge("rabbitmq_process_open_fds").set(fds.count() as f64);
    }
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        m.gauge("rabbitmq_process_max_fds").set(soft as f64);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        m.render(),
    )
}
