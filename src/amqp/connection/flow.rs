//! Holding a connection back: flow control (a queue it publishes to cannot
//! keep up, or the store cannot) and resource alarms (`connection.blocked`).
//! While held back the connection reads nothing more from its socket, so
//! TCP pushes back on the client.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, connection};

use super::{Connection, Slot};
use crate::amqp::codec;
use crate::queue::Queue;
use crate::store::Store;

/// What flow control holds a connection back by.
pub(super) struct Holdback {
    queues: Vec<Arc<Queue>>,
    store: Option<Arc<Store>>,
}

impl Holdback {
    pub(super) fn holds(&self) -> bool {
        !self.queues.is_empty() || self.store.is_some()
    }
}

/// Resolves once nothing holds the connection back any more.
pub(super) async fn released(hold: Holdback) {
    for q in hold.queues {
        q.flow_released().await;
    }
    if let Some(store) = hold.store {
        store.backlog_released().await;
    }
}

impl Connection {
    /// What holds this connection back: the queues in flow it published to
    /// that it does not consume from itself (it would wait for its own
    /// acks), and the store if it is backlogged and this connection stored
    /// messages. Keeps the connection's flow state and the gauge in step.
    pub(super) fn held_back_by(&mut self) -> Holdback {
        let store = self.session.stored.get() && self.session.broker.store.is_backlogged();
        self.session.stored.set(store);
        let mut in_flow = self.session.in_flow.borrow_mut();
        in_flow.retain(|q| q.is_in_flow());
        if !in_flow.is_empty() {
            let channels = &self.channels;
            in_flow.retain(|q| {
                !channels.values().any(|slot| match slot {
                    Slot::Open(ch) => ch.consumes_from(q),
                    Slot::Closing => false,
                })
            });
        }
        let flowing = !in_flow.is_empty() || store;
        let metrics = &self.session.broker.metrics;
        if flowing != self.client.flow.swap(flowing, Ordering::Relaxed) {
            if flowing {
                metrics.connections_in_flow.increment(1.0);
                metrics.flow_pauses.increment(1);
            } else {
                metrics.connections_in_flow.decrement(1.0);
            }
        }
        Holdback {
            queues: in_flow.clone(),
            store: store.then(|| self.session.broker.store.clone()),
        }
    }

    pub(super) fn announce_blocked(&self, reason: Option<&str>) {
        if !self.blocked_capable {
            return;
        }
        let method = match reason {
            Some(reason) => connection::AMQPMethod::Blocked(connection::Blocked {
                reason: reason.into(),
            }),
            None => connection::AMQPMethod::Unblocked(connection::Unblocked {}),
        };
        self.session
            .outbox
            .send(|buf| codec::encode_method(buf, 0, &AMQPClass::Connection(method)));
    }
}
