//! Delayed messages, the broker's part: each delayed-message exchange gets
//! a [`DelayBuffer`] under a store uid of its own (kept in the exchange's
//! record, so a durable one finds its messages after a restart), and one
//! timer task routes what comes due, as the exchange's `x-delayed-type`
//! would, with `x-delay` turned negative (the plugin's way of saying "was
//! delayed, do not delay again").

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::enqueue::{Routed, enqueue};
use super::{Broker, VHost};
use crate::exchange::delayed::{self, DelayBuffer, OnUnroutable};
use crate::exchange::{Exchange, ExchangeKind, RouteHeaders};
use crate::message::Message;
use crate::queue::now_ms;

/// The timer looks at least this often (a clock that jumps, a missed wake).
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl VHost {
    /// Give a delayed-message exchange its buffer: under `uid` if it was
    /// stored with one (a restored exchange: its messages are counted in
    /// the background, start-up does not wait), else under a fresh one.
    pub(super) fn attach_delay_buffer(&self, exchange: &Arc<Exchange>, restored: Option<u64>) {
        if exchange.kind != ExchangeKind::DelayedMessage {
            return;
        }
        let store = self.env.store.clone();
        let buffer = match restored {
            Some(uid) => {
                let buffer = Arc::new(DelayBuffer::recovered(uid, store));
                let counted = buffer.clone();
                let spawned = std::thread::Builder::new()
                    .name("delayed-count".into())
                    .spawn(move || counted.count_recovered());
                if let Err(e) = spawned {
                    tracing::error!("cannot count delayed messages: {e}");
                }
                buffer
            }
            None => Arc::new(DelayBuffer::new(
                store.new_queue_uid(),
                exchange.durable,
                store,
            )),
        };
        let _ = exchange.delayed.set(buffer);
        self.delayed_exchanges.lock().push(Arc::downgrade(exchange));
    }

    /// Route every held message that is due; the next due time over this
    /// vhost's delayed-message exchanges.
    fn route_due(&self, now: u64) -> Option<u64> {
        let exchanges: Vec<Arc<Exchange>> = {
            let mut registered = self.delayed_exchanges.lock();
            registered.retain(|e| e.upgrade().is_some_and(|e| !e.is_deleted()));
            registered
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .filter(|e| e.delayed.get().is_some_and(|d| !d.is_empty()))
                .collect()
        };
        let mut next: Option<u64> = None;
        let mut routed = Vec::new();
        for exchange in exchanges {
            let Some(buffer) = exchange.delayed.get() else {
                continue;
            };
            for due in buffer.take_due(now) {
                let m = delayed::swap_delay_header(&due.message, due.delay_ms, now);
                let headers = RouteHeaders::of_properties(&m.properties);
                routed.clear();
                self.route(&exchange, m.routing_key.as_str(), &headers, &mut routed);
                // Nobody to hold back: the publisher is long gone.
                let outcome = enqueue(&m, &mut routed, &mut Vec::new());
                if outcome == Routed::Unroutable
                    && let Some(give_back) = due.unroutable
                {
                    give_back(&m);
                }
            }
            if let Some(at) = buffer.next_due() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }
}

impl Broker {
    /// Hold a message published to a delayed-message exchange with an
    /// `x-delay` to wait: `Some` of what a publisher is told (stored: a
    /// durable entry, confirmed once written), `None` to route it now.
    /// The headers are decoded only for such an exchange.
    pub fn hold_delayed(
        &self,
        exchange: &Exchange,
        message: &Arc<Message>,
        headers: &RouteHeaders<'_>,
        now_ms: u64,
        unroutable: impl FnOnce() -> Option<OnUnroutable>,
    ) -> Option<Routed> {
        let buffer = exchange.delayed.get()?;
        let delay_ms = delayed::delay_of(headers.get())?;
        let (durable, earliest) = buffer.add(message.clone(), delay_ms, now_ms, unroutable());
        if earliest {
            self.delayed_wake.notify_one();
        }
        Some(if durable {
            Routed::Stored
        } else {
            Routed::InMemory
        })
    }

    /// Route what is due in every vhost; the next due time.
    fn route_due(&self) -> Option<u64> {
        let now = now_ms();
        self.vhosts().iter().filter_map(|v| v.route_due(now)).min()
    }
}

/// Route delayed messages at their time: sleep until the earliest is due
/// (or a publish brings an earlier one, or a second passes), then route
/// everything due. Never early: a message is routed once the clock has
/// reached its due millisecond.
pub async fn route_delayed(broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        let b = broker.clone();
        // Reads the store when a buffer pages: off the runtime's workers.
        let next = tokio::task::spawn_blocking(move || b.route_due())
            .await
            .ok()
            .flatten();
        let wait = match next {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())).min(LOOK_EVERY),
            None => LOOK_EVERY,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = broker.delayed_wake.notified() => {}
        }
    }
}
