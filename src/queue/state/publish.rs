//! Messages coming in: admission (length limits, overflow), placement
//! (priority level, expiry time), and what a length limit drops.

use std::sync::Arc;

use super::super::args::Overflow;
use super::super::expiry::expiry_time;
use super::super::queued::{QueuedMessage, Reason};
use super::{Admission, Admit, Head, Now, PageRequest, QueueCore};
use crate::message::Message;
use crate::store::Stored;

impl<C> QueueCore<C> {
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
            let m = QueuedMessage::new(a.seq, a.level, message.clone(), stored, a.expires_at);
            self.ready.push_back(m);
            self.replace_last_value(&message, a.level, a.seq);
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
}
