//! Messages going out and coming back: taking the head (refilling from the
//! store, expiring on the way), choosing the consumer, `basic.get`, and
//! settling — ack, reject, requeue with retry delays and delivery limits.

use std::sync::Arc;

use amq_protocol::types::AMQPValue;

use super::super::args::DeliveryLimit;
use super::super::consumer::{Consumer, ConsumerId};
use super::super::expiry::has_expired;
use super::super::queued::{QueuedMessage, Reason, Return};
use super::super::ready::{Found, StoredRegion};
use super::{ConsumeRefused, Got, Head, Next, Now, PageRequest, QueueCore, StoreOp};
use crate::message::{self, Message};
use crate::store::{Recovered, Stored};

impl<C> QueueCore<C> {
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
    pub(super) fn take_head(&mut self, may_page: bool) -> Head {
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
    pub(super) fn paged_in(
        &mut self,
        request: PageRequest,
        page: Vec<Recovered>,
        arrived: StoredRegion,
        now: &Now,
    ) {
        let level = request.level;
        if page.is_empty() {
            // Nothing was left when the read began: what is left is what
            // arrived since.
            self.ready.set_stored(level, arrived);
            return;
        }
        let next = page.last().map_or(request.from, |r| r.seq + 1);
        let full = page.len() >= request.count;
        let through = self.redelivered_through;
        let counts = self.counts_deliveries();
        let mut delayed = Vec::new();
        let mut read = Vec::new();
        let last_value = self.is_last_value();
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
                // A retry delay that has run out while the message sat in
                // the store is over: it is ready, in its place.
                if delivery.not_before_ms > 0 && delivery.not_before_ms > now.get() {
                    delayed.push(r.seq);
                }
                if last_value {
                    read.push((message.clone(), r.seq));
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
        // Read back in order, each replaces an older one with its value
        // (a last-value queue restored from the store).
        for (message, seq) in read {
            self.replace_last_value(&message, level, seq);
        }
        if !full {
            // The store held nothing more when the read began: what is left
            // is what arrived since; anything else counted was an
            // overestimate from crash recovery.
            self.ready.set_stored(level, arrived);
        }
    }

    // --- Settling ---------------------------------------------------------

    /// Delivered messages were settled: free their consumer's credit, and
    /// note when it last settled (what operators see as its ack lag).
    pub fn settle(&mut self, consumer: Option<ConsumerId>, n: u32, now: &Now) {
        self.unacked = self.unacked.saturating_sub(n);
        if let Some(id) = consumer
            && let Some(c) = self.consumers.find_mut(id)
        {
            c.unacked = c.unacked.saturating_sub(n);
            c.last_settled_ms = now.get();
        }
    }

    /// Rejected without requeueing: dropped, or dead-lettered `rejected`.
    pub fn discard(
        &mut self,
        consumer: Option<ConsumerId>,
        messages: Vec<QueuedMessage>,
        now: &Now,
    ) {
        self.settle(consumer, messages.len() as u32, now);
        for m in messages {
            self.die(m, Reason::Rejected);
        }
        self.erasures_done();
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
        self.settle(consumer, messages.len() as u32, now);
        if self.deleted {
            return;
        }
        let counts = self.counts_deliveries();
        for mut m in messages {
            if !self.erasing.is_empty() && self.was_erased(&m) {
                self.forget(&m);
                continue;
            }
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
        self.erasures_done();
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
