//! The bookkeeping of one queue, with no I/O.
//!
//! [`QueueCore`] makes every decision a queue makes — where a message goes
//! (priority level, then sequence), which consumer gets the next one
//! (priority, round robin, prefetch credit, single active consumer), when
//! messages expire or come back from a retry delay, when one has been
//! delivered too often, what a length limit drops — and nothing else: no
//! clock (the caller hands it a [`Now`]), no store, no locks, no sockets, no
//! async. What must happen as a result goes back to the caller:
//!
//! - a delivery ([`Next::Deliver`]) for the caller to encode on the
//!   consumer's channel;
//! - a read it needs answered before it can go on: the next page of a level
//!   kept in the store ([`PageRequest`], answered with
//!   [`QueueCore::paged_in`]), or a message to take out of the store where it
//!   sits ([`QueueCore::expire`], answered with [`QueueCore::stored_taken`]).
//!   Operations that may need one stop there and pick up where they left off
//!   when called again;
//! - [`Effects`]: store records to remove or mark, and messages that died
//!   and are to be dead-lettered;
//! - [`QueueCore::next_wake`]: when the queue next needs its timer.
//!
//! `queue::Queue` drives it under the queue's lock; its `dispatch`,
//! `paging` and `persistence` modules carry out what it asks. The model test
//! (`model_test.rs`) checks it against a plain reference model.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use amq_protocol::types::AMQPValue;

use super::args::{DeliveryLimit, Overflow, QueueArgs, QueueSettings, QueueType};
use super::consumer::{Consumer, ConsumerId, Consumers};
use super::expiry::{ExpiryIndex, expiry_time, has_expired};
use super::queued::{QueuedMessage, Reason, Return};
use super::ready::{Found, ReadyList, StoredRegion};
use crate::message::{self, Message};
use crate::store::{Recovered, Stored, TakenMessage};

/// The current time (ms since the epoch) for one operation: read from the
/// caller's clock at most once, and only if the operation looks at it —
/// most publishes and deliveries never do.
pub struct Now<'a> {
    clock: &'a dyn Fn() -> u64,
    value: Cell<u64>,
}

impl<'a> Now<'a> {
    pub fn new(clock: &'a dyn Fn() -> u64) -> Now<'a> {
        Now {
            clock,
            value: Cell::new(0),
        }
    }

    pub fn get(&self) -> u64 {
        let v = self.value.get();
        if v != 0 {
            return v;
        }
        let v = (self.clock)().max(1);
        self.value.set(v);
        v
    }
}

/// Read up to `count` stored messages of `level` with sequence numbers from
/// `from` on, and hand them to [`QueueCore::paged_in`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub level: u8,
    pub from: u64,
    pub count: usize,
}

/// What dispatching does next.
#[derive(Debug)]
pub enum Next {
    /// Hand `message` to the consumer at index `consumer`.
    Deliver {
        consumer: usize,
        message: QueuedMessage,
    },
    /// Read a page from the store, then dispatch again.
    Page(PageRequest),
    /// Nothing more can be delivered now.
    Idle,
}

/// What `basic.get` finds.
#[derive(Debug)]
pub enum Got {
    Message { message: QueuedMessage, left: u32 },
    Page(PageRequest),
    Empty,
}

/// Whether a queue takes a published message.
#[derive(Debug)]
pub enum Admit {
    /// It does, at this position; the caller stores it if it must, then
    /// [`QueueCore::enqueue`]s it.
    Accepted(Admission),
    /// The queue is full and refuses it (`reject-publish`).
    Rejected,
    /// The queue has been deleted.
    Gone,
}

#[derive(Clone, Copy, Debug)]
pub struct Admission {
    pub seq: u64,
    pub level: u8,
    /// 0 for never.
    pub expires_at: u64,
}

/// A store record to change, in the order the queue decided it.
#[derive(Debug)]
pub enum StoreOp {
    /// The message left the queue for good. `marked`: it may have a
    /// delivery-state record too.
    Remove {
        level: u8,
        seq: u64,
        stored: Stored,
        marked: bool,
    },
    /// A stored message came back from a consumer: keep its delivery state
    /// (flagged redelivered, counted, delayed) across a restart.
    Mark {
        level: u8,
        seq: u64,
        state: crate::store::DeliveryState,
    },
}

