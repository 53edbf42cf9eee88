//! Queues: ordered messages waiting for consumers.
//!
//! A [`Queue`] is shared state behind one short-held lock. Whoever changes it
//! — a publisher's connection enqueueing, a consumer's connection acking —
//! runs the queue's dispatch loop right there, so a message goes from the
//! publisher's socket to the consumer's output buffer without a task hop.
//! The queue never touches sockets or frames: it hands messages to a
//! [`DeliveryTarget`] (an AMQP channel), which encodes them.
//!
//! Messages the queue has delivered but that are not yet acknowledged are
//! owned by the consuming channel's ledger; the queue keeps only counts, and
//! takes messages back through [`Queue::requeue`], where they return to their
//! original position (ordered by sequence number) marked redelivered.
//!
//! # Lock ordering
//! queue state → channel ledger → connection outbox. Never take a queue lock
//! while holding a channel ledger or outbox lock.

mod consumer;
mod ready;

use std::sync::Arc;

use amq_protocol::types::{FieldTable, ShortString};
use parking_lot::Mutex;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;

pub use consumer::{Consumer, ConsumerId, DeliveryTarget};
use ready::ReadyList;

/// Identifies a connection, for exclusive queues.
pub type ConnectionId = u64;

/// A message as one queue holds it.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    /// Position in this queue; requeued messages go back in `seq` order.
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
}

/// What a queue was declared with.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub name: ShortString,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub arguments: FieldTable,
}

#[derive(Debug)]
pub struct Queue {
    pub config: QueueConfig,
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: ReadyList,
    /// Delivered, not yet acknowledged (held in channel ledgers).
    unacked: u32,
    next_seq: u64,
    consumers: Vec<Consumer>,
    /// Round-robin position in `consumers`.
    cursor: usize,
    /// Auto-delete queues go when their last consumer goes, but only once
    /// they have had one.
    had_consumer: bool,
    deleted: bool,
}

/// Result of cancelling a consumer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cancelled {
    pub found: bool,
    /// The queue is auto-delete and just lost its last consumer.
    pub now_unused: bool,
}

impl Queue {
    pub fn new(config: QueueConfig) -> Arc<Queue> {
        Arc::new(Queue {
            config,
            state: Mutex::new(QueueState::default()),
        })
    }

    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    /// Whether `connection` may use this queue (exclusive queues belong to
    /// the connection that declared them).
    pub fn accessible_by(&self, connection: ConnectionId) -> bool {
        self.config
            .exclusive_owner
            .is_none_or(|owner| owner == connection)
    }

    pub fn check_access(&self, connection: ConnectionId) -> AmqpResult<()> {
        if self.accessible_by(connection) {
            Ok(())
        } else {
            Err(self.locked_error())
        }
    }

