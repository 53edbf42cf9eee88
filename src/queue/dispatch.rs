//! Handing messages to consumers: the shell's side of delivery.
//!
//! The core decides who gets which message; this module asks each
//! consumer's channel whether it can take one now and gives it the message,
//! under the queue's lock, so a consumer sees its queue's messages in order.
//! When the head of a long queue must first be read from the store, it has
//! `paging` read it and carries on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::consumer::Consumer;
use super::paging::Paged;
use super::state::{Next, Now};
use super::{ConnectionId, Locked, Queue, QueuedMessage};

/// The channel side of a consumer: where a queue hands its messages.
///
/// Implemented by the AMQP channel. Every method is called with the queue's
/// lock held, so implementations must not call back into a queue.
pub trait DeliveryTarget: Send + Sync + std::fmt::Debug {
    /// Whether the channel can take another delivery for `consumer` now. A
    /// channel that says no because its connection is congested remembers
    /// `queue` and calls [`Queue::dispatch`] once it has drained.
    fn ready(&self, queue: &Arc<Queue>, consumer: &Consumer) -> bool;

    /// Hand over one message for `consumer`.
    fn deliver(&self, queue: &Arc<Queue>, consumer: &Consumer, message: QueuedMessage);

    /// The queue is gone; the consumer no longer exists and its client must
    /// be told (`basic.cancel` from the server).
    fn cancelled(&self, queue: &Arc<Queue>, consumer: &Consumer);

    /// The connection and channel number the consumer belongs to, for
    /// operators.
    fn owner(&self) -> (ConnectionId, u16);
}

impl Queue {
    /// Deliver as much as consumers can take. Channels call this when they
    /// regain capacity (acks, flow, a drained connection).
    pub fn dispatch(self: &Arc<Self>) {
        if let Some(st) = &self.stream {
            return st.wake_all();
        }
        let clock = self.now();
        let mut st = self.lock();
        self.dispatch_locked(&mut st, &Now::new(&clock));
    }

    /// A first delivery: how long the message waited since it arrived.
    pub(super) fn record_latency(&self, message: &QueuedMessage, now: &Now) {
        let received = message.message.received_ms;
        if !message.redelivered && received != 0 {
            self.stats
                .latency
                .record(now.get().saturating_sub(received));
        }
    }

    /// Pause or resume deliveries to consumers (an operator's switch,
    /// Warren's: RabbitMQ has none). A paused queue takes messages in as
    /// usual and keeps them; `basic.get` finds it empty (the channel asks
    /// [`Queue::is_paused`]); the management API's get and move still
    /// work. Resuming delivers what waits.
    pub fn set_paused(self: &Arc<Self>, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            self.dispatch();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(super) fn dispatch_locked(self: &Arc<Self>, st: &mut Locked, now: &Now) {
        if self.is_paused() {
            return;
        }
        let mut may_page = true;
        loop {
            let next = st
                .core
                .dispatch_next(now, may_page, |c| c.channel.ready(self, c));
            match next {
                Next::Deliver { consumer, message } => {
                    if let Some(c) = st.core.consumer(consumer) {
                        self.stats
                            .count_delivery(true, c.no_ack, message.redelivered);
                        self.record_latency(&message, now);
                        c.channel.deliver(self, c, message);
                    }
                }
                // Busy: another thread is reading this queue's next page
                // and dispatches once it is in; meanwhile, memory only.
                Next::Page(request) => may_page = self.page_in(st, request, now) == Paged::Read,
                Next::Idle => return,
            }
        }
    }
}