/// What the caller must carry out after an operation.
#[derive(Debug, Default)]
pub struct Effects {
    pub store: Vec<StoreOp>,
    /// Messages that died, with why: to be dead-lettered (only collected if
    /// the queue has a dead-letter exchange).
    pub dead: Vec<(Arc<Message>, Reason)>,
}

/// Why a consumer was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumeRefused {
    Deleted,
    /// Another consumer has exclusive use, or this one wants it and the
    /// queue has consumers.
    Exclusive,
}

/// Why `queue.delete` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteRefused {
    NotEmpty,
    InUse,
}

/// What a purge took: messages held in memory, and stored ranges
/// `(level, from, to)` for the caller to remove.
#[derive(Debug)]
pub struct Purged {
    pub count: u32,
    pub messages: Vec<QueuedMessage>,
    pub ranges: Vec<(u8, u64, u64)>,
}

/// What a delete took.
#[derive(Debug)]
pub struct Deleted<C> {
    /// Ready messages dropped.
    pub count: u32,
    /// The ones that were in memory, to be freed by the caller.
    pub messages: Vec<QueuedMessage>,
    /// The consumers, whose clients are to be told.
    pub consumers: Vec<Consumer<C>>,
}

enum Head {
    Message(QueuedMessage),
    Page(PageRequest),
    Empty,
}

/// One queue's state. `C` is the consumers' channel handle.
#[derive(Debug)]
pub struct QueueCore<C> {
    settings: QueueSettings,
    queue_type: QueueType,
    /// Messages one read from the store brings back.
    page_batch: usize,
    ready: ReadyList,
    expiry: ExpiryIndex,
    /// Returned messages waiting out a retry delay, by (time, seq).
    delayed: BTreeMap<(u64, u64), QueuedMessage>,
    /// Delivered, not yet acknowledged (held in channel ledgers).
    unacked: u32,
    next_seq: u64,
    consumers: Consumers<C>,
    /// Auto-delete queues go when their last consumer goes, but only once
    /// they have had one.
    had_consumer: bool,
    /// After a crash, messages up to this sequence number come back marked
    /// redelivered: nobody can know which were delivered just before it.
    redelivered_through: Option<u64>,
    deleted: bool,
    /// Last declare, get or consumer change (for `x-expires`).
    last_used: u64,
    pub effects: Effects,
}

impl<C> QueueCore<C> {
    pub fn new(args: &QueueArgs, settings: QueueSettings, page_batch: usize, now: u64) -> Self {
        QueueCore {
            settings,
            queue_type: args.queue_type,
            page_batch: page_batch.max(1),
            ready: ReadyList::new(args.levels()),
            expiry: ExpiryIndex::default(),
            delayed: BTreeMap::new(),
            unacked: 0,
            next_seq: 0,
            consumers: Consumers::new(args.single_active_consumer),
            had_consumer: false,
            redelivered_through: None,
            deleted: false,
            last_used: now,
            effects: Effects::default(),
        }
    }

    // --- What the queue holds -------------------------------------------

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Ready messages, in memory and stored.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    pub fn unacked(&self) -> u32 {
        self.unacked
    }

