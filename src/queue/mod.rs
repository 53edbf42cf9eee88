//! Queues: ordered messages waiting for consumers.
//!
//! A queue is two parts. [`state::QueueCore`] is its bookkeeping — ready
//! messages by priority, consumers and their credit, expiry and retry
//! deadlines, delivery counts, length limits — with no I/O at all: time is
//! passed in and everything that must happen comes back as a value. [`Queue`]
//! is the shell around it: one short-held lock, and the modules that carry
//! out what the core asks — `dispatch` hands messages to consumers'
//! channels, `settle` takes their acks and rejections, `paging` reads the
//! parts of long queues that live in the store, `persistence` writes and
//! removes store records and recovers queues at boot, and the broker-wide
//! timer ([`Deadlines`]) wakes queues when something is due.
//!
//! Whoever changes a queue — a publisher's connection enqueueing, a
//! consumer's connection acking, the timer expiring messages — runs its
//! dispatch right there, so a message goes from the publisher's socket to
//! the consumer's output buffer without a task hop. The queue never touches
//! sockets or frames: it hands messages to a [`DeliveryTarget`] (an AMQP
//! channel), which encodes them.
//!
//! Delivered messages not yet acknowledged are held by the consuming
//! channel's ledger; the queue counts them, and takes them back through
//! [`Queue::requeue`], where they return to their original position marked
//! redelivered — or wait out a retry delay first.
//!
//! Messages that die (rejected, expired, over a limit) are handed to the
//! queue's owner once the lock is released, to be dead-lettered
//! (`broker::dead_letter`).
//!
//! # Lock ordering
//! queue state → channel ledger → connection outbox. Never take a queue lock
//! while holding a channel ledger or outbox lock.

pub mod args;
mod consumer;
mod deadlines;
pub mod dedup;
mod dispatch;
mod env;
mod erase;
mod expiry;
mod flow;
mod locked;
#[cfg(test)]
mod model_test;
mod paging;
mod persistence;
mod queued;
#[cfg(test)]
mod race_test;
mod ready;
mod settle;
pub mod state;
mod stats;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use amq_protocol::types::{FieldTable, ShortString};
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use args::{QueueArgs, QueueSettings};
use locked::Locked;
use paging::Paged;
pub use state::StoredFrom;
use state::{Admit, ConsumeRefused, DeleteRefused, Got, Now, QueueCore};

pub use consumer::{Consumer, ConsumerId};
pub use deadlines::Deadlines;
pub use dispatch::DeliveryTarget;
pub use env::{Clock, MemoryBudget, QueueEnv, QueueLimits, QueueOwner};
pub use expiry::now_ms;
pub use queued::{QueuedMessage, Reason, Return};
pub use stats::{
    ConsumerView, LATENCY_BUCKETS_MS, LatencyHistogram, QUEUE_EVENTS, QueueEvent, QueueGauges,
    QueueStats, QueueView,
};

/// Identifies a connection, for exclusive queues.
pub type ConnectionId = u64;

/// What a queue was declared with.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub name: ShortString,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub arguments: FieldTable,
    /// The arguments, validated.
    pub args: QueueArgs,
    /// Prefix of this queue's keys in the store.
    pub uid: u64,
}

impl QueueConfig {
    /// Whether the queue's definition and persistent messages survive a
    /// restart: durable, and neither exclusive nor auto-delete (RabbitMQ's
    /// rules).
    pub fn survives_restart(&self) -> bool {
        self.durable && !self.auto_delete && self.exclusive_owner.is_none()
    }
}

#[derive(Debug)]
pub struct Queue {
    pub config: QueueConfig,
    env: Arc<QueueEnv>,
    state: Mutex<Shell>,
    /// Flow control is holding this queue's publishers back (see `flow`).
    in_flow: AtomicBool,
    flow_released: Notify,
    /// Signalled when a page read with the queue unlocked is in.
    page_done: Condvar,
    /// The settings' consumer timeout in ms (0: none), read on every
    /// delivery without the lock.
    consumer_timeout: AtomicU64,
    /// The schema its messages must match (from its settings), read
    /// without the queue's lock: a body is checked before it is taken.
    schema: crate::schema::Gate,
    /// An operator paused deliveries (see `dispatch`).
    paused: AtomicBool,
    /// Ids of messages seen, with `x-message-deduplication`.
    pub dedup: Option<dedup::DedupCache>,
    /// Counts and rates for operators.
    pub stats: QueueStats,
    /// A stream queue's log and consumers; the core then stays empty.
    pub stream: Option<Arc<stream::StreamQueue>>,
}

