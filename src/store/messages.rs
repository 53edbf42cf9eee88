//! Queue contents, one message at a time: accepting durable entries and
//! paged-out transient messages, delivery states, reading a queue level
//! back in, and removing a message (acked, dropped, or where it sits).
//!
//! Nothing here writes to the backend on the caller's thread: durable
//! entries, paged messages and delivery states go to [`Unwritten`], which
//! the group-commit thread writes. Reads merge what is written with what is
//! not yet. Format-2 stores may still hold single-entry `q` keys (and shared
//! bodies); those are read and removed here, never written.
//!
//! [`Unwritten`]: super::unwritten::Unwritten

use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use super::batches::ReadEntry;
use super::records::{
    DeliveryState, Slot, decode_delivery, decode_record, id_key, key, level_range, record_body_len,
    seq_of, u64_at,
};
use super::{Store, StoreError, StoreResult, Tree};
use crate::message::Message;

/// Where a queued message lives in the store, as its queue knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Only in memory.
    No,
    /// A durable queue entry.
    Entry,
    /// A format-2 entry referring to a body shared with other queues.
    Shared(u64),
    /// A transient message paged out to the store.
    Paged,
}

impl Stored {
    /// Whether it survives a restart (paged-out transient messages do not).
    pub fn is_durable(self) -> bool {
        matches!(self, Stored::Entry | Stored::Shared(_))
    }
}

/// A stored message removed where it sat.
#[derive(Debug)]
pub struct TakenMessage {
    /// Its body size.
    pub bytes: u64,
    /// Whether it was a durable entry (else a paged-out transient message).
    pub durable: bool,
    /// The message, if asked for.
    pub message: Option<Message>,
}

/// A message read back from the store.
#[derive(Debug)]
pub struct Recovered {
    pub seq: u64,
    pub message: Message,
    pub expires_at_ms: u64,
    /// Set if it had been delivered and returned before.
    pub delivery: Option<DeliveryState>,
    /// How it is stored now (paged messages come back as `No`: reading
    /// them takes them out of the store).
    pub stored: Stored,
}

/// Serialises read-modify-write of format-2 shared reference counts.
static REFS: Mutex<()> = Mutex::new(());

impl Store {
    /// Accept a durable queue entry: durable after the next group commit,
    /// and never written at all if it is removed (acknowledged) first.
    pub fn put_entry(&self, slot: Slot, expires_at_ms: u64, message: &Arc<Message>) -> Stored {
        let urgent = self
            .unwritten
            .entries
            .put(slot, expires_at_ms, message.clone());
        self.wrote(urgent);
        Stored::Entry
    }

    /// Page a transient message out of memory: it lives in the store (in
    /// memory until written) until it is read back.
    pub fn page_out(&self, slot: Slot, expires_at_ms: u64, message: &Arc<Message>) -> Stored {
        let urgent = self
            .unwritten
            .paged
            .put(slot, expires_at_ms, message.clone());
        self.wrote(urgent);
        Stored::Paged
    }

    /// Something is waiting to be written: within the flush interval, or
    /// right away if too much is.
    fn wrote(&self, urgent: bool) {
        if urgent {
            self.commit.wake();
        } else {
            self.commit.touch();
        }
    }

    /// Record the delivery state of a stored message that came back, so it
    /// is still flagged redelivered (and counted, and delayed) after a
    /// restart.
    pub fn set_delivery(&self, slot: Slot, state: DeliveryState) {
        self.unwritten.mark(slot, Some(state));
        self.commit.touch();
    }

    /// Forget a queue's message (acked, dropped, purged). `marked`: it may
    /// have a delivery state.
    pub fn remove(&self, slot: Slot, stored: Stored, marked: bool) -> StoreResult<()> {
        if marked && stored.is_durable() {
            self.unwritten.mark(slot, None);
        }
        match stored {
            Stored::No => Ok(()),
            Stored::Paged => {
                self.unwritten.paged.remove(slot);
                Ok(())
            }
            Stored::Entry => {
                self.commit.touch();
                if self.unwritten.entries.remove(slot) {
                    Ok(())
                } else {
                    self.note(self.backend.remove(Tree::Messages, &key(b'q', slot)))
                }
            }
            Stored::Shared(id) => {
                self.note(self.backend.remove(Tree::Messages, &key(b'q', slot)))?;
                self.release_shared(id)
            }
        }
    }

