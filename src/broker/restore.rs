//! Rebuilding a vhost from its stored definitions at boot: policies and
//! operator policies first (they shape the queues and exchanges made
//! next), then exchanges, queues and the bindings between them.
//!
//! Nothing here writes to the store: it only reads what `records` wrote.
//! A stored definition that no longer makes sense (an unknown exchange
//! type, queue arguments this build rejects, a binding with a missing end)
//! is skipped or softened with a warning rather than stopping the boot.

use std::collections::HashMap;
use std::sync::Arc;

use super::bindings::{Binding, DestinationName};
use super::policies::Policy;
use super::vhost::VHost;
use crate::exchange::{Destination, Exchange, ExchangeKind};
use crate::queue::args::{DeclareFlags, QueueArgs, QueueType};
use crate::queue::{Queue, QueueConfig};
use crate::store::Definitions;

impl VHost {
    /// Rebuild this vhost's durable exchanges, queues and bindings from the
    /// store at boot. `counts` are the stored-region sizes saved by a clean
    /// shutdown, by queue uid.
    pub fn restore(
        &self,
        defs: &Definitions,
        counts: &HashMap<u64, Vec<(u8, u64)>>,
    ) -> Vec<Arc<Queue>> {
        let mut topology = self.topology.lock();
        for p in defs.policies.iter().filter(|p| p.vhost == self.name) {
            match Policy::new(p.clone()) {
                Ok(policy) => self.policies.write().push(Arc::new(policy)),
                Err(e) => tracing::warn!(policy = %p.name, "skipping a stored policy: {e}"),
            }
        }
        for p in defs
            .operator_policies
            .iter()
            .filter(|p| p.vhost == self.name)
        {
            match Policy::operator(p.clone()) {
                Ok(policy) => self.operator_policies.write().push(Arc::new(policy)),
                Err(e) => {
                    tracing::warn!(policy = %p.name, "skipping a stored operator policy: {e}")
                }
            }
        }
        for e in defs.exchanges.iter().filter(|e| e.vhost == self.name) {
            let Some(kind) = ExchangeKind::parse(&e.kind) else {
                tracing::warn!(exchange = %e.name, "skipping stored exchange of unknown type {}", e.kind);
                continue;
            };
            let exchange = Exchange::new(
                e.name.as_str().into(),
                kind,
                true,
                e.auto_delete,
                e.internal,
                e.arguments.clone(),
            );
            let exchange = Arc::new(exchange);
            self.attach_delay_buffer(&exchange, e.delay_uid);
            self.apply_exchange_policy(&exchange);
            self.exchanges
                .write()
                .insert(e.name.as_str().into(), exchange);
        }
        let mut uncounted = Vec::new();
        for q in defs.queues.iter().filter(|q| q.vhost == self.name) {
            let flags = DeclareFlags {
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
            };
            let args = QueueArgs::parse(&q.name, &self.name, flags, &q.arguments)
                .unwrap_or_else(|e| {
                    tracing::warn!(queue = %q.name, "stored arguments no longer valid, ignoring them: {}", e.reply_text());
                    QueueArgs::default()
                });
            let config = QueueConfig {
                name: q.name.as_str().into(),
                vhost: self.name.clone(),
                durable: true,
                auto_delete: q.auto_delete,
                exclusive_owner: None,
                arguments: q.arguments.clone(),
                args,
                uid: q.uid,
            };
            let count = counts.get(&q.uid).map(Vec::as_slice);
            let winners = self.queue_policies(&q.name, config.args.queue_type);
            if config.args.queue_type == QueueType::Stream {
                match self.store().open_log(config.uid) {
                    Ok(log) => {
                        let q = Queue::new_stream(config, self.env.clone(), winners.applied(), log);
                        self.queues.write().restore(q);
                    }
                    Err(e) => tracing::error!(queue = %q.name, "cannot open the stream's log: {e}"),
                }
                continue;
            }
            let queue = Queue::recover(config, self.env.clone(), winners.applied(), count);
            if q.paused {
                queue.set_paused(true);
            }
            if count.is_none() {
                uncounted.push(queue.clone());
            }
            self.queues.write().restore(queue);
        }
        for b in defs.bindings.iter().filter(|b| b.vhost == self.name) {
            let Some(source) = self.exchange(&b.source) else {
                continue;
            };
            let (destination, name) = if b.destination_is_queue {
                let Some(q) = self.queues.read().get(b.destination.as_str()).cloned() else {
                    continue;
                };
                (
                    Destination::Queue(q),
                    DestinationName::Queue(b.destination.as_str().into()),
                )
            } else {
                let Some(e) = self.exchange(&b.destination) else {
                    continue;
                };
                (
                    Destination::Exchange(e),
                    DestinationName::Exchange(b.destination.as_str().into()),
                )
            };
            let binding = Binding {
                source: source.name.clone(),
                destination: name,
                routing_key: b.routing_key.as_str().into(),
                arguments: b.arguments.clone(),
            };
            if topology.insert(binding) {
                if let Destination::Queue(q) = &destination {
                    super::super_stream::note_partition(&source, q, &b.arguments);
                }
                source.bind(destination, &b.routing_key, &b.arguments);
            }
        }
        uncounted
    }
}
