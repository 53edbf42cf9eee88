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
//!
//! `outputs` holds what it hands back, `publish` how messages come in,
//! `delivery` how they go out and come back.

mod delivery;
mod erase;
mod last_value;
mod outputs;
mod publish;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::args::{DeliveryLimit, QueueArgs, QueueSettings, QueueType};
use super::consumer::{Consumer, Consumers};
use super::expiry::ExpiryIndex;
use super::queued::{QueuedMessage, Reason};
use super::ready::{Found, ReadyList, StoredRegion};
use crate::message::Message;
use crate::store::{Stored, TakenMessage};

pub use erase::EraseAt;
use outputs::Head;
pub use outputs::{
    Admission, Admit, ConsumeRefused, DeleteRefused, Deleted, Effects, Got, Next, Now, PageRequest,
    PageTicket, Purged, StoreOp, StoredFrom,
};

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
    /// The level whose next page is being read (with the queue unlocked).
    paging: Option<u8>,
    /// Bumped when stored regions are dropped (purge, delete): a page read
    /// before that is discarded.
    generation: u64,
    /// Stored messages that expired while their level's page was being
    /// read: expired once it is in.
    expire_later: Vec<(u8, u64)>,
    /// A last-value queue's index (see `last_value`).
    last_values: Option<last_value::LastValues>,
    /// Erasures delivered messages may still come back to (see `erase`).
    erasing: Vec<erase::Erasing>,
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
            paging: None,
            generation: 0,
            expire_later: Vec::new(),
            last_values: args.last_value_key.clone().map(last_value::LastValues::new),
            erasing: Vec::new(),
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

    /// Ready persistent messages (those paged out of a transient queue are
    /// not told apart and count as transient).
    pub fn persistent_ready(&self) -> u64 {
        self.ready.persistent()
    }

    /// Up to `n` ready messages from the head, left in place (browsing).
    pub fn peek(&self, n: usize) -> Vec<QueuedMessage> {
        self.ready.peek(n)
    }

    /// When the oldest ready message was received, if known.
    pub fn oldest_ready_received_ms(&self) -> Option<u64> {
        self.ready.oldest_received_ms()
    }

    /// Body bytes of the ready messages, in memory or stored.
    pub fn ready_bytes(&self) -> u64 {
        self.ready.bytes()
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
    pub fn stored_from(&self) -> Vec<StoredFrom> {
        (0..self.ready.level_count() as u8)
            .map(|level| (level, self.ready.stored(level)))
            .filter(|(_, r)| r.count > 0)
            .map(|(level, r)| StoredFrom {
                level,
                from: r.from,
                pushed: self.ready.pushed(level),
            })
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
            Found::Stored if self.paging == Some(level) => {
                self.expire_later.push((level, seq));
                None
            }
            Found::Stored => Some((level, seq)),
            Found::Missing => {
                if let Some(m) = self.take_delayed(level, seq) {
                    self.die(m, Reason::Expired);
                }
                None
            }
        }
    }

    /// Take message `seq` of `level` out of those waiting out a retry
    /// delay, if it is there.
    fn take_delayed(&mut self, level: u8, seq: u64) -> Option<QueuedMessage> {
        let key = self
            .delayed
            .iter()
            .find(|(_, m)| m.seq == seq && m.level == level)
            .map(|(k, _)| *k)?;
        self.delayed.remove(&key)
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

    // --- Whole-queue changes ------------------------------------------------

    /// A policy was set or cleared.
    pub fn apply_settings(&mut self, settings: QueueSettings) {
        self.settings = settings;
    }

    /// A page of `level` is to be read with the queue unlocked: `None` if
    /// one is being read already (the caller goes on with what is in
    /// memory), else the ticket to hand back with it.
    pub fn begin_page(&mut self, level: u8) -> Option<PageTicket> {
        if self.paging.is_some() {
            return None;
        }
        self.paging = Some(level);
        self.ready.begin_read(level);
        Some(PageTicket {
            generation: self.generation,
            before: self.next_seq,
        })
    }

    /// The page begun with `ticket` is read (`None`: it could not be).
    /// It is taken in unless the stored regions were dropped meanwhile.
    /// Returns the stored messages that expired while it was read, to
    /// expire now.
    pub fn end_page(
        &mut self,
        request: PageRequest,
        ticket: PageTicket,
        page: Option<Vec<crate::store::Recovered>>,
        now: &Now,
    ) -> Vec<(u8, u64)> {
        self.paging = None;
        let arrived = self.ready.end_read(request.level);
        if let Some(page) = page
            && ticket.generation == self.generation
            && !self.deleted
        {
            self.paged_in(request, page, arrived, now);
        }
        std::mem::take(&mut self.expire_later)
    }

    /// A stored message taken where it sat, with the queue unlocked, under
    /// a read begun with `ticket`; like [`end_page`](Self::end_page).
    pub fn end_take(
        &mut self,
        level: u8,
        ticket: PageTicket,
        taken: Option<TakenMessage>,
    ) -> Vec<(u8, u64)> {
        self.paging = None;
        self.ready.end_read(level);
        if ticket.generation == self.generation && !self.deleted {
            self.stored_taken(level, taken);
        }
        std::mem::take(&mut self.expire_later)
    }

    /// Expire a stored message once the store read in flight is done.
    pub fn defer_expiry(&mut self, level: u8, seq: u64) {
        self.expire_later.push((level, seq));
    }

    /// Drop every ready and every delayed message; the count is of both
    /// (whether a message waiting out a retry delay is still in the store
    /// or already read back makes no difference to it).
    pub fn purge(&mut self) -> Purged {
        let count = self.length() as u32;
        let (mut messages, regions) = self.ready.take_all();
        self.generation += 1;
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
        self.generation += 1;
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
    pub fn restore_level(&mut self, level: u8, first: u64, last: u64, count: u64) {
        self.next_seq = self.next_seq.max(last + 1);
        let region = StoredRegion {
            from: first,
            count,
            durable: count,
            bytes: 0,
        };
        self.ready.set_stored(level, region);
    }

    /// Messages up to `seq` come back flagged redelivered (after a crash,
    /// nobody can know which of them were delivered just before it). New
    /// messages are numbered past it, so the flag never reaches them.
    pub fn set_redelivered_through(&mut self, seq: u64) {
        self.redelivered_through = Some(self.redelivered_through.map_or(seq, |s| s.max(seq)));
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// The last sequence number in use, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }

    /// Replace a recovered level's estimated size with one counted from
    /// `at`, if nothing has been read from the store since. Messages kept
    /// in the store since `at` are added: the count may have missed them,
    /// and a region counted short would leave its last messages unread.
    pub fn set_recovered_count(&mut self, at: StoredFrom, count: u64) {
        let region = self.ready.stored(at.level);
        if region.from == at.from && region.count > 0 {
            let count = count + self.ready.pushed(at.level).saturating_sub(at.pushed);
            let counted = StoredRegion {
                count,
                durable: count,
                ..region
            };
            self.ready.set_stored(at.level, counted);
        }
    }

    // --- Leaving the queue ----------------------------------------------------

    /// A message leaves for good without reaching a consumer: its record
    /// goes, and it is dead-lettered.
    fn die(&mut self, m: QueuedMessage, reason: Reason) {
        self.forget(&m);
        if self.erasing.is_empty() || !self.was_erased(&m) {
            self.bury(m.message, reason);
        }
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
    /// to send it (or for its span, while messages are traced).
    fn bury(&mut self, message: Arc<Message>, reason: Reason) {
        if self.settings.dead_letter.is_some() || crate::telemetry::enabled() {
            self.effects.dead.push((message, reason));
        }
    }
}