    pub fn delayed_count(&self) -> usize {
        self.delayed.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    pub fn consumers(&self) -> impl Iterator<Item = &Consumer<C>> {
        self.consumers.iter()
    }

    pub fn consumer(&self, index: usize) -> Option<&Consumer<C>> {
        self.consumers.get(index)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn in_memory(&self) -> usize {
        self.ready.in_memory()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.ready.memory_bytes()
    }

    pub fn stored_count(&self) -> u64 {
        self.ready.stored_count()
    }

    pub fn level_count(&self) -> usize {
        self.ready.level_count()
    }

    /// New messages of `level` must go to the store while part of the level
    /// is there, to keep its memory window ahead of its stored region.
    pub fn is_paging(&self, level: u8) -> bool {
        self.ready.is_paging(level)
    }

    /// Ready messages that would survive a restart, per level.
    pub fn durable_ready(&self) -> Vec<(u8, u64)> {
        let mut by_level = self.ready.durable_by_level();
        for m in self.delayed.values() {
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

    /// Where each level's stored region starts.
    pub fn stored_from(&self) -> Vec<(u8, u64)> {
        (0..self.ready.level_count())
            .map(|l| (l as u8, self.ready.stored(l as u8)))
            .filter(|(_, r)| r.count > 0)
            .map(|(l, r)| (l, r.from))
            .collect()
    }

    fn counts_deliveries(&self) -> bool {
        self.queue_type == QueueType::Quorum
            || self.settings.delivery_limit != DeliveryLimit::Unlimited
            || self.settings.delayed_retry.is_some()
    }

    /// Messages the length limits count: ready and delayed.
    fn length(&self) -> u64 {
        (self.ready.len() + self.delayed.len()) as u64
    }

    /// Whether one more message would be refused (`reject-publish`).
    fn is_full(&self) -> bool {
        let s = &self.settings;
        s.max_length.is_some_and(|max| self.length() >= max)
            || s.max_length_bytes
                .is_some_and(|max| self.ready.bytes() >= max)
    }

    fn is_over_limit(&self) -> bool {
        let s = &self.settings;
        s.max_length.is_some_and(|max| self.length() > max)
            || s.max_length_bytes
                .is_some_and(|max| self.ready.bytes() > max)
    }

    // --- Time -------------------------------------------------------------

    /// When an unused queue expires (`x-expires`), if it can.
    pub fn expires_deadline(&self) -> Option<u64> {
        let expires = self.settings.expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used.saturating_add(expires))
    }

    /// The earliest time anything of this queue is due.
    pub fn next_wake(&self) -> Option<u64> {
        [
            self.expiry.next_wake(),
            self.delayed.first_key_value().map(|((at, _), _)| *at),
            self.expires_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The queue was used (declared again, consumed from).
    pub fn touch(&mut self, now: u64) {
        self.last_used = now;
    }

    /// Move delayed messages whose time has come back to the ready list.
    pub fn promote_delayed(&mut self, now: &Now) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now.get() {
                break;
            }
            let m = entry.remove();
            self.ready.insert_ordered(m);
        }
    }

    /// The next message whose expiry time has passed, if any.
    pub fn pop_expired(&mut self, now: &Now) -> Option<(u8, u64)> {
        if self.expiry.is_empty() {
            return None;
        }
        self.expiry
            .pop_due(now.get())
            .map(|(_, level, seq)| (level, seq))
    }

    /// Expire message `seq` of `level` wherever it is. `Some` if it is in
    /// the store: the caller takes it out there (reading it only if the
    /// queue dead-letters) and reports with [`stored_taken`](Self::stored_taken).
    pub fn expire(&mut self, level: u8, seq: u64) -> Option<(u8, u64)> {
        match self.ready.remove(level, seq) {
            Found::Memory(m) => {
                self.expiry.remove(m.expires_at, level, seq);
                self.die(m, Reason::Expired);
                None
            }
            Found::Stored => Some((level, seq)),
            Found::Missing => {
                let key = self
                    .delayed
                    .iter()
                    .find(|(_, m)| m.seq == seq && m.level == level)
                    .map(|(k, _)| *k);
                if let Some(m) = key.and_then(|k| self.delayed.remove(&k)) {
                    self.die(m, Reason::Expired);
                }
                None
            }
        }
    }

    /// A stored message of `level` was taken out of the store where it sat
    /// (`None`: it was not there).
    pub fn stored_taken(&mut self, level: u8, taken: Option<TakenMessage>) {
        if let Some(taken) = taken {
            self.ready.remove_stored(level, taken.bytes, taken.durable);
            if let Some(message) = taken.message {
                self.bury(Arc::new(message), Reason::Expired);
            }
        }
    }

    // --- Publishing -------------------------------------------------------

    /// Decide whether the queue takes `message`, and where it goes.
    pub fn admit(&mut self, message: &Arc<Message>, now: &Now) -> Admit {
        if self.deleted {
            return Admit::Gone;
        }
        if self.settings.overflow.rejects_publish() && self.is_full() {
            if self.settings.overflow == Overflow::RejectPublishDlx {
                self.bury(message.clone(), Reason::MaxLen);
            }
            return Admit::Rejected;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let level = self.ready.level_for(message.priority);
        let expires_at = if self.settings.message_ttl.is_some() || message.expiration_ms.is_some() {
            expiry_time(now.get(), self.settings.message_ttl, message.expiration_ms)
        } else {
            0
        };
        Admit::Accepted(Admission {
            seq,
            level,
            expires_at,
        })
    }

    /// Add an admitted message: in memory, or (`paged`) only in the store.
    /// `stored` says whether the store holds a durable entry for it.
    pub fn enqueue(&mut self, a: Admission, message: Arc<Message>, stored: Stored, paged: bool) {
        self.expiry.add(a.expires_at, a.level, a.seq);
        if paged {
            let bytes = message.body_size() as u64;
            self.ready
                .push_stored(a.level, a.seq, bytes, stored != Stored::No);
        } else {
            let m = QueuedMessage::new(a.seq, a.level, message, stored, a.expires_at);
            self.ready.push_back(m);
        }
    }

    /// A TTL of 0 means "now or never": once dispatching had its chance,
    /// a message not taken expires at once (RabbitMQ).
    pub fn now_or_never(&mut self, a: Admission, now: &Now) -> Option<(u8, u64)> {
        if a.expires_at != 0 && a.expires_at <= now.get() {
            return self.expire(a.level, a.seq);
        }
        None
    }

    /// Drop messages from the head while the queue is over its length
    /// limits (`drop-head`).
    pub fn enforce_limits(&mut self, may_page: bool) -> Result<(), PageRequest> {
        if self.settings.overflow != Overflow::DropHead || !self.settings.has_length_limit() {
            return Ok(());
        }
        while self.is_over_limit() {
            match self.take_head(may_page) {
                Head::Message(m) => self.die(m, Reason::MaxLen),
                Head::Page(r) => return Err(r),
                Head::Empty => break,
            }
        }
        Ok(())
    }

    // --- Taking messages --------------------------------------------------

    /// Whether `level` should read its next page from the store.
    pub fn wants_page(&self, level: u8) -> Option<PageRequest> {
        self.ready
            .wants_page(level, self.page_batch)
            .map(|r| PageRequest {
                level,
                from: r.from,
                count: self.page_batch,
            })
    }

    /// The message at the head of the queue (highest priority first). With
    /// `may_page`, asks for a page first when the head level runs low.
    fn take_head(&mut self, may_page: bool) -> Head {
        loop {
            let Some(level) = self.ready.top_level() else {
                return Head::Empty;
            };
            if may_page && let Some(r) = self.wants_page(level) {
                return Head::Page(r);
            }
            match self.ready.pop_front(level) {
                Some(m) => {
                    self.expiry.remove(m.expires_at, m.level, m.seq);
                    return Head::Message(m);
                }
                // The store could not be read; try again later.
                None if self.ready.is_paging(level) => return Head::Empty,
                None => continue,
            }
        }
    }

    /// The next message to deliver, expiring what has expired on the way.
    fn next_ready(&mut self, now: &Now, may_page: bool) -> Head {
        loop {
            match self.take_head(may_page) {
                Head::Message(m) if m.expires_at != 0 && has_expired(m.expires_at, now.get()) => {
                    self.die(m, Reason::Expired);
                }
                other => return other,
            }
        }
    }

    /// The next delivery to a consumer. `ready` says whether a consumer's
    /// channel can take one now.
    pub fn dispatch_next(
        &mut self,
        now: &Now,
        may_page: bool,
        mut ready: impl FnMut(&Consumer<C>) -> bool,
    ) -> Next {
        if self.ready.is_empty() || self.consumers.is_empty() {
            return Next::Idle;
        }
        let Some((index, cursor)) = self.consumers.pick(&mut ready) else {
            return Next::Idle;
        };
        let message = match self.next_ready(now, may_page) {
            Head::Message(m) => m,
            // The same consumer is picked again once the page is in.
            Head::Page(r) => return Next::Page(r),
            Head::Empty => {
                self.consumers.commit(cursor);
                return Next::Idle;
            }
        };
        self.consumers.commit(cursor);
        let Some(consumer) = self.consumers.get_mut(index) else {
            return Next::Idle;
        };
        if consumer.no_ack {
            self.forget(&message);
        } else {
            consumer.unacked += 1;
            self.unacked += 1;
        }
        Next::Deliver {
            consumer: index,
            message,
        }
    }

    /// `basic.get`: take the head message.
    pub fn get(&mut self, now: &Now, no_ack: bool, may_page: bool) -> Got {
        self.last_used = now.get();
        self.promote_delayed(now);
        match self.next_ready(now, may_page) {
            Head::Message(m) => {
                if no_ack {
                    self.forget(&m);
                } else {
                    self.unacked += 1;
                }
                let left = self.ready.len() as u32;
                Got::Message { message: m, left }
            }
            Head::Page(r) => Got::Page(r),
            Head::Empty => Got::Empty,
        }
    }

    /// A page read for `request`, in sequence order (empty: the store holds
    /// nothing more of the level).
    pub fn paged_in(&mut self, request: PageRequest, page: Vec<Recovered>) {
        let level = request.level;
        if page.is_empty() {
            self.ready.stored_exhausted(level);
            return;
        }
        let next = page.last().map_or(request.from, |r| r.seq + 1);
        let full = page.len() >= request.count;
        let through = self.redelivered_through;
        let counts = self.counts_deliveries();
        let mut delayed = Vec::new();
        let QueueCore { ready, expiry, .. } = self;
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
                    redelivered: r.delivery.is_some() || through.is_some_and(|t| r.seq <= t),
                    delivery,
                    ..QueuedMessage::new(r.seq, level, message, r.stored, r.expires_at_ms)
                }
            }),
            next,
        );
        for seq in delayed {
            if let Found::Memory(m) = self.ready.remove(level, seq) {
                self.delayed.insert((m.delivery.not_before_ms, seq), m);
            }
        }
        if !full {
            // The store holds nothing more: any remaining count was an
            // overestimate from crash recovery.
            self.ready.stored_exhausted(level);
        }
    }

