//! Queues: ordered messages waiting for consumers.
//!
//! A [`Queue`] is shared state behind one short-held lock. Whoever changes it
//! — a publisher's connection enqueueing, a consumer's connection acking,
//! the broker's timer expiring messages — runs the queue's dispatch loop
//! right there, so a message goes from the publisher's socket to the
//! consumer's output buffer without a task hop. The queue never touches
//! sockets or frames: it hands messages to a [`DeliveryTarget`] (an AMQP
//! channel), which encodes them.
//!
//! Messages the queue has delivered but that are not yet acknowledged are
//! owned by the consuming channel's ledger; the queue keeps only counts, and
//! takes messages back through [`Queue::requeue`], where they return to their
//! original position (ordered by sequence number) marked redelivered — or,
//! with delayed retry, wait in the queue's timer index first.
//!
//! Persistence: a persistent message in a durable queue is written to the
//! store as it is enqueued (durable at the next group commit) and removed
//! when acknowledged. A queue longer than its memory window keeps new
//! messages only in the store (transient ones too) and reads them back a
//! page at a time as consumers catch up.
//!
//! Messages that die (rejected, expired, over a limit) are dead-lettered
//! after the queue's lock is released: see [`dead_letter`].
//!
//! # Lock ordering
//! queue state → channel ledger → connection outbox. Never take a queue lock
//! while holding a channel ledger or outbox lock.

pub mod args;
mod consumer;
pub mod dead_letter;
mod deadlines;
mod env;
mod expiry;
mod ready;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use parking_lot::{Mutex, MutexGuard};

use crate::error::{AmqpError, AmqpResult};
use crate::message::{self, Message};
use crate::store::{DeliveryState, Entry, Slot, Stored};
use args::{DeliveryLimit, Overflow, QueueArgs, QueueSettings};
use consumer::Consumers;
use dead_letter::Reason;
use expiry::{ExpiryIndex, expiry_time, has_expired};
use ready::{Found, ReadyList, StoredRegion};

pub use consumer::{Consumer, ConsumerId, DeliveryTarget};
pub use deadlines::Deadlines;
pub use env::{MemoryBudget, QueueEnv, QueueOwner};
pub use expiry::now_ms;

/// Identifies a connection, for exclusive queues.
pub type ConnectionId = u64;

/// Expired messages one timer wake handles before releasing the queue (about
/// a millisecond of work when they live in the store).
const EXPIRE_BATCH: usize = 128;

/// A message as one queue holds it.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    /// Position in this queue; requeued messages go back in `seq` order.
    pub seq: u64,
    pub message: Arc<Message>,
    /// Priority level (0 in a queue without priorities).
    pub level: u8,
    pub redelivered: bool,
    /// A tombstone left in the ready list (see `ready`).
    gone: bool,
    /// Where the store has it, if anywhere.
    pub stored: Stored,
    /// When it expires (ms since the epoch), 0 for never.
    pub expires_at: u64,
    /// Returns so far, and when it may be delivered again.
    pub delivery: DeliveryState,
}

impl QueuedMessage {
    fn slot(&self, uid: u64) -> Slot {
        Slot {
            uid,
            level: self.level,
            seq: self.seq,
        }
    }
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
    /// The queue is full and refuses new messages (`reject-publish`).
    Rejected,
    /// The store refused to write it: it was not enqueued.
    StoreFailed,
}

/// Why delivered messages come back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// The consumer rejected or nacked them: a failed delivery, counted in
    /// `x-delivery-count` and against the delivery limit.
    Failed,
    /// Their channel closed, or the consumer asked for redelivery
    /// (`basic.recover`).
    Returned,
}

