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
//! Persistence: a persistent message in a durable queue is written to the
//! store as it is enqueued (durable at the next group commit), marked when
//! delivered, and removed when acknowledged. A queue longer than its memory
//! window keeps new messages only in the store (transient ones too) and
//! reads them back a page at a time as consumers catch up.
//!
//! # Lock ordering
//! queue state → channel ledger → connection outbox. Never take a queue lock
//! while holding a channel ledger or outbox lock.

mod consumer;
mod env;
mod ready;

use std::sync::Arc;

use amq_protocol::types::{FieldTable, ShortString};
use parking_lot::Mutex;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::store::{Entry, Stored};

pub use consumer::{Consumer, ConsumerId, DeliveryTarget};
pub use env::{MemoryBudget, QueueEnv};
use ready::{ReadyList, StoredRegion};

/// Identifies a connection, for exclusive queues.
pub type ConnectionId = u64;

/// A message as one queue holds it.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    /// Position in this queue; requeued messages go back in `seq` order.
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Where the store has it, if anywhere.
    pub stored: Stored,
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
    state: Mutex<QueueState>,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue, and in the store if it is persistent and the queue
    /// durable.
    Yes { stored: bool },
    /// The queue was deleted meanwhile.
    Gone,
    /// The store refused to write it: it was not enqueued.
    StoreFailed,
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
    /// After a crash, messages up to this sequence number come back marked
    /// redelivered: the broker cannot know which of them were delivered in
    /// the moments before the crash.
    redelivered_through: Option<u64>,
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
    pub fn new(config: QueueConfig, env: Arc<QueueEnv>) -> Arc<Queue> {
        let state = QueueState {
            ready: ReadyList::new(env.budget.clone()),
            ..Default::default()
        };
        Arc::new(Queue {
            config,
            env,
            state: Mutex::new(state),
        })
    }

    /// A durable queue coming back after a restart: its messages stay in the
    /// store and are read in as consumers need them. `count`, when known
    /// (after a clean shutdown), is exact; otherwise it is estimated from
    /// the stored range until [`Queue::set_recovered_count`] corrects it.
    pub fn recover(config: QueueConfig, env: Arc<QueueEnv>, count: Option<u64>) -> Arc<Queue> {
        let bounds = match env.store.entry_bounds(config.uid) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(queue = %config.name, "cannot read the queue's messages: {e}");
                None
            }
        };
        let queue = Queue::new(config, env);
        if let Some((first, last)) = bounds {
            let mut st = queue.state.lock();
            st.next_seq = last + 1;
            if !queue.env.store.was_clean() {
                st.redelivered_through = Some(last);
            }
            let count = count.unwrap_or(last - first + 1);
            st.ready.set_stored(StoredRegion {
                from: first,
                count,
                durable: count,
                bytes: 0,
            });
        }
        queue
    }

    /// Replace a recovered queue's estimated size with a count made in the
    /// background, if nothing has been read from the store since.
    pub fn set_recovered_count(&self, from: u64, count: u64) {
        let mut st = self.state.lock();
        let region = st.ready.stored();
        if region.from == from && region.count > 0 {
            st.ready.set_stored(StoredRegion {
                count,
                durable: count,
                ..region
            });
        }
    }

    /// Where the stored region starts (for the recovery count).
    pub fn stored_from(&self) -> u64 {
        self.state.lock().ready.stored().from
    }

    /// Ready messages that would survive a restart (for the clean-shutdown
    /// snapshot, taken once connections have returned what they held).
    pub fn durable_ready(&self) -> u64 {
        self.state.lock().ready.durable()
    }

    fn persists(&self, message: &Message) -> bool {
        message.persistent && self.config.survives_restart() && self.env.store.is_durable()
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

    /// Whether a message published here would be written to the store.
    pub fn would_persist(&self, message: &Message) -> bool {
        self.persists(message)
    }

    /// Enqueue a routed message and deliver what can be delivered. A
    /// persistent message for a durable queue is written to the store first
    /// (as a reference to `shared` when its body is stored once for several
    /// queues).
    pub fn publish(self: &Arc<Self>, message: Arc<Message>, shared: Option<u64>) -> Enqueued {
        let mut st = self.state.lock();
        if st.deleted {
            return Enqueued::Gone;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let store = &self.env.store;
        let paging = self.should_page(&st);
        let stored = if self.persists(&message) {
            let entry = match shared {
                Some(id) => Entry::Shared(id),
                None => Entry::Inline(&message),
            };
            // A message that stays in memory is written at the next group
            // commit (or never, if it is acked first); one that is paged out
            // must be readable from the store at once.
            match store.put_entry(self.config.uid, seq, entry, !paging) {
                Ok(stored) => stored,
                Err(_) => return Enqueued::StoreFailed,
            }
        } else {
            Stored::No
        };
        let persisted = stored != Stored::No;
        if paging {
            let paged = match stored {
                Stored::No => store.page_out(self.config.uid, seq, &message).is_ok(),
                _ => true,
            };
            if paged {
                st.ready
                    .push_stored(seq, message.body_size() as u64, persisted);
                self.dispatch_locked(&mut st);
                return Enqueued::Yes { stored: persisted };
            }
        }
        st.ready.push_back(QueuedMessage {
            seq,
            message,
            redelivered: false,
            stored,
        });
        self.dispatch_locked(&mut st);
        Enqueued::Yes { stored: persisted }
    }

    /// Keep the message only in the store: the queue is already paging, or
    /// its memory window (or the broker's budget) is full.
    fn should_page(&self, st: &QueueState) -> bool {
        self.env.can_page()
            && (st.ready.is_paging()
                || st.ready.in_memory() >= self.env.window
                || self.env.budget.exhausted())
    }

    /// Refill the memory window from the store when it runs low.
    fn page_in(&self, st: &mut QueueState) {
        if !st.ready.is_paging() || st.ready.in_memory() >= self.env.page_batch {
            return;
        }
        let region = st.ready.stored();
        match self
            .env
            .store
            .page_in(self.config.uid, region.from, self.env.page_batch)
        {
            Ok(page) if page.is_empty() => st.ready.stored_exhausted(),
            Ok(page) => {
                let next = page.last().map_or(region.from, |r| r.seq + 1);
                let full = page.len() == self.env.page_batch;
                let through = st.redelivered_through;
                st.ready.extend_from_store(
                    page.into_iter().map(|r| QueuedMessage {
                        seq: r.seq,
                        message: Arc::new(r.message),
                        redelivered: r.redelivered || through.is_some_and(|t| r.seq <= t),
                        stored: r.stored,
                    }),
                    next,
                );
                if !full {
                    // The store holds nothing more: any remaining count was
                    // an overestimate from crash recovery.
                    st.ready.stored_exhausted();
                }
            }
            Err(e) => {
                tracing::error!(queue = %self.config.name, "cannot read stored messages: {e}")
            }
        }
    }

    /// Take the next ready message, refilling from the store if needed.
    fn next_ready(&self, st: &mut QueueState) -> Option<QueuedMessage> {
        self.page_in(st);
        st.ready.pop_front()
    }

    /// A message left the queue for a consumer. Delivery itself writes
    /// nothing (that would cost a write per message); a no-ack delivery
    /// settles the message, so it leaves the store.
    fn delivered(&self, m: &QueuedMessage, settled: bool) {
        if settled {
            self.forget(std::slice::from_ref(m));
        }
    }

    fn forget(&self, messages: &[QueuedMessage]) {
        for m in messages {
            let marked = m.redelivered;
            if let Err(e) = self
                .env
                .store
                .remove(self.config.uid, m.seq, m.stored, marked)
            {
                tracing::error!(queue = %self.config.name, "cannot remove a stored message: {e}");
            }
        }
    }

    /// Remove a stored region in the background (purge and delete of long
    /// queues would otherwise hold the queue for seconds).
    fn forget_region(&self, from: u64, to: u64) {
        let store = self.env.store.clone();
        let (uid, name) = (self.config.uid, self.config.name.clone());
        let spawned = std::thread::Builder::new()
            .name("warren-purge".into())
            .spawn(move || {
                if let Err(e) = store.remove_range(uid, from, to) {
                    tracing::error!(queue = %name, "cannot remove stored messages: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a purge thread: {e}");
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
        self.forget(&messages);
        let mut st = self.state.lock();
        st.settle(consumer, messages.len() as u32);
        self.dispatch_locked(&mut st);
    }

    /// Reject delivered messages without requeueing: they are dropped.
    pub fn discard(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        self.ack(consumer, messages)
    }

    /// Memory and stored counts of ready messages, for diagnostics.
    pub fn ready_split(&self) -> (usize, u64) {
        let st = self.state.lock();
        (st.ready.in_memory(), st.ready.stored().count)
    }

    /// Bytes of ready message bodies this queue holds in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.state.lock().ready.memory_bytes()
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
            // Coming back from a consumer, the message is marked in the store
            // so that it is still flagged redelivered after a restart. (After
            // a crash every recovered message is flagged anyway.)
            if !m.redelivered
                && m.stored != Stored::No
                && let Err(e) = self.env.store.mark_redelivered(self.config.uid, m.seq)
            {
                tracing::error!(queue = %self.config.name, "cannot mark a stored message: {e}");
            }
            m.redelivered = true;
            st.ready.insert_ordered(m);
        }
        self.dispatch_locked(&mut st);
    }

    /// `basic.get`: take the head message. `deliver` runs under the queue lock
    /// with the message and the number of messages left.
    pub fn get(self: &Arc<Self>, no_ack: bool, deliver: impl FnOnce(QueuedMessage, u32)) -> bool {
        let mut st = self.state.lock();
        match self.next_ready(&mut st) {
            Some(m) => {
                if !no_ack {
                    st.unacked += 1;
                }
                self.delivered(&m, no_ack);
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
        let count = st.ready.len() as u32;
        let (mut memory, region) = st.ready.take_all();
        let next_seq = st.next_seq;
        drop(st);
        self.forget(memory.make_contiguous());
        if region.count > 0 {
            self.forget_region(region.from, next_seq);
        }
        count
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
        let count = st.ready.len() as u32;
        let (memory, _) = st.ready.take_all();
        drop(st);
        drop(memory);
        if self.env.store.is_durable() {
            self.env.store.cancel_unwritten(self.config.uid);
            // Everything the queue ever stored, including entries of
            // messages still unacknowledged in channels.
            self.forget_region(0, u64::MAX);
        }
        Ok(count)
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
            let Some(message) = self.next_ready(st) else {
                return;
            };
            st.cursor = (idx + 1) % n;
            let consumer = &mut st.consumers[idx];
            if !consumer.no_ack {
                consumer.unacked += 1;
            }
            let counted = !consumer.no_ack;
            self.delivered(&message, consumer.no_ack);
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