    /// 405 RESOURCE_LOCKED, in RabbitMQ's words.
    pub fn locked_error(&self) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be \
             originally declared on another connection or the exclusive property value does not \
             match that of the original declaration.",
            self.name(),
            self.config.vhost
        ))
    }

    /// Messages ready for delivery (what `queue.declare-ok` reports).
    pub fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    /// Ready and unacknowledged message counts.
    pub fn counts(&self) -> (u32, u32) {
        let st = self.state.lock();
        (st.ready.len() as u32, st.unacked)
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Enqueue a routed message and deliver what can be delivered. Returns
    /// false if the queue was deleted meanwhile.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> bool {
        let mut st = self.state.lock();
        if st.deleted {
            return false;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.ready.push_back(QueuedMessage {
            seq,
            message,
            redelivered: false,
        });
        self.dispatch_locked(&mut st);
        true
    }

    /// Register a consumer. `announce` runs under the queue lock after the
    /// consumer is added and before anything is delivered to it, so the
    /// `basic.consume-ok` it writes always precedes the first delivery.
    pub fn consume(
        self: &Arc<Self>,
        consumer: Consumer,
        announce: impl FnOnce(),
    ) -> AmqpResult<()> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                self.name(),
                self.config.vhost
            )));
        }
        if st.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !st.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name(),
                self.config.vhost
            )));
        }
        st.consumers.push(consumer);
        st.had_consumer = true;
        announce();
        self.dispatch_locked(&mut st);
        Ok(())
    }

    pub fn cancel(self: &Arc<Self>, id: ConsumerId) -> Cancelled {
        let mut st = self.state.lock();
        let Some(pos) = st.consumers.iter().position(|c| c.id == id) else {
            return Cancelled::default();
        };
        st.consumers.remove(pos);
        if st.cursor > pos {
            st.cursor -= 1;
        }
        Cancelled {
            found: true,
            now_unused: self.config.auto_delete && st.had_consumer && st.consumers.is_empty(),
        }
    }

    /// Whether an auto-delete queue has lost all its consumers; checked again
    /// by the vhost under its own lock before deleting.
    pub fn is_unused_auto_delete(&self) -> bool {
        let st = self.state.lock();
        self.config.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted
    }

    /// Acknowledge delivered messages: they leave the queue for good.
    pub fn ack(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        let mut st = self.state.lock();
        st.settle(consumer, messages.len() as u32);
        self.dispatch_locked(&mut st);
    }

    /// Reject delivered messages without requeueing: they are dropped.
    pub fn discard(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        self.ack(consumer, messages)
    }

    /// Put delivered messages back at their original positions, marked
    /// redelivered.
    pub fn requeue(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        let mut st = self.state.lock();
        st.settle(consumer, messages.len() as u32);
        if st.deleted {
            return;
        }
        for mut m in messages {
            m.redelivered = true;
            st.ready.insert_ordered(m);
        }
        self.dispatch_locked(&mut st);
    }

    /// `basic.get`: take the head message. `deliver` runs under the queue lock
    /// with the message and the number of messages left.
    pub fn get(self: &Arc<Self>, no_ack: bool, deliver: impl FnOnce(QueuedMessage, u32)) -> bool {
        let mut st = self.state.lock();
        match st.ready.pop_front() {
            Some(m) => {
                if !no_ack {
                    st.unacked += 1;
                }
                let left = st.ready.len() as u32;
                deliver(m, left);
                true
            }
            None => false,
        }
    }

    /// Drop every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.state.lock();
        st.ready.clear() as u32
    }

    /// Mark the queue deleted, cancel its consumers (telling their clients)
    /// and drop its messages. Returns the number of ready messages dropped.
    /// The vhost removes it from its index and bindings.
    pub fn delete(self: &Arc<Self>, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        let mut st = self.state.lock();
        if if_empty && !st.ready.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{}' in vhost '{}' not empty",
                self.name(),
                self.config.vhost
            )));
        }
        if if_unused && !st.consumers.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{}' in vhost '{}' in use",
                self.name(),
                self.config.vhost
            )));
        }
        st.deleted = true;
        for c in std::mem::take(&mut st.consumers) {
            c.channel.cancelled(self, &c);
        }
        Ok(st.ready.clear() as u32)
    }

    /// Deliver as much as consumers can take. Channels call this when they
    /// regain capacity (acks, flow, a drained connection).
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let n = st.consumers.len();
            let Some(idx) = (0..n)
                .map(|i| (st.cursor + i) % n)
                .find(|&i| st.consumers[i].can_take(self))
            else {
                return;
            };
            let Some(message) = st.ready.pop_front() else {
                return;
            };
            st.cursor = (idx + 1) % n;
            let consumer = &mut st.consumers[idx];
            if !consumer.no_ack {
                consumer.unacked += 1;
            }
            let counted = !consumer.no_ack;
            consumer.channel.deliver(self, consumer, message);
            if counted {
                st.unacked += 1;
            }
        }
    }
}

impl QueueState {
    fn settle(&mut self, consumer: Option<ConsumerId>, n: u32) {
        self.unacked = self.unacked.saturating_sub(n);
        if let Some(id) = consumer
            && let Some(c) = self.consumers.iter_mut().find(|c| c.id == id)
        {
            c.unacked = c.unacked.saturating_sub(n);
        }
    }
}