#[derive(Debug)]
struct QueueState {
    settings: QueueSettings,
    ready: ReadyList,
    expiry: ExpiryIndex,
    /// Returned messages waiting out a retry delay, by (time, seq).
    delayed: BTreeMap<(u64, u64), QueuedMessage>,
    /// Delivered, not yet acknowledged (held in channel ledgers).
    unacked: u32,
    next_seq: u64,
    consumers: Consumers,
    /// Auto-delete queues go when their last consumer goes, but only once
    /// they have had one.
    had_consumer: bool,
    /// After a crash, messages up to this sequence number come back marked
    /// redelivered: the broker cannot know which of them were delivered in
    /// the moments before the crash.
    redelivered_through: Option<u64>,
    deleted: bool,
    /// The earliest time the broker's timer will wake this queue.
    armed: Option<u64>,
    /// Last declare, get or consumer change (for `x-expires`).
    last_used: u64,
    /// Messages that died under the lock, dead-lettered once it is released.
    dead: Vec<(Arc<Message>, Reason)>,
}

/// The queue's lock. Dropping it releases the lock, then arms the timer
/// and dead-letters what died meanwhile — so no path can forget either.
struct Locked<'a> {
    queue: &'a Arc<Queue>,
    guard: Option<MutexGuard<'a, QueueState>>,
    /// Release the lock fairly (to the longest waiter).
    fair: bool,
}

impl Deref for Locked<'_> {
    type Target = QueueState;
    fn deref(&self) -> &QueueState {
        self.guard.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut QueueState {
        self.guard.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut st) = self.guard.take() else {
            return;
        };
        if let Some(at) = st.next_wake()
            && st.armed.is_none_or(|armed| at < armed)
        {
            st.armed = Some(at);
            self.queue.env.deadlines.arm(at, self.queue);
        }
        let dead = std::mem::take(&mut st.dead);
        let target = if dead.is_empty() {
            None
        } else {
            st.settings.dead_letter.clone()
        };
        if self.fair {
            MutexGuard::unlock_fair(st);
        } else {
            drop(st);
        }
        let (Some(target), Some(owner)) = (target, self.queue.env.owner()) else {
            return;
        };
        let now = now_ms();
        let letters = dead
            .iter()
            .filter_map(|(m, reason)| {
                dead_letter::rewrite(m, *reason, self.queue.name(), &target, now)
            })
            .collect();
        owner.dead_letter(&self.queue.config.vhost, letters);
    }
}

/// Result of cancelling a consumer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cancelled {
    pub found: bool,
    /// The queue is auto-delete and just lost its last consumer.
    pub now_unused: bool,
}

