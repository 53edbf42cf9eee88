//! Publishing from inside the broker — the management API's publish and
//! federation links: one message into one exchange, with what a channel's
//! publish does to it (deduplication, delay, routing, counting) but no
//! channel.

use std::sync::Arc;

use super::enqueue::{Routed, enqueue};
use super::{Broker, VHost};
use crate::exchange::{Exchange, RouteHeaders};
use crate::message::Message;
use crate::metrics::MessageEvent;

impl Broker {
    /// Publish `message` to `exchange` in `vhost`. A `Stored` outcome is
    /// durable once [`Store::synced`](crate::store::Store::synced) says so.
    pub fn publish_local(
        &self,
        vhost: &VHost,
        exchange: &Arc<Exchange>,
        message: &Arc<Message>,
        headers: &RouteHeaders<'_>,
    ) -> Routed {
        self.metrics.count(MessageEvent::Received, 1);
        self.metrics.message_size(message.body.len() as u64);
        if let Some(rule) = exchange.schema_rule()
            && !self.enforce_schema(
                &vhost.name,
                super::schemas::SchemaSite::Exchange(exchange.name.as_str()),
                &rule,
                message,
            )
        {
            exchange.stats.add(crate::exchange::PUBLISH_IN, 1);
            return Routed::Rejected;
        }
        let duplicate = exchange
            .dedup
            .as_ref()
            .is_some_and(|d| d.is_duplicate(message, message.received_ms));
        let held = if duplicate {
            Some(Routed::InMemory)
        } else {
            self.hold_delayed(exchange, message, headers, message.received_ms, || None)
        };
        let outcome = match held {
            Some(held) => held,
            None => {
                let mut queues = Vec::new();
                vhost.route(exchange, message.routing_key.as_str(), headers, &mut queues);
                enqueue(message, &mut queues, &mut Vec::new())
            }
        };
        exchange.stats.add(crate::exchange::PUBLISH_IN, 1);
        if outcome == Routed::Unroutable {
            self.metrics.count(MessageEvent::UnroutableDropped, 1);
        } else {
            exchange.stats.add(crate::exchange::PUBLISH_OUT, 1);
            self.metrics.count(MessageEvent::Routed, 1);
        }
        outcome
    }
}
