//! Enqueueing one routed message on every queue it reached — the step
//! shared by publishing and dead-lettering.

use std::sync::Arc;

use crate::message::Message;
use crate::queue::{Enqueued, Queue};
use crate::store::Store;

/// What routing and enqueueing did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// No queue took it.
    Unroutable,
    /// Enqueued, in memory only.
    InMemory,
    /// Enqueued, and written to the store for at least one durable queue.
    Stored,
    /// A full queue refused it (`reject-publish`): the publisher gets a
    /// nack.
    Rejected,
    /// A durable queue could not store it: the publisher gets a nack.
    Failed,
}

impl Routed {
    /// Whether a publisher in confirm mode gets a nack.
    pub fn is_refused(self) -> bool {
        matches!(self, Routed::Rejected | Routed::Failed)
    }

    /// Combine the outcome so far with one queue's: any refusal wins (the
    /// publisher is nacked if one queue refused), then storage.
    fn and(self, next: Routed) -> Routed {
        use Routed::*;
        match (self, next) {
            (Failed, _) | (_, Failed) => Failed,
            (Rejected, _) | (_, Rejected) => Rejected,
            (Stored, _) | (_, Stored) => Stored,
            (InMemory, _) | (_, InMemory) => InMemory,
            _ => Unroutable,
        }
    }
}

/// Enqueue `message` on every queue in `queues` (drained). A persistent
/// message bound for several durable queues has its body stored once,
/// shared by their entries.
pub fn enqueue(store: &Store, message: &Arc<Message>, queues: &mut Vec<Arc<Queue>>) -> Routed {
    let durable = queues.iter().filter(|q| q.would_persist(message)).count();
    let shared = if durable > 1 {
        match store.put_shared(message, durable as u32) {
            Ok(id) => Some(id),
            Err(_) => return Routed::Failed,
        }
    } else {
        None
    };
    let mut outcome = Routed::Unroutable;
    let mut unclaimed = durable;
    for q in queues.drain(..) {
        let persists = q.would_persist(message);
        let this = match q.publish(message.clone(), shared.filter(|_| persists)) {
            Enqueued::Yes { stored } => {
                if persists {
                    unclaimed -= 1;
                }
                if stored {
                    Routed::Stored
                } else {
                    Routed::InMemory
                }
            }
            Enqueued::Gone => Routed::Unroutable,
            Enqueued::Rejected => Routed::Rejected,
            Enqueued::StoreFailed => Routed::Failed,
        };
        outcome = outcome.and(this);
    }
    // Queues that did not take their reference to the body (deleted
    // meanwhile, or full) release it.
    if let Some(id) = shared {
        for _ in 0..unclaimed {
            let _ = store.release_shared(id);
        }
    }
    outcome
}