impl Queue {
    pub fn new(
        config: QueueConfig,
        env: Arc<QueueEnv>,
        policy: Option<(&str, &args::Tunables)>,
    ) -> Arc<Queue> {
        let settings = QueueSettings::merge(&config.args, policy);
        let state = QueueState {
            settings,
            ready: ReadyList::new(config.args.levels(), env.budget.clone()),
            expiry: ExpiryIndex::default(),
            delayed: BTreeMap::new(),
            unacked: 0,
            next_seq: 0,
            consumers: Consumers::new(config.args.single_active_consumer),
            had_consumer: false,
            redelivered_through: None,
            deleted: false,
            armed: None,
            last_used: now_ms(),
            dead: Vec::new(),
        };
        let queue = Arc::new(Queue {
            config,
            env,
            state: Mutex::new(state),
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

    /// A durable queue coming back after a restart: its messages stay in the
    /// store and are read in as consumers need them. `counts`, per level,
    /// are exact when known (after a clean shutdown); otherwise they are
    /// estimated from the stored range until [`Queue::set_recovered_count`]
    /// corrects them.
    pub fn recover(
        config: QueueConfig,
        env: Arc<QueueEnv>,
        policy: Option<(&str, &args::Tunables)>,
        counts: Option<&[(u8, u64)]>,
    ) -> Arc<Queue> {
        let levels = config.args.levels();
        let queue = Queue::new(config, env, policy);
        let clean = queue.env.store.was_clean();
        let mut st = queue.lock();
        for level in 0..levels {
            let level = level as u8;
            let bounds = match queue.env.store.entry_bounds(queue.config.uid, level) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(queue = %queue.config.name, "cannot read the queue's messages: {e}");
                    None
                }
            };
            let Some((first, last)) = bounds else {
                continue;
            };
            st.next_seq = st.next_seq.max(last + 1);
            if !clean {
                st.redelivered_through = Some(st.redelivered_through.unwrap_or(0).max(last));
            }
            let count = counts
                .and_then(|c| c.iter().find(|(l, _)| *l == level))
                .map_or(last - first + 1, |(_, n)| *n);
            st.ready.set_stored(
                level,
                StoredRegion {
                    from: first,
                    count,
                    durable: count,
                    bytes: 0,
                },
            );
        }
        // Messages that expire are only known once read: read the heads now
        // so the timer sees them.
        if st.settings.message_ttl.is_some() {
            for level in 0..levels {
                queue.page_in(&mut st, level as u8);
            }
        }
        drop(st);
        queue
    }

    /// Replace a recovered level's estimated size with a count made in the
    /// background, if nothing has been read from the store since.
    pub fn set_recovered_count(self: &Arc<Self>, level: u8, from: u64, count: u64) {
        let mut st = self.lock();
        let region = st.ready.stored(level);
        if region.from == from && region.count > 0 {
            st.ready.set_stored(
                level,
                StoredRegion {
                    count,
                    durable: count,
                    ..region
                },
            );
        }
    }

    /// Where each level's stored region starts (for the recovery count).
    pub fn stored_from(&self) -> Vec<(u8, u64)> {
        let st = self.state.lock();
        (0..st.ready.level_count())
            .map(|l| (l as u8, st.ready.stored(l as u8)))
            .filter(|(_, r)| r.count > 0)
            .map(|(l, r)| (l, r.from))
            .collect()
    }

    /// Ready messages that would survive a restart, per level (for the
    /// clean-shutdown snapshot, taken once connections have returned what
    /// they held).
    pub fn durable_ready(&self) -> Vec<(u8, u64)> {
        let st = self.state.lock();
        let mut by_level = st.ready.durable_by_level();
        for m in st.delayed.values() {
            if m.stored.is_durable()
                && let Some(n) = by_level.get_mut(usize::from(m.level))
            {
                *n += 1;
            }
        }
        by_level
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (l as u8, n))
            .collect()
    }