    // --- Settling ---------------------------------------------------------

    /// Delivered messages were settled: free their consumer's credit.
    pub fn settle(&mut self, consumer: Option<ConsumerId>, n: u32) {
        self.unacked = self.unacked.saturating_sub(n);
        if let Some(id) = consumer
            && let Some(c) = self.consumers.find_mut(id)
        {
            c.unacked = c.unacked.saturating_sub(n);
        }
    }

    /// Rejected without requeueing: dropped, or dead-lettered `rejected`.
    pub fn discard(&mut self, consumer: Option<ConsumerId>, messages: Vec<QueuedMessage>) {
        self.settle(consumer, messages.len() as u32);
        for m in messages {
            self.die(m, Reason::Rejected);
        }
    }

    /// Put delivered messages back at their original positions, marked
    /// redelivered — unless they are past the delivery limit (then they
    /// die) or must wait out a retry delay first.
    pub fn requeue(
        &mut self,
        consumer: Option<ConsumerId>,
        messages: Vec<QueuedMessage>,
        why: Return,
        now: &Now,
    ) {
        self.settle(consumer, messages.len() as u32);
        if self.deleted {
            return;
        }
        let counts = self.counts_deliveries();
        for mut m in messages {
            let failed = why == Return::Failed;
            let count = if failed {
                m.delivery.failed += 1;
                m.delivery.failed
            } else {
                m.delivery.returned += 1;
                m.delivery.returned
            };
            if let DeliveryLimit::Max(limit) = self.settings.delivery_limit
                && failed
                && m.delivery.failed > limit
            {
                self.die(m, Reason::DeliveryLimit);
                continue;
            }
            let delay = self
                .settings
                .delayed_retry
                .map_or(0, |r| r.delay_ms(failed, count));
            m.delivery.not_before_ms = if delay > 0 { now.get() + delay } else { 0 };
            // The delivery state is recorded so that the message is still
            // flagged redelivered (and counted, and delayed) after a
            // restart; once marked, an uncounted return needs no new write.
            if m.stored != Stored::No && (!m.redelivered || counts || delay > 0) {
                self.effects.store.push(StoreOp::Mark {
                    level: m.level,
                    seq: m.seq,
                    state: m.delivery,
                });
            }
            if counts && m.delivery.failed > 0 {
                m.message = with_delivery_count(&m.message, m.delivery.failed);
            }
            m.redelivered = true;
            self.expiry.add(m.expires_at, m.level, m.seq);
            if delay > 0 {
                self.delayed.insert((m.delivery.not_before_ms, m.seq), m);
            } else {
                self.ready.insert_ordered(m);
            }
        }
    }

