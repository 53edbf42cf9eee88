//! Erasure by header: matching messages leave the queue wherever they
//! are — ready in memory, waiting out a retry delay, in the store, or out
//! with a consumer — and are never dead-lettered (an erased message must
//! not turn up anywhere else).
//!
//! The core erases what it holds in memory; the shell finds the stored
//! ones and erases them one by one ([`QueueCore::erase_at`]). Delivered
//! messages are not the queue's to take: while they are out, the
//! erasure is remembered, and a matching one that comes back (requeued,
//! rejected, its channel closed) is dropped instead of returning.

use std::sync::Arc;

use super::super::queued::QueuedMessage;
use super::super::ready::Found;
use super::QueueCore;
use crate::message::HeaderMatch;

/// Where a stored message to erase was found.
#[derive(Debug, PartialEq, Eq)]
pub enum EraseAt {
    /// Erased (it was in memory by now).
    Erased,
    /// Still in the store: the caller takes it out there (without
    /// reading it) and reports with `stored_taken`.
    Stored,
    /// A page is being read: wait for it, then ask again.
    Busy,
    /// Not ready: delivered and not settled, or settled meanwhile.
    NotReady,
}

/// An erasure delivered messages may still come back to: it applies to
/// messages numbered below `before`.
#[derive(Debug)]
pub(super) struct Erasing {
    header: Arc<HeaderMatch>,
    before: u64,
}

impl<C> QueueCore<C> {
    /// Erase the matching messages held in memory (ready and delayed);
    /// returns how many. Delivered ones are erased if they come back.
    pub fn erase_in_memory(&mut self, header: &Arc<HeaderMatch>) -> u64 {
        let found = self.ready.find_in_memory(|m| header.matches(&m.properties));
        let mut erased = 0;
        for (level, seq) in found {
            if let Found::Memory(m) = self.ready.remove(level, seq) {
                self.erase(m);
                erased += 1;
            }
        }
        let delayed: Vec<_> = self
            .delayed
            .iter()
            .filter(|(_, m)| header.matches(&m.message.properties))
            .map(|(k, _)| *k)
            .collect();
        for key in delayed {
            if let Some(m) = self.delayed.remove(&key) {
                self.erase(m);
                erased += 1;
            }
        }
        // Kept until nothing is out with consumers: a message delivered
        // after this, while the shell erases the stored ones, counts too.
        self.erasures_done();
        self.erasing.push(Erasing {
            header: header.clone(),
            before: self.next_seq,
        });
        erased
    }

    /// Erase message `seq` of `level`, which the store holds.
    pub fn erase_at(&mut self, level: u8, seq: u64) -> EraseAt {
        // A page in flight may be bringing it into memory, and a store
        // read taken now could not tell.
        if self.paging.is_some() {
            return EraseAt::Busy;
        }
        match self.ready.remove(level, seq) {
            Found::Memory(m) => {
                self.erase(m);
                EraseAt::Erased
            }
            Found::Stored => EraseAt::Stored,
            Found::Missing => match self.take_delayed(level, seq) {
                Some(m) => {
                    self.erase(m);
                    EraseAt::Erased
                }
                None => EraseAt::NotReady,
            },
        }
    }

    /// Whether a message coming back from a consumer was erased while it
    /// was out.
    pub(super) fn was_erased(&self, m: &QueuedMessage) -> bool {
        self.erasing
            .iter()
            .any(|e| m.seq < e.before && e.header.matches(&m.message.properties))
    }

    /// Nothing is out with consumers any more: no message can come back
    /// to an erasure.
    pub fn erasures_done(&mut self) {
        if self.unacked == 0 {
            self.erasing.clear();
        }
    }

    fn erase(&mut self, m: QueuedMessage) {
        self.expiry.remove(m.expires_at, m.level, m.seq);
        self.forget(&m);
    }
}