    /// Drop one reference to a format-2 shared body, deleting it with the
    /// last.
    pub fn release_shared(&self, id: u64) -> StoreResult<()> {
        let b = self.backend.as_ref();
        let _guard = REFS.lock();
        let refs = match b.get(Tree::Messages, &id_key(b'r', id))? {
            Some(v) => u32::from_be_bytes(v.as_slice().try_into().unwrap_or([0; 4])),
            None => 0,
        };
        if refs <= 1 {
            self.note(b.remove(Tree::Messages, &id_key(b'm', id)))?;
            self.note(b.remove(Tree::Messages, &id_key(b'r', id)))
        } else {
            self.note(b.insert(Tree::Messages, &id_key(b'r', id), &(refs - 1).to_be_bytes()))
        }
    }

    /// A format-2 entry's expiry, message and kind; `None` if its shared
    /// body is gone (it cannot be delivered, so it is skipped, not allowed
    /// to wedge the queue).
    fn decode_entry(&self, value: &[u8]) -> StoreResult<Option<(u64, Message, Stored)>> {
        let corrupt = |d: &str| StoreError::corrupt("queue entry", d);
        let expires_at = u64_at(value, 0).ok_or_else(|| corrupt("truncated"))?;
        match value.get(8..).and_then(|v| v.split_first()) {
            Some((0, record)) => Ok(Some((expires_at, decode_record(record)?, Stored::Entry))),
            Some((1, id)) => {
                let id = u64_at(id, 0).ok_or_else(|| corrupt("bad shared id"))?;
                match self.backend.get(Tree::Messages, &id_key(b'm', id))? {
                    Some(record) => Ok(Some((
                        expires_at,
                        decode_record(&record)?,
                        Stored::Shared(id),
                    ))),
                    None => {
                        tracing::error!(
                            "skipping a stored message whose shared body {id} is missing"
                        );
                        Ok(None)
                    }
                }
            }
            _ => Err(corrupt("unknown kind")),
        }
    }

    /// The delivery state of a stored message, written or not.
    fn delivery_of(&self, slot: Slot) -> StoreResult<Option<DeliveryState>> {
        if let Some(state) = self.unwritten.mark_of(slot) {
            return Ok(state);
        }
        Ok(self
            .backend
            .get(Tree::Messages, &key(b'd', slot))?
            .map(|v| decode_delivery(&v)))
    }