    // --- Consumers ----------------------------------------------------------

    pub fn add_consumer(&mut self, consumer: Consumer<C>, now: u64) -> Result<(), ConsumeRefused> {
        if self.deleted {
            return Err(ConsumeRefused::Deleted);
        }
        if self.consumers.has_exclusive() || (consumer.exclusive && !self.consumers.is_empty()) {
            return Err(ConsumeRefused::Exclusive);
        }
        self.consumers.add(consumer);
        self.had_consumer = true;
        self.last_used = now;
        Ok(())
    }

    /// Remove a consumer; `None` if it was not there.
    pub fn cancel(&mut self, id: ConsumerId, now: u64) -> Option<Consumer<C>> {
        let removed = self.consumers.remove(id)?;
        self.last_used = now;
        Some(removed)
    }

    /// Whether a consumer receives messages now (single active consumer:
    /// only one does).
    pub fn is_active_consumer(&self, id: ConsumerId) -> bool {
        self.consumers.is_active(id)
    }

    /// Had consumers once and has none now (an auto-delete queue goes).
    pub fn lost_all_consumers(&self) -> bool {
        self.had_consumer && self.consumers.is_empty() && !self.deleted
    }

    // --- Whole-queue changes ------------------------------------------------

    /// A policy was set or cleared.
    pub fn apply_settings(&mut self, settings: QueueSettings) {
        self.settings = settings;
    }

