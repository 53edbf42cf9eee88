//! Enqueueing one routed message on every queue it reached — the step
//! shared by publishing and dead-lettering.

use std::sync::Arc;

use crate::message::Message;
use crate::queue::{Enqueued, Queue};

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

    /// A word for what happened, for spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Routed::Unroutable => "gone",
            Routed::InMemory => "enqueued",
            Routed::Stored => "stored",
            Routed::Rejected => "rejected",
            Routed::Failed => "failed",
        }
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

/// Enqueue `message` on every queue in `queues` (drained); the queues that
/// are holding their publishers back (flow control) are pushed onto
/// `in_flow`. Each durable queue keeps its own copy of a persistent message
/// in the store, as RabbitMQ embeds small messages in each queue's index.
pub fn enqueue(
    message: &Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    in_flow: &mut Vec<Arc<Queue>>,
) -> Routed {
    enqueue_each(message, queues, in_flow, |_, _| {})
}

/// [`enqueue`], telling `each` what each queue did (traced messages record
/// a span per queue).
pub fn enqueue_each(
    message: &Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    in_flow: &mut Vec<Arc<Queue>>,
    mut each: impl FnMut(&Queue, Routed),
) -> Routed {
    let mut outcome = Routed::Unroutable;
    for q in queues.drain(..) {
        let this = match q.publish(message.clone()) {
            Enqueued::Yes { stored, flow } => {
                if flow && !in_flow.iter().any(|f| Arc::ptr_eq(f, &q)) {
                    in_flow.push(q.clone());
                }
                if stored {
                    Routed::Stored
                } else {
                    Routed::InMemory
                }
            }
            Enqueued::Gone => Routed::Unroutable,
            Enqueued::Rejected => Routed::Rejected,
        };
        each(&q, this);
        outcome = outcome.and(this);
    }
    outcome
}