    fn persists(&self, message: &Message) -> bool {
        // Quorum queues keep every message, as RabbitMQ's do.
        let wanted = message.persistent || self.config.args.queue_type == args::QueueType::Quorum;
        wanted && self.config.survives_restart() && self.env.store.is_durable()
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

    /// Messages waiting out a retry delay.
    pub fn delayed_count(&self) -> u32 {
        self.state.lock().delayed.len() as u32
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// The settings the queue runs with (arguments merged with its policy).
    pub fn settings(&self) -> QueueSettings {
        self.state.lock().settings.clone()
    }

    /// A policy was set or cleared: recompute the settings.
    pub fn apply_policy(self: &Arc<Self>, policy: Option<(&str, &args::Tunables)>) {
        let mut st = self.lock();
        st.settings = QueueSettings::merge(&self.config.args, policy);
        self.enforce_limits(&mut st);
        self.dispatch_locked(&mut st);
    }

    /// Whether a message published here would be written to the store.
    pub fn would_persist(&self, message: &Message) -> bool {
        self.persists(message)
    }

    /// The queue was declared again: it counts as used (`x-expires`).
    pub fn touch(self: &Arc<Self>) {
        self.lock().last_used = now_ms();
    }

    /// Enqueue a routed message and deliver what can be delivered. A
    /// persistent message for a durable queue is written to the store first
    /// (as a reference to `shared` when its body is stored once for several
    /// queues).
    pub fn publish(self: &Arc<Self>, message: Arc<Message>, shared: Option<u64>) -> Enqueued {
        let mut st = self.lock();
        if st.deleted {
            return Enqueued::Gone;
        }
        if st.settings.overflow.rejects_publish() && st.is_full() {
            if st.settings.overflow == Overflow::RejectPublishDlx {
                st.bury(message, Reason::MaxLen);
            }
            return Enqueued::Rejected;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let level = st.ready.level_for(message.priority);
        let now = if st.settings.message_ttl.is_some() || message.expiration_ms.is_some() {
            now_ms()
        } else {
            0
        };
        let expires_at = if now == 0 {
            0
        } else {
            expiry_time(now, st.settings.message_ttl, message.expiration_ms)
        };
        let slot = Slot {
            uid: self.config.uid,
            level,
            seq,
        };
        let store = &self.env.store;
        let paging = self.should_page(&st, level);
        let stored = if self.persists(&message) {
            let entry = match shared {
                Some(id) => Entry::Shared(id),
                None => Entry::Inline(&message),
            };
            // A message that stays in memory is written at the next group
            // commit (or never, if it is acked first); one that is paged out
            // must be readable from the store at once.
            match store.put_entry(slot, expires_at, entry, !paging) {
                Ok(stored) => stored,
                Err(_) => return Enqueued::StoreFailed,
            }
        } else {
            Stored::No
        };
        let persisted = stored != Stored::No;
        st.expiry.add(expires_at, level, seq);
        let paged = paging
            && match stored {
                Stored::No => store.page_out(slot, expires_at, &message).is_ok(),
                _ => true,
            };
        if paged {
            st.ready
                .push_stored(level, seq, message.body_size() as u64, persisted);
        } else {
            st.ready.push_back(QueuedMessage {
                seq,
                message,
                level,
                redelivered: false,
                gone: false,
                stored,
                expires_at,
                delivery: DeliveryState::default(),
            });
        }
        self.dispatch_locked(&mut st);
        // A TTL of 0 means "now or never": unless a consumer took it just
        // now, it expires at once (RabbitMQ).
        if expires_at != 0 && expires_at <= now {
            self.expire_one(&mut st, level, seq);
        }
        self.enforce_limits(&mut st);
        Enqueued::Yes { stored: persisted }
    }

    /// Keep the message only in the store: its level is already paging, or
    /// the memory window (or the broker's budget) is full.
    fn should_page(&self, st: &QueueState, level: u8) -> bool {
        self.env.can_page()
            && (st.ready.is_paging(level)
                || st.ready.in_memory() >= self.env.window
                || self.env.budget.exhausted())
    }

    /// Drop messages from the head while the queue is over its length
    /// limits (`drop-head`).
    fn enforce_limits(&self, st: &mut QueueState) {
        if st.settings.overflow != Overflow::DropHead || !st.settings.has_length_limit() {
            return;
        }
        while st.is_over_limit() {
            match self.take_head(st) {
                Some(m) => self.die(st, m, Reason::MaxLen),
                None => break,
            }
        }
    }

    /// Refill `level`'s memory window from the store when it runs low.
    fn page_in(&self, st: &mut QueueState, level: u8) {
        let Some(region) = st.ready.wants_page(level, self.env.page_batch) else {
            return;
        };
        let page =
            match self
                .env
                .store
                .page_in(self.config.uid, level, region.from, self.env.page_batch)
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(queue = %self.config.name, "cannot read stored messages: {e}");
                    return;
                }
            };
        if page.is_empty() {
            st.ready.stored_exhausted(level);
            return;
        }
        let next = page.last().map_or(region.from, |r| r.seq + 1);
        let full = page.len() == self.env.page_batch;
        let through = st.redelivered_through;
        let counts = self.config.args.counts_deliveries(&st.settings);
        let mut delayed = Vec::new();
        let QueueState { ready, expiry, .. } = &mut *st;
        ready.extend_from_store(
            level,
            page.into_iter().map(|r| {
                let delivery = r.delivery.unwrap_or_default();
                let mut message = Arc::new(r.message);
                if counts && delivery.failed > 0 {
                    message = with_delivery_count(&message, delivery.failed);
                }
                expiry.add(r.expires_at_ms, level, r.seq);
                if delivery.not_before_ms > 0 {
                    delayed.push(r.seq);
                }
                QueuedMessage {
                    seq: r.seq,
                    message,
                    level,
                    redelivered: r.delivery.is_some() || through.is_some_and(|t| r.seq <= t),
                    gone: false,
                    stored: r.stored,
                    expires_at: r.expires_at_ms,
                    delivery,
                }
            }),
            next,
        );
        for seq in delayed {
            if let Found::Memory(m) = st.ready.remove(level, seq) {
                st.delayed.insert((m.delivery.not_before_ms, seq), m);
            }
        }
        if !full {
            // The store holds nothing more: any remaining count was an
            // overestimate from crash recovery.
            st.ready.stored_exhausted(level);
        }
    }

    /// Take the next message to deliver, refilling from the store as needed
    /// and expiring what has expired on the way.
    fn next_ready(&self, st: &mut QueueState) -> Option<QueuedMessage> {
        let mut now = 0;
        loop {
            let m = self.take_head(st)?;
            if m.expires_at != 0 {
                if now == 0 {
                    now = now_ms();
                }
                if has_expired(m.expires_at, now) {
                    self.die(st, m, Reason::Expired);
                    continue;
                }
            }
            return Some(m);
        }
    }

    /// Take the message at the head of the queue (highest priority first).
    fn take_head(&self, st: &mut QueueState) -> Option<QueuedMessage> {
        loop {
            let level = st.ready.top_level()?;
            self.page_in(st, level);
            match st.ready.pop_front(level) {
                Some(m) => {
                    st.expiry.remove(m.expires_at, m.level, m.seq);
                    return Some(m);
                }
                // The store could not be read; try again later.
                None if st.ready.is_paging(level) => return None,
                None => continue,
            }
        }
    }

    /// A message leaves the queue for good without reaching a consumer:
    /// it is removed from the store and dead-lettered.
    fn die(&self, st: &mut QueueState, m: QueuedMessage, reason: Reason) {
        self.forget(std::slice::from_ref(&m));
        st.bury(m.message, reason);
    }

    /// Expire message `seq` of `level` wherever it is.
    fn expire_one(&self, st: &mut QueueState, level: u8, seq: u64) {
        match st.ready.remove(level, seq) {
            Found::Memory(m) => {
                st.expiry.remove(m.expires_at, level, seq);
                self.die(st, m, Reason::Expired);
            }
            Found::Stored => {
                let slot = Slot {
                    uid: self.config.uid,
                    level,
                    seq,
                };
                // The message itself is only read if it is to be
                // dead-lettered.
                let read = st.settings.dead_letter.is_some();
                let transient_only =
                    !(self.config.survives_restart() && self.env.store.is_durable());
                match self.env.store.take_stored(slot, read, transient_only) {
                    Ok(Some(taken)) => {
                        st.ready.remove_stored(level, taken.bytes, taken.durable);
                        if let Some(message) = taken.message {
                            st.bury(Arc::new(message), Reason::Expired);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(queue = %self.config.name, "cannot remove an expired message: {e}")
                    }
                }
            }
            Found::Missing => {
                let key = st
                    .delayed
                    .iter()
                    .find(|(_, m)| m.seq == seq && m.level == level)
                    .map(|(k, _)| *k);
                if let Some(m) = key.and_then(|k| st.delayed.remove(&k)) {
                    self.die(st, m, Reason::Expired);
                }
            }
        }
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
            if let Err(e) = self
                .env
                .store
                .remove(m.slot(self.config.uid), m.stored, m.redelivered)
            {
                tracing::error!(queue = %self.config.name, "cannot remove a stored message: {e}");
            }
        }
    }

    /// Remove stored regions in the background (purge and delete of long
    /// queues would otherwise hold the queue for seconds). `None` for the
    /// level means all levels.
    fn forget_regions(&self, ranges: Vec<(Option<u8>, u64, u64)>) {
        let store = self.env.store.clone();
        let (uid, name) = (self.config.uid, self.config.name.clone());
        let spawned = std::thread::Builder::new()
            .name("warren-purge".into())
            .spawn(move || {
                for (level, from, to) in ranges {
                    if let Err(e) = store.remove_range(uid, level, from, to) {
                        tracing::error!(queue = %name, "cannot remove stored messages: {e}");
                    }
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
        let mut st = self.lock();
        if st.deleted {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                self.name(),
                self.config.vhost
            )));
        }
        if st.consumers.has_exclusive() || (consumer.exclusive && !st.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name(),
                self.config.vhost
            )));
        }
        st.consumers.add(consumer);
        st.had_consumer = true;
        st.last_used = now_ms();
        announce();
        self.dispatch_locked(&mut st);
        Ok(())
    }

    pub fn cancel(self: &Arc<Self>, id: ConsumerId) -> Cancelled {
        let mut st = self.lock();
        if st.consumers.remove(id).is_none() {
            return Cancelled::default();
        }
        st.last_used = now_ms();
        // With a single active consumer, the next one may take over now.
        self.dispatch_locked(&mut st);
        Cancelled {
            found: true,
            now_unused: self.config.auto_delete && st.had_consumer && st.consumers.is_empty(),
        }
    }

    /// Whether a consumer receives messages now (single active consumer:
    /// only one does).
    pub fn is_active_consumer(&self, id: ConsumerId) -> bool {
        self.state.lock().consumers.is_active(id)
    }

    /// Whether an auto-delete queue has lost all its consumers; checked again
    /// by the vhost under its own lock before deleting.
    pub fn is_unused_auto_delete(&self) -> bool {
        let st = self.state.lock();
        self.config.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted
    }

    /// Whether the queue has been unused for its `x-expires`; checked again
    /// by the vhost under its own lock before deleting.
    pub fn is_expired_unused(&self, now: u64) -> bool {
        let st = self.state.lock();
        !st.deleted && st.expires_deadline().is_some_and(|at| now >= at)
    }

    /// Acknowledge delivered messages: they leave the queue for good.
    pub fn ack(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        self.forget(&messages);
        let mut st = self.lock();
        st.settle(consumer, messages.len() as u32);
        self.dispatch_locked(&mut st);
    }

    /// Reject delivered messages without requeueing: they are dropped, or
    /// dead-lettered with reason `rejected`.
    pub fn discard(self: &Arc<Self>, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        let mut st = self.lock();
        st.settle(consumer, messages.len() as u32);
        for m in messages {
            self.die(&mut st, m, Reason::Rejected);
        }
        self.dispatch_locked(&mut st);
    }

    /// Memory and stored counts of ready messages, for diagnostics.
    pub fn ready_split(&self) -> (usize, u64) {
        let st = self.state.lock();
        (st.ready.in_memory(), st.ready.stored_count())
    }

    /// Bytes of ready message bodies this queue holds in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.state.lock().ready.memory_bytes()
    }

    /// Put delivered messages back at their original positions, marked
    /// redelivered — unless they are past the delivery limit (then they are
    /// dead-lettered) or must wait out a retry delay first.
    pub fn requeue(
        self: &Arc<Self>,
        consumer: Option<ConsumerId>,
        messages: Vec<QueuedMessage>,
        why: Return,
    ) {
        let mut st = self.lock();
        st.settle(consumer, messages.len() as u32);
        if st.deleted {
            return;
        }
        let counts = self.config.args.counts_deliveries(&st.settings);
        let mut now = 0;
        for mut m in messages {
            let failed = why == Return::Failed;
            let count = if failed {
                m.delivery.failed += 1;
                m.delivery.failed
            } else {
                m.delivery.returned += 1;
                m.delivery.returned
            };
            if let DeliveryLimit::Max(limit) = st.settings.delivery_limit
                && failed
                && m.delivery.failed > limit
            {
                self.die(&mut st, m, Reason::DeliveryLimit);
                continue;
            }
            let delay = st
                .settings
                .delayed_retry
                .map_or(0, |r| r.delay_ms(failed, count));
            if delay > 0 {
                if now == 0 {
                    now = now_ms();
                }
                m.delivery.not_before_ms = now + delay;
            } else {
                m.delivery.not_before_ms = 0;
            }
            // Coming back from a consumer, the message's delivery state is
            // written to the store so that it is still flagged redelivered
            // (and counted, and delayed) after a restart. A message that
            // has been marked once and is not counted needs no new write.
            if m.stored != Stored::No
                && (!m.redelivered || counts || delay > 0)
                && let Err(e) = self
                    .env
                    .store
                    .set_delivery(m.slot(self.config.uid), m.delivery)
            {
                tracing::error!(queue = %self.config.name, "cannot mark a stored message: {e}");
            }
            if counts && m.delivery.failed > 0 {
                m.message = with_delivery_count(&m.message, m.delivery.failed);
            }
            m.redelivered = true;
            st.expiry.add(m.expires_at, m.level, m.seq);
            if delay > 0 {
                st.delayed.insert((m.delivery.not_before_ms, m.seq), m);
            } else {
                st.ready.insert_ordered(m);
            }
        }
        self.dispatch_locked(&mut st);
    }

    /// `basic.get`: take the head message. `deliver` runs under the queue lock
    /// with the message and the number of messages left.
    pub fn get(self: &Arc<Self>, no_ack: bool, deliver: impl FnOnce(QueuedMessage, u32)) -> bool {
        let mut st = self.lock();
        st.last_used = now_ms();
        let now = st.last_used;
        self.promote_delayed(&mut st, now);
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

    /// Drop every ready message (and every message waiting out a retry
    /// delay); returns how many.
    pub fn purge(self: &Arc<Self>) -> u32 {
        let mut st = self.lock();
        let count = st.ready.len() as u32;
        let (memory, regions) = st.ready.take_all();
        let delayed = std::mem::take(&mut st.delayed);
        st.expiry.clear();
        let next_seq = st.next_seq;
        drop(st);
        self.forget(&memory);
        let delayed: Vec<QueuedMessage> = delayed.into_values().collect();
        self.forget(&delayed);
        let ranges: Vec<_> = regions
            .into_iter()
            .map(|(level, r)| (Some(level), r.from, next_seq))
            .collect();
        if !ranges.is_empty() {
            self.forget_regions(ranges);
        }
        count
    }

    /// Mark the queue deleted, cancel its consumers (telling their clients)
    /// and drop its messages. Returns the number of ready messages dropped.
    /// The vhost removes it from its index and bindings.
    pub fn delete(self: &Arc<Self>, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        let mut st = self.lock();
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
        for c in st.consumers.take_all() {
            c.channel.cancelled(self, &c);
        }
        let count = st.ready.len() as u32;
        let (memory, _) = st.ready.take_all();
        st.delayed.clear();
        st.expiry.clear();
        drop(st);
        drop(memory);
        if self.env.store.is_durable() {
            self.env.store.cancel_unwritten(self.config.uid);
            // Everything the queue ever stored, including entries of
            // messages still unacknowledged in channels.
            self.forget_regions(vec![(None, 0, u64::MAX)]);
        }
        Ok(count)
    }

    /// Deliver as much as consumers can take. Channels call this when they
    /// regain capacity (acks, flow, a drained connection).
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(idx) = st.consumers.pick(self) else {
                return;
            };
            let Some(message) = self.next_ready(st) else {
                return;
            };
            let Some(consumer) = st.consumers.get_mut(idx) else {
                return;
            };
            let no_ack = consumer.no_ack;
            if !no_ack {
                consumer.unacked += 1;
            }
            self.delivered(&message, no_ack);
            consumer.channel.deliver(self, consumer, message);
            if !no_ack {
                st.unacked += 1;
            }
        }
    }

    /// Move delayed messages whose time has come back to the ready list.
    fn promote_delayed(&self, st: &mut QueueState, now: u64) {
        while let Some(entry) = st.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let m = entry.remove();
            st.ready.insert_ordered(m);
        }
    }

    /// The broker's timer woke the queue: deliver delayed messages that are
    /// due, expire messages whose time has come, and delete the queue if it
    /// has been unused for its `x-expires`.
    pub fn on_deadline(self: &Arc<Self>, now: u64) {
        let mut st = self.lock();
        if st.deleted {
            return;
        }
        if st.armed.is_some_and(|at| at <= now) {
            st.armed = None;
        }
        self.promote_delayed(&mut st, now);
        // The timer comes straight back for the next batch: hand the lock
        // to whoever waits for it first, or they could wait for the lot.
        st.fair = true;
        for _ in 0..EXPIRE_BATCH {
            let Some((_, level, seq)) = st.expiry.pop_due(now) else {
                break;
            };
            self.expire_one(&mut st, level, seq);
        }
        if st.settings.message_ttl.is_some() {
            // After a restart only what has been read back is indexed; with
            // a queue TTL the next to expire are the next stored ones.
            for level in 0..st.ready.level_count() {
                self.page_in(&mut st, level as u8);
            }
        }
        self.dispatch_locked(&mut st);
        let expired = st.expires_deadline().is_some_and(|at| now >= at);
        drop(st);
        if expired && let Some(owner) = self.env.owner() {
            owner.expire(self);
        }
    }
}