/// What the lock guards: the core, and what the shell remembers about it.
#[derive(Debug)]
struct Shell {
    core: QueueCore<Arc<dyn DeliveryTarget>>,
    /// The earliest time the broker's timer will wake this queue.
    armed: Option<u64>,
    /// The core's memory as last counted in the broker's budget.
    accounted: u64,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue, and in the store if it is persistent and the queue
    /// durable; `flow`: the queue is holding its publishers back.
    Yes { stored: bool, flow: bool },
    /// The queue was deleted meanwhile.
    Gone,
    /// The queue is full and refuses new messages (`reject-publish`).
    Rejected,
}

/// Result of cancelling a consumer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cancelled {
    pub found: bool,
    /// The queue is auto-delete and just lost its last consumer.
    pub now_unused: bool,
}

impl Drop for Queue {
    /// The queue's memory leaves the broker's budget with it.
    fn drop(&mut self) {
        let accounted = self.state.get_mut().accounted;
        self.env.budget.release(accounted);
    }
}

impl Queue {
    pub fn new(
        config: QueueConfig,
        env: Arc<QueueEnv>,
        policies: args::AppliedPolicies<'_>,
    ) -> Arc<Queue> {
        Queue::build(config, env, policies, None)
    }

    /// A stream queue over its (opened) log.
    pub fn new_stream(
        config: QueueConfig,
        env: Arc<QueueEnv>,
        policies: args::AppliedPolicies<'_>,
        log: Arc<crate::store::log::Log>,
    ) -> Arc<Queue> {
        let s = stream::StreamQueue::new(log, env.store.clone());
        s.set_retention(stream::retention(&config.args, &policies));
        Queue::build(config, env, policies, Some(Arc::new(s)))
    }

    fn build(
        config: QueueConfig,
        env: Arc<QueueEnv>,
        policies: args::AppliedPolicies<'_>,
        stream: Option<Arc<stream::StreamQueue>>,
    ) -> Arc<Queue> {
        let settings = QueueSettings::merge(&config.args, policies);
        let consumer_timeout = AtomicU64::new(settings.consumer_timeout.unwrap_or(0));
        let schema = crate::schema::Gate::new(settings.schema.clone());
        let dedup = config.args.dedup.clone().map(|args| {
            if config.survives_restart() && env.store.is_durable() {
                dedup::DedupCache::kept(args, env.store.clone(), config.uid, env.clock.now())
            } else {
                dedup::DedupCache::new(args)
            }
        });
        let core = QueueCore::new(&config.args, settings, env.page_batch, env.clock.now());
        let queue = Arc::new(Queue {
            config,
            env,
            state: Mutex::new(Shell {
                core,
                armed: None,
                accounted: 0,
            }),
            in_flow: AtomicBool::new(false),
            flow_released: Notify::new(),
            page_done: Condvar::new(),
            consumer_timeout,
            schema,
            paused: AtomicBool::new(false),
            dedup,
            stats: QueueStats::default(),
            stream,
        });
        // Arm x-expires from the start.
        drop(queue.lock());
        queue
    }