    /// Drop every ready and every delayed message.
    pub fn purge(&mut self) -> Purged {
        let count = self.ready.len() as u32;
        let (mut messages, regions) = self.ready.take_all();
        messages.extend(std::mem::take(&mut self.delayed).into_values());
        self.expiry.clear();
        let to = self.next_seq;
        Purged {
            count,
            messages,
            ranges: regions
                .into_iter()
                .map(|(level, r)| (level, r.from, to))
                .collect(),
        }
    }

    /// Mark the queue deleted, dropping its messages and consumers.
    pub fn delete(&mut self, if_unused: bool, if_empty: bool) -> Result<Deleted<C>, DeleteRefused> {
        if if_empty && !self.ready.is_empty() {
            return Err(DeleteRefused::NotEmpty);
        }
        if if_unused && !self.consumers.is_empty() {
            return Err(DeleteRefused::InUse);
        }
        self.deleted = true;
        let consumers = self.consumers.take_all();
        let count = self.ready.len() as u32;
        let (messages, _) = self.ready.take_all();
        self.delayed.clear();
        self.expiry.clear();
        Ok(Deleted {
            count,
            messages,
            consumers,
        })
    }

    // --- Recovery -----------------------------------------------------------

    /// A level found in the store at boot: sequence numbers `first..=last`,
    /// `count` messages (exact after a clean shutdown, else an estimate).
    pub fn restore_level(&mut self, level: u8, first: u64, last: u64, count: u64, clean: bool) {
        self.next_seq = self.next_seq.max(last + 1);
        if !clean {
            self.redelivered_through = Some(self.redelivered_through.unwrap_or(0).max(last));
        }
        let region = StoredRegion {
            from: first,
            count,
            durable: count,
            bytes: 0,
        };
        self.ready.set_stored(level, region);
    }

    /// Replace a recovered level's estimated size with a counted one, if
    /// nothing has been read from the store since.
    pub fn set_recovered_count(&mut self, level: u8, from: u64, count: u64) {
        let region = self.ready.stored(level);
        if region.from == from && region.count > 0 {
            let counted = StoredRegion {
                count,
                durable: count,
                ..region
            };
            self.ready.set_stored(level, counted);
        }
    }

    // --- Leaving the queue ----------------------------------------------------

    /// A message leaves for good without reaching a consumer: its record
    /// goes, and it is dead-lettered.
    fn die(&mut self, m: QueuedMessage, reason: Reason) {
        self.forget(&m);
        self.bury(m.message, reason);
    }

    fn forget(&mut self, m: &QueuedMessage) {
        if m.stored != Stored::No {
            self.effects.store.push(StoreOp::Remove {
                level: m.level,
                seq: m.seq,
                stored: m.stored,
                marked: m.redelivered,
            });
        }
    }

    /// Keep a dead message for dead-lettering, if the queue has somewhere
    /// to send it.
    fn bury(&mut self, message: Arc<Message>, reason: Reason) {
        if self.settings.dead_letter.is_some() {
            self.effects.dead.push((message, reason));
        }
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