    /// Read up to `limit` of a queue level's stored messages with sequence
    /// number `>= from`, in order: durable entries and paged transient
    /// messages merged. Paged messages leave the store as they are read.
    pub fn page_in(
        &self,
        uid: u64,
        level: u8,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<Recovered>> {
        self.page_in_before(uid, level, from, u64::MAX, limit)
    }

    /// [`page_in`](Self::page_in) for sequence numbers `from..before` only:
    /// a queue reading with itself unlocked asks for what it had handed to
    /// the store when the read began, so a short page means exactly that
    /// none of those are left.
    pub fn page_in_before(
        &self,
        uid: u64,
        level: u8,
        from: u64,
        before: u64,
        limit: usize,
    ) -> StoreResult<Vec<Recovered>> {
        let b = self.backend.as_ref();
        let seqs = from..before;
        let durable = self
            .unwritten
            .entries
            .read(b, uid, level, seqs.clone(), limit)?;
        let legacy = self.legacy_entries(uid, level, seqs.clone(), limit)?;
        let paged = self.unwritten.paged.read(b, uid, level, seqs, limit)?;
        let mut durable = durable.into_iter().peekable();
        let mut legacy = legacy.into_iter().peekable();
        let mut paged = paged.into_iter().peekable();
        let mut out = Vec::with_capacity(limit.min(64));
        while out.len() < limit {
            let next = [
                durable.peek().map(|e| e.seq),
                legacy.peek().map(|(e, _)| e.seq),
                paged.peek().map(|e| e.seq),
            ];
            let Some((source, _)) = next
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|s| (i, s)))
                .min_by_key(|(_, s)| *s)
            else {
                break;
            };
            let recovered = match source {
                0 => durable.next().map(|e| (e, Stored::Entry)),
                1 => legacy.next(),
                _ => paged.next().map(|e| (e, Stored::No)),
            };
            let Some((e, stored)) = recovered else { break };
            let slot = Slot {
                uid,
                level,
                seq: e.seq,
            };
            let delivery = if stored == Stored::No {
                self.unwritten.paged.remove(slot);
                None
            } else {
                self.delivery_of(slot)?
            };
            out.push(Recovered {
                seq: e.seq,
                message: e.message,
                expires_at_ms: e.expires_at,
                delivery,
                stored,
            });
        }
        Ok(out)
    }

    /// Every stored message of a queue's levels `0..levels` that `keep`
    /// selects, as (level, seq) in order: durable entries (ready, or
    /// delivered and not settled) and paged-out transient messages. Reads
    /// only; for erasure, which then takes them one by one.
    pub fn matching(
        &self,
        uid: u64,
        levels: usize,
        keep: &dyn Fn(&Message) -> bool,
    ) -> StoreResult<Vec<(u8, u64)>> {
        const PAGE: usize = 512;
        let b = self.backend.as_ref();
        let mut out = Vec::new();
        for level in 0..levels.min(256) {
            let level = level as u8;
            // Format-2 entries are few and old: read at once.
            for (e, _) in self.legacy_entries(uid, level, 0..u64::MAX, usize::MAX)? {
                if keep(&e.message) {
                    out.push((level, e.seq));
                }
            }
            for space in [&self.unwritten.entries, &self.unwritten.paged] {
                let mut from = 0;
                loop {
                    let page = space.read(b, uid, level, from..u64::MAX, PAGE)?;
                    let Some(last) = page.last().map(|e| e.seq) else {
                        break;
                    };
                    out.extend(
                        page.iter()
                            .filter(|e| keep(&e.message))
                            .map(|e| (level, e.seq)),
                    );
                    from = last + 1;
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Format-2 single entries of a level from `from` on, outside purged
    /// ranges.
    fn legacy_entries(
        &self,
        uid: u64,
        level: u8,
        seqs: Range<u64>,
        limit: usize,
    ) -> StoreResult<Vec<(ReadEntry, Stored)>> {
        let b = self.backend.as_ref();
        let purged = self.unwritten.entries.purged(b, uid, level)?;
        let (qf, qt) = level_range(b'q', uid, level, seqs.start);
        let mut out = Vec::new();
        for (k, v) in b.scan(Tree::Messages, &qf, &qt, limit)? {
            let Some(seq) = seq_of(&k) else { continue };
            if seq >= seqs.end {
                break;
            }
            if purged.iter().any(|(f, t)| (*f..*t).contains(&seq)) {
                continue;
            }
            if let Some((expires_at, message, stored)) = self.decode_entry(&v)? {
                out.push((
                    ReadEntry {
                        seq,
                        expires_at,
                        message,
                    },
                    stored,
                ));
            }
        }
        Ok(out)
    }

    /// Remove one message of a queue's stored region where it sits (it
    /// expired): its body size and durability, and the message itself if
    /// `read` (to dead-letter it). `transient_only`: the queue has no
    /// durable entries, so only paged-out messages need looking for.
    pub fn take_stored(
        &self,
        slot: Slot,
        read: bool,
        transient_only: bool,
    ) -> StoreResult<Option<TakenMessage>> {
        let b = self.backend.as_ref();
        if !transient_only {
            if let Some(taken) = self.unwritten.entries.take(b, slot, read)? {
                self.unwritten.mark(slot, None);
                self.commit.touch();
                return Ok(Some(taken));
            }
            if let Some(taken) = self.take_legacy(slot, read)? {
                return Ok(Some(taken));
            }
        }
        self.unwritten.paged.take(b, slot, read)
    }

    fn take_legacy(&self, slot: Slot, read: bool) -> StoreResult<Option<TakenMessage>> {
        let b = self.backend.as_ref();
        let corrupt = |d: &str| StoreError::corrupt("queue entry", d);
        let Some(v) = self.note(b.take(Tree::Messages, &key(b'q', slot)))? else {
            return Ok(None);
        };
        self.note(b.remove(Tree::Messages, &key(b'd', slot)))?;
        let (record, shared) = match v.get(8..).and_then(|v| v.split_first()) {
            Some((0, record)) => (record.to_vec(), None),
            Some((1, id)) => {
                let id = u64_at(id, 0).ok_or_else(|| corrupt("bad shared id"))?;
                match b.get(Tree::Messages, &id_key(b'm', id))? {
                    Some(record) => (record, Some(id)),
                    None => return Ok(None),
                }
            }
            _ => return Err(corrupt("unknown kind")),
        };
        let taken = TakenMessage {
            bytes: record_body_len(&record).ok_or_else(|| corrupt("truncated"))?,
            durable: true,
            message: if read {
                Some(decode_record(&record)?)
            } else {
                None
            },
        };
        if let Some(id) = shared {
            self.release_shared(id)?;
        }
        Ok(Some(taken))
    }
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