    fn lock(self: &Arc<Self>) -> Locked<'_> {
        Locked {
            queue: self,
            guard: Some(self.state.lock()),
            fair: false,
        }
    }

    /// A clock reading for one operation, taken only if it needs one.
    fn now(&self) -> impl Fn() -> u64 + '_ {
        || self.env.clock.now()
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

    /// `queue 'q' in vhost '/'`, as RabbitMQ names a queue in errors.
    pub fn described(&self) -> String {
        format!("queue '{}' in vhost '{}'", self.name(), self.config.vhost)
    }

    fn not_found(&self) -> AmqpError {
        AmqpError::not_found(format!(
            "no queue '{}' in vhost '{}'",
            self.name(),
            self.config.vhost
        ))
    }

    /// Messages ready for delivery (what `queue.declare-ok` reports).
    pub fn message_count(&self) -> u32 {
        if let Some(st) = &self.stream {
            return u32::try_from(st.len()).unwrap_or(u32::MAX);
        }
        self.state.lock().core.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        // RabbitMQ's stream declare-ok always says 0 consumers.
        if self.stream.is_some() {
            return 0;
        }
        self.state.lock().core.consumer_count() as u32
    }

    /// Ready and unacknowledged message counts.
    pub fn counts(&self) -> (u32, u32) {
        if let Some(st) = &self.stream {
            let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            return (n(st.len()), n(st.unacked()));
        }
        let st = self.state.lock();
        (st.core.len() as u32, st.core.unacked())
    }

    /// Messages waiting out a retry delay.
    pub fn delayed_count(&self) -> u32 {
        self.state.lock().core.delayed_count() as u32
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().core.is_deleted()
    }

    /// The schema its messages must match, if any.
    pub fn schema_rule(&self) -> Option<Arc<crate::schema::Rule>> {
        self.schema.rule()
    }

    /// The settings the queue runs with (arguments merged with its policy).
    pub fn settings(&self) -> QueueSettings {
        self.state.lock().core.settings().clone()
    }

    /// How long a delivery from this queue may stay unacknowledged, in ms,
    /// if the queue or its policy sets it.
    pub fn consumer_timeout(&self) -> Option<u64> {
        Some(self.consumer_timeout.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// A policy or operator policy was set or cleared: recompute the
    /// settings.
    pub fn apply_policy(self: &Arc<Self>, policies: args::AppliedPolicies<'_>) {
        if let Some(st) = &self.stream {
            st.set_retention(stream::retention(&self.config.args, &policies));
        }
        let mut st = self.lock();
        let settings = QueueSettings::merge(&self.config.args, policies);
        self.consumer_timeout
            .store(settings.consumer_timeout.unwrap_or(0), Ordering::Relaxed);
        self.schema.replace(settings.schema.clone());
        st.core.apply_settings(settings);
        let clock = self.now();
        let now = Now::new(&clock);
        self.enforce_limits(&mut st, &now);
        self.dispatch_locked(&mut st, &now);
    }

    /// The queue was declared again: it counts as used (`x-expires`).
    pub fn touch(self: &Arc<Self>) {
        let now = self.env.clock.now();
        self.lock().core.touch(now);
    }

    /// Enqueue a routed message and deliver what can be delivered. A
    /// persistent message for a durable queue is handed to the store first.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        if let Some(rule) = self.schema_rule()
            && let Some(owner) = self.env.owner()
            && !owner.admit_schema(self, &rule, &message)
        {
            return Enqueued::Rejected;
        }
        if let Some(st) = &self.stream {
            if self.is_deleted() {
                return Enqueued::Gone;
            }
            self.stats.count(QueueEvent::Publish, 1);
            st.publish(&message);
            return Enqueued::Yes {
                stored: true,
                flow: false,
            };
        }
        let clock = self.now();
        // The time its read batch arrived, already read: a message taken
        // by a waiting consumer costs no clock read.
        let now = Now::starting_at(self.env.clock.known(message.received_ms), &clock);
        let mut st = self.lock();
        // Checked and remembered under the queue's lock: two publishers of
        // one id cannot both get in.
        let seen = match &self.dedup {
            Some(d) => d.check(&message, now.get()),
            None => dedup::Seen::NoId,
        };
        if seen == dedup::Seen::Duplicate {
            // Dropped, and still confirmed: the publisher's retry is done.
            return Enqueued::Yes {
                stored: false,
                flow: false,
            };
        }
        let admitted = match st.core.admit(&message, &now) {
            Admit::Accepted(a) => a,
            Admit::Rejected => return Enqueued::Rejected,
            Admit::Gone => return Enqueued::Gone,
        };
        if let (Some(d), dedup::Seen::New(id)) = (&self.dedup, seen) {
            d.remember(id, now.get());
        }
        self.stats.count(QueueEvent::Publish, 1);
        let (stored, paged) = self.write(&st, admitted, &message);
        st.core.enqueue(admitted, message, stored, paged);
        self.dispatch_locked(&mut st, &now);
        if let Some((level, seq)) = st.core.now_or_never(admitted, &now) {
            self.take_stored(&mut st, level, seq);
        }
        self.enforce_limits(&mut st, &now);
        Enqueued::Yes {
            stored: stored != crate::store::Stored::No,
            flow: self.enter_flow(&st),
        }
    }

    /// Register a consumer. `announce` runs under the queue lock after the
    /// consumer is added and before anything is delivered to it, so the
    /// `basic.consume-ok` it writes always precedes the first delivery.
    pub fn consume(
        self: &Arc<Self>,
        consumer: Consumer,
        announce: impl FnOnce(),
    ) -> AmqpResult<()> {
        if let Some(st) = &self.stream {
            if self.is_deleted() {
                return Err(self.not_found());
            }
            return st.consume(self, consumer, announce);
        }
        let clock = self.now();
        let now = Now::new(&clock);
        let mut st = self.lock();
        match st.core.add_consumer(consumer, now.get()) {
            Ok(()) => {}
            Err(ConsumeRefused::Deleted) => return Err(self.not_found()),
            Err(ConsumeRefused::Exclusive) => {
                return Err(AmqpError::access_refused(format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.name(),
                    self.config.vhost
                )));
            }
        }
        announce();
        self.dispatch_locked(&mut st, &now);
        Ok(())
    }

    pub fn cancel(self: &Arc<Self>, id: ConsumerId) -> Cancelled {
        if let Some(st) = &self.stream {
            return Cancelled {
                found: st.cancel(id),
                now_unused: false,
            };
        }
        let clock = self.now();
        let now = Now::new(&clock);
        let mut st = self.lock();
        if st.core.cancel(id, now.get()).is_none() {
            return Cancelled::default();
        }
        // With a single active consumer, the next one may take over now.
        self.dispatch_locked(&mut st, &now);
        Cancelled {
            found: true,
            now_unused: self.config.auto_delete && st.core.lost_all_consumers(),
        }
    }

    /// Whether a consumer receives messages now (single active consumer:
    /// only one does).
    pub fn is_active_consumer(&self, id: ConsumerId) -> bool {
        self.state.lock().core.is_active_consumer(id)
    }

    /// Whether an auto-delete queue has lost all its consumers; checked again
    /// by the vhost under its own lock before deleting.
    pub fn is_unused_auto_delete(&self) -> bool {
        self.config.auto_delete && self.state.lock().core.lost_all_consumers()
    }

    /// Whether the queue has been unused for its `x-expires`; checked again
    /// by the vhost under its own lock before deleting.
    pub fn is_expired_unused(&self, now: u64) -> bool {
        let st = self.state.lock();
        !st.core.is_deleted() && st.core.expires_deadline().is_some_and(|at| now >= at)
    }

    /// `basic.get`: take the head message. `deliver` runs under the queue lock
    /// with the message and the number of messages left.
    pub fn get(self: &Arc<Self>, no_ack: bool, deliver: impl FnOnce(QueuedMessage, u32)) -> bool {
        let clock = self.now();
        let now = Now::new(&clock);
        let mut st = self.lock();
        let mut may_page = true;
        loop {
            match st.core.get(&now, no_ack, may_page) {
                Got::Message { message, left } => {
                    self.stats
                        .count_delivery(false, no_ack, message.redelivered);
                    self.record_latency(&message, &now);
                    deliver(message, left);
                    return true;
                }
                Got::Page(request) => match self.page_in(&mut st, request, &now) {
                    Paged::Read => {}
                    // basic.get must not answer get-empty while messages
                    // are on their way in.
                    Paged::Busy => st.wait_for_page(),
                    Paged::Failed => may_page = false,
                },
                Got::Empty => return false,
            }
        }
    }

    /// Drop every ready message (and every message waiting out a retry
    /// delay); returns how many, and whether stored ones were among them
    /// (then the purge is durable only once the store has flushed).
    pub fn purge(self: &Arc<Self>) -> (u32, bool) {
        let purged = self.lock().core.purge();
        self.forget(&purged.messages);
        let stored =
            !purged.ranges.is_empty() || purged.messages.iter().any(|m| m.stored.is_durable());
        self.purge_stored(purged.ranges);
        (purged.count, stored && self.env.store.is_durable())
    }

    /// Mark the queue deleted, cancel its consumers (telling their clients)
    /// and drop its messages. Returns the number of ready messages dropped.
    /// The vhost removes it from its index and bindings.
    pub fn delete(self: &Arc<Self>, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        if let Some(stream) = &self.stream {
            // As RabbitMQ: if-unused and if-empty do not apply to a stream,
            // and delete-ok reports no messages.
            let count = 0;
            let consumers = stream.take_consumers();
            {
                let mut st = self.lock();
                let _ = st.core.delete(false, false);
            }
            for c in &consumers {
                c.consumer.channel.cancelled(self, &c.consumer);
            }
            self.env.store.delete_log(self.config.uid);
            return Ok(count);
        }
        let mut st = self.lock();
        let deleted = match st.core.delete(if_unused, if_empty) {
            Ok(d) => d,
            Err(why) => {
                let what = match why {
                    DeleteRefused::NotEmpty => "not empty",
                    DeleteRefused::InUse => "in use",
                };
                return Err(AmqpError::precondition_failed(format!(
                    "queue '{}' in vhost '{}' {what}",
                    self.name(),
                    self.config.vhost
                )));
            }
        };
        for c in &deleted.consumers {
            c.channel.cancelled(self, c);
        }
        drop(st);
        // Messages are freed outside the lock (a long queue's take a while).
        drop(deleted.messages);
        self.forget_everything();
        Ok(deleted.count)
    }
}
