//! The broker's statistics for operators: the sampler that works out rates
//! every few seconds (RabbitMQ's `collect_statistics_interval`), the
//! broker-wide figures the overview shows, and the listeners the server
//! bound.
//!
//! Objects count events themselves (queues, exchanges, channels,
//! connections: `metrics::rates`); the sampler only looks at each of them
//! once per interval, so reading a rate never costs more than reading a
//! number, and the message path never reads a clock for statistics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::metrics::MessageEvent;
use crate::metrics::rates::Rates;

/// How often rates are worked out.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The overview's `message_stats`: RabbitMQ's name and the broker-wide
/// counter behind it (`deliver_get` is the sum of the four deliveries).
pub const OVERVIEW_MESSAGES: [(&str, MessageEvent); 11] = [
    ("publish", MessageEvent::Received),
    ("confirm", MessageEvent::Confirmed),
    ("deliver", MessageEvent::DeliveredConsumeManualAck),
    ("deliver_no_ack", MessageEvent::DeliveredConsumeAutoAck),
    ("get", MessageEvent::DeliveredGetManualAck),
    ("get_no_ack", MessageEvent::DeliveredGetAutoAck),
    ("get_empty", MessageEvent::GetEmpty),
    ("redeliver", MessageEvent::Redelivered),
    ("ack", MessageEvent::Acknowledged),
    ("drop_unroutable", MessageEvent::UnroutableDropped),
    ("return_unroutable", MessageEvent::UnroutableReturned),
];

/// Broker-wide rates the sampler keeps.
#[derive(Debug, Default)]
pub struct OverviewStats {
    /// Of [`OVERVIEW_MESSAGES`], in order.
    pub messages: Rates<11>,
    /// Of `messages`, `messages_ready`, `messages_unacknowledged` over all
    /// queues.
    pub queue_totals: Rates<3>,
}

/// A listener the server bound, for the overview and health checks.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    /// RabbitMQ's protocol name: `amqp`, `amqp/ssl`, `http`,
    /// `http/prometheus`.
    pub protocol: &'static str,
    pub address: SocketAddr,
}

impl Broker {
    pub fn add_listener(&self, protocol: &'static str, address: SocketAddr) {
        self.listeners
            .lock()
            .push(ListenerInfo { protocol, address });
    }

    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners.lock().clone()
    }

    /// Look at every object once: rates, idleness, totals.
    pub fn sample_stats(&self, now: Instant) {
        let wall = SystemTime::now();
        let mut totals = [0u64; 3];
        for v in self.vhosts() {
            for q in v.queues() {
                let (ready, unacked) = q.depth();
                let depth = [ready + unacked, ready, unacked];
                q.stats.sample(now, wall, depth);
                for (t, d) in totals.iter_mut().zip(depth) {
                    *t += d;
                }
            }
            for x in v.exchanges() {
                x.stats.sample(now);
            }
        }
        for c in self.connections() {
            c.probe.sample(now);
        }
        self.metrics.churn.counts.sample(now);
        // Streams' retention by age runs here too, so an idle stream
        // shrinks without waiting for a segment to roll.
        self.store.retain_logs();
        let messages = OVERVIEW_MESSAGES.map(|(_, e)| self.metrics.total(e));
        self.overview.messages.observe(now, messages);
        self.overview.queue_totals.observe(now, totals);
    }
}

/// Sample every [`SAMPLE_EVERY`] until `shutdown`. The first look is at
/// once, so totals are there from the start.
pub async fn sample_stats(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let b = broker.clone();
        // Locks every queue briefly: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || b.sample_stats(Instant::now())).await;
    }
}