impl QueueState {
    fn settle(&mut self, consumer: Option<ConsumerId>, n: u32) {
        self.unacked = self.unacked.saturating_sub(n);
        if let Some(id) = consumer
            && let Some(c) = self.consumers.find_mut(id)
        {
            c.unacked = c.unacked.saturating_sub(n);
        }
    }

    /// Keep a dead message for dead-lettering, if the queue has somewhere
    /// to send it.
    fn bury(&mut self, message: Arc<Message>, reason: Reason) {
        if self.settings.dead_letter.is_some() {
            self.dead.push((message, reason));
        }
    }

    /// Messages the length limits count: ready and delayed.
    fn length(&self) -> u64 {
        (self.ready.len() + self.delayed.len()) as u64
    }

    /// Whether one more message would be refused (`reject-publish`).
    fn is_full(&self) -> bool {
        self.settings
            .max_length
            .is_some_and(|max| self.length() >= max)
            || self
                .settings
                .max_length_bytes
                .is_some_and(|max| self.ready.bytes() >= max)
    }

    fn is_over_limit(&self) -> bool {
        self.settings
            .max_length
            .is_some_and(|max| self.length() > max)
            || self
                .settings
                .max_length_bytes
                .is_some_and(|max| self.ready.bytes() > max)
    }

    /// When an unused queue expires (`x-expires`), if it can.
    fn expires_deadline(&self) -> Option<u64> {
        let expires = self.settings.expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used.saturating_add(expires))
    }

    /// The earliest time anything of this queue is due.
    fn next_wake(&self) -> Option<u64> {
        [
            self.expiry.next_wake(),
            self.delayed.first_key_value().map(|((at, _), _)| *at),
            self.expires_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A copy of `message` carrying `x-delivery-count` (quorum-queue style).
fn with_delivery_count(message: &Arc<Message>, count: u32) -> Arc<Message> {
    let Some(props) = message::parse(&message.properties) else {
        return message.clone();
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        "x-delivery-count".into(),
        AMQPValue::LongLongInt(i64::from(count)),
    );
    Arc::new(Message {
        properties: message::encode(&props.with_headers(headers)),
        ..message.as_ref().clone()
    })
}
