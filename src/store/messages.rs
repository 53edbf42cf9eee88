//! Queue contents in the `messages` tree, one message at a time: writing
//! durable entries, shared bodies and delivery states, paging transient
//! messages out, reading a queue level back in, and removing a message
//! where it sits.
//!
//! The bytes are `records`' business and whole-queue or whole-range work
//! (bounds, counts, purge, boot-time clearing) is `ranges`'; this file only
//! combines them with the backend and the write-behind and paged buffers.

use parking_lot::Mutex;

use super::paged::{self, PagedEntry};
use super::records::{
    DeliveryState, Slot, decode_delivery, decode_record, encode_delivery, encode_record, id_key,
    key, level_range, record_body_len, seq_of, u64_at,
};
use super::{Backend, Store, StoreError, StoreResult, Tree};
use crate::message::Message;

/// Where a queued message lives in the store, as its queue knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Only in memory.
    No,
    /// A durable queue entry holding the whole message.
    Entry,
    /// A durable queue entry referring to a body shared with other queues.
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

/// How a durable queue entry carries its message.
#[derive(Debug)]
pub enum Entry<'a> {
    Inline(&'a Message),
    Shared(u64),
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
    /// How it is stored now (paged messages come back as `No`: page-in
    /// removes them from the store).
    pub stored: Stored,
}

/// The highest shared-message id in use.
pub(super) fn last_shared_id(backend: &dyn Backend) -> StoreResult<Option<u64>> {
    Ok(backend
        .last_key(Tree::Messages, b"m", b"n")?
        .and_then(|k| u64_at(&k, 1)))
}

/// Serialises read-modify-write of shared reference counts.
static REFS: Mutex<()> = Mutex::new(());

impl Store {
    /// Write a durable queue entry, durable after the next group commit.
    /// With `defer` it is held back until that commit (and never written if
    /// the message is acknowledged first); without, it is written (and
    /// readable) at once, as a paged-out message must be.
    pub fn put_entry(
        &self,
        slot: Slot,
        expires_at_ms: u64,
        entry: Entry<'_>,
        defer: bool,
    ) -> StoreResult<Stored> {
        let mut value = expires_at_ms.to_be_bytes().to_vec();
        let stored = match entry {
            Entry::Inline(m) => {
                value.push(0);
                encode_record(m, &mut value);
                Stored::Entry
            }
            Entry::Shared(id) => {
                value.push(1);
                value.extend_from_slice(&id.to_be_bytes());
                Stored::Shared(id)
            }
        };
        let key = key(b'q', slot);
        if defer {
            self.write_behind.put(key, value);
            self.commit.touch();
        } else {
            self.note(self.backend.insert(Tree::Messages, &key, &value))?;
        }
        Ok(stored)
    }

    /// Store a message body once for `refs` durable queues; each then writes
    /// an [`Entry::Shared`] with the returned id.
    pub fn put_shared(&self, message: &Message, refs: u32) -> StoreResult<u64> {
        let id = self.new_message_id();
        let mut value = Vec::new();
        encode_record(message, &mut value);
        self.note(
            self.backend
                .insert(Tree::Messages, &id_key(b'm', id), &value),
        )?;
        self.note(
            self.backend
                .insert(Tree::Messages, &id_key(b'r', id), &refs.to_be_bytes()),
        )?;
        Ok(id)
    }

    /// Record the delivery state of a stored message that came back, so it
    /// is still flagged redelivered (and counted, and delayed) after a
    /// restart.
    pub fn set_delivery(&self, slot: Slot, state: DeliveryState) -> StoreResult<()> {
        self.note(
            self.backend
                .insert(Tree::Messages, &key(b'd', slot), &encode_delivery(state)),
        )
    }

    /// Page a transient message out of memory.
    pub fn page_out(
        &self,
        slot: Slot,
        expires_at_ms: u64,
        message: &Message,
    ) -> StoreResult<Stored> {
        self.note(
            self.paged
                .add(self.backend.as_ref(), slot, expires_at_ms, |out| {
                    encode_record(message, out)
                }),
        )?;
        Ok(Stored::Paged)
    }

    /// Forget a queue's message (acked, dropped, purged). `marked`: it may
    /// have a delivery state.
    pub fn remove(&self, slot: Slot, stored: Stored, marked: bool) -> StoreResult<()> {
        let b = self.backend.as_ref();
        let unmark = || {
            if marked {
                self.note(b.remove(Tree::Messages, &key(b'd', slot)))
            } else {
                Ok(())
            }
        };
        match stored {
            Stored::No => Ok(()),
            Stored::Paged => self.take_paged(slot, false).map(drop),
            Stored::Entry => {
                self.remove_entry(slot)?;
                unmark()
            }
            Stored::Shared(id) => {
                self.remove_entry(slot)?;
                unmark()?;
                self.release_shared(id)
            }
        }
    }

    /// An entry still waiting to be written is just dropped.
    fn remove_entry(&self, slot: Slot) -> StoreResult<()> {
        let key = key(b'q', slot);
        if self.write_behind.cancel(&key) {
            return Ok(());
        }
        self.note(self.backend.remove(Tree::Messages, &key))
    }

    /// Drop one reference to a shared body, deleting it with the last.
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

    fn decode_entry(&self, value: &[u8]) -> StoreResult<(u64, Message, Stored)> {
        let corrupt = |d: &str| StoreError::corrupt("queue entry", d);
        let expires_at = u64_at(value, 0).ok_or_else(|| corrupt("truncated"))?;
        match value.get(8..).and_then(|v| v.split_first()) {
            Some((0, record)) => Ok((expires_at, decode_record(record)?, Stored::Entry)),
            Some((1, id)) => {
                let id = u64_at(id, 0).ok_or_else(|| corrupt("bad shared id"))?;
                let record = self
                    .backend
                    .get(Tree::Messages, &id_key(b'm', id))?
                    .ok_or_else(|| corrupt(&format!("shared message {id} missing")))?;
                Ok((expires_at, decode_record(&record)?, Stored::Shared(id)))
            }
            _ => Err(corrupt("unknown kind")),
        }
    }

    /// Read up to `limit` of a queue level's stored messages with sequence
    /// number `>= from`, in order: durable entries and paged transient
    /// messages merged. Paged messages are removed from the store as they
    /// are read.
    pub fn page_in(
        &self,
        uid: u64,
        level: u8,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<Recovered>> {
        let b = self.backend.as_ref();
        let (qf, qt) = level_range(b'q', uid, level, from);
        let entries = b.scan(Tree::Messages, &qf, &qt, limit)?;
        let batches = self.paged_batches(uid, level, from, limit)?;
        let mut paged: Vec<(usize, PagedEntry<'_>)> = Vec::new();
        for (i, (_, value, removed)) in batches.iter().enumerate() {
            for entry in paged::entries(value) {
                let entry = entry?;
                if entry.seq >= from && !removed.contains(&entry.seq) {
                    paged.push((i, entry));
                }
            }
        }
        let mut out: Vec<Recovered> = Vec::with_capacity(limit.min(entries.len() + paged.len()));
        let (mut ei, mut pi) = (entries.iter().peekable(), paged.iter().peekable());
        while out.len() < limit {
            let next_entry = ei.peek().and_then(|(k, _)| seq_of(k));
            let next_paged = pi.peek().map(|(_, e)| e.seq);
            let take_entry = match (next_entry, next_paged) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(e), Some(p)) => e < p,
            };
            if take_entry {
                let Some((k, v)) = ei.next() else { break };
                let seq = seq_of(k).unwrap_or_default();
                let (expires_at_ms, message, stored) = self.decode_entry(v)?;
                let slot = Slot { uid, level, seq };
                let delivery = b
                    .get(Tree::Messages, &key(b'd', slot))?
                    .map(|v| decode_delivery(&v));
                out.push(Recovered {
                    seq,
                    message,
                    expires_at_ms,
                    delivery,
                    stored,
                });
            } else {
                let Some((_, e)) = pi.next() else { break };
                out.push(Recovered {
                    seq: e.seq,
                    message: decode_record(e.record)?,
                    expires_at_ms: e.expires_at_ms,
                    delivery: None,
                    stored: Stored::No,
                });
            }
        }
        // A batch whose every entry has now been read is deleted; the rest
        // stay, their read entries skipped from now on (below `from`).
        let first_unread = pi.next().map(|(i, _)| *i).unwrap_or(batches.len());
        for (batch, _, _) in &batches[..first_unread] {
            self.note(self.paged.consumed(b, batch))?;
        }
        Ok(out)
    }

    /// The stored batches of a level's paged messages holding at least
    /// `limit` entries `>= from` (or all there are), each with the entries
    /// already removed from it.
    #[allow(clippy::type_complexity)]
    fn paged_batches(
        &self,
        uid: u64,
        level: u8,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>, std::collections::HashSet<u64>)>> {
        let b = self.backend.as_ref();
        self.note(self.paged.write_level(b, uid, Some(level)))?;
        let (mut start, end) = self.paged.range_from(b, uid, level, from)?;
        let mut batches = Vec::new();
        let mut found = 0;
        while found < limit {
            let Some((k, v)) = b.scan(Tree::Messages, &start, &end, 1)?.pop() else {
                break;
            };
            let removed = self.paged.removed_from(&k);
            for entry in paged::entries(&v) {
                let seq = entry?.seq;
                found += usize::from(seq >= from && !removed.contains(&seq));
            }
            start = k.clone();
            start.push(0);
            batches.push((k, v, removed));
        }
        Ok(batches)
    }

    /// Remove paged message `slot` where it sits, reading it if `read`.
    fn take_paged(&self, slot: Slot, read: bool) -> StoreResult<Option<TakenMessage>> {
        let b = self.backend.as_ref();
        let corrupt = |d: &str| StoreError::corrupt("paged message", d);
        self.note(self.paged.write_level(b, slot.uid, Some(slot.level)))?;
        let (batch, value) = match self.paged.recent(slot.uid, slot.level, slot.seq) {
            Some((batch, value)) => (batch.to_vec(), value),
            None => {
                let (batch, _) = self.paged.range_from(b, slot.uid, slot.level, slot.seq)?;
                let Some(value) = b.get(Tree::Messages, &batch)? else {
                    return Ok(None);
                };
                let value = std::sync::Arc::new(value);
                self.paged
                    .remember(slot.uid, slot.level, &batch, value.clone());
                (batch, value)
            }
        };
        if self.paged.was_removed(&batch, slot.seq) {
            return Ok(None);
        }
        let mut found = None;
        for entry in paged::entries(&value) {
            let entry = entry?;
            if entry.seq == slot.seq {
                found = Some(TakenMessage {
                    bytes: record_body_len(entry.record).ok_or_else(|| corrupt("truncated"))?,
                    durable: false,
                    message: if read {
                        Some(decode_record(entry.record)?)
                    } else {
                        None
                    },
                });
                break;
            }
        }
        if found.is_some() {
            self.note(self.paged.remove_entries(b, &batch, &value, &[slot.seq]))?;
        }
        Ok(found)
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
        let corrupt = |d: &str| StoreError::corrupt("queue entry", d);
        if !transient_only && let Some(v) = self.note(b.take(Tree::Messages, &key(b'q', slot)))? {
            self.note(b.remove(Tree::Messages, &key(b'd', slot)))?;
            let (record, shared) = match v.get(8..).and_then(|v| v.split_first()) {
                Some((0, record)) => (record.to_vec(), None),
                Some((1, id)) => {
                    let id = u64_at(id, 0).ok_or_else(|| corrupt("bad shared id"))?;
                    let record = b
                        .get(Tree::Messages, &id_key(b'm', id))?
                        .ok_or_else(|| corrupt(&format!("shared message {id} missing")))?;
                    (record, Some(id))
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
            return Ok(Some(taken));
        }
        self.take_paged(slot, read)
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::fixtures::{keys, msg, slot};
    use super::*;

    #[test]
    fn entries_paged_and_shared_messages_merge_in_order() {
        let s = Store::in_memory_for_tests();
        let uid = s.new_queue_uid();
        s.put_entry(slot(uid, 1), 100, Entry::Inline(&msg("one")), false)
            .unwrap();
        s.page_out(slot(uid, 2), 200, &msg("two")).unwrap();
        let id = s.put_shared(&msg("three"), 2).unwrap();
        s.put_entry(slot(uid, 3), 300, Entry::Shared(id), true)
            .unwrap();
        s.flush_now().unwrap();
        s.put_entry(slot(uid + 1, 1), 300, Entry::Shared(id), false)
            .unwrap();
        let returned = DeliveryState {
            failed: 2,
            returned: 1,
            not_before_ms: 999,
        };
        s.set_delivery(slot(uid, 1), returned).unwrap();
        assert_eq!(s.entry_bounds(uid, 0).unwrap(), Some((1, 3)));
        assert_eq!(s.count_entries(uid, 0, 0).unwrap(), 2);

        let got = s.page_in(uid, 0, 0, 10).unwrap();
        type Summary<'a> = (u64, &'a [u8], u64, Option<DeliveryState>, Stored);
        let summary: Vec<Summary> = got
            .iter()
            .map(|r| {
                (
                    r.seq,
                    &r.message.body[..],
                    r.expires_at_ms,
                    r.delivery,
                    r.stored,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, &b"one"[..], 100, Some(returned), Stored::Entry),
                (2, b"two", 200, None, Stored::No),
                (3, b"three", 300, None, Stored::Shared(id)),
            ]
        );
        // The paged message was removed by page-in.
        assert_eq!(s.page_in(uid, 0, 2, 1).unwrap()[0].seq, 3);
        // Taken where it sits (expired): the shared body survives until its
        // last reference goes.
        let taken = s.take_stored(slot(uid, 3), true, false).unwrap().unwrap();
        assert_eq!((taken.bytes, taken.durable), (5, true));
        assert_eq!(&taken.message.unwrap().body[..], b"three");
        assert!(s.take_stored(slot(uid, 3), true, false).unwrap().is_none());
        assert_eq!(s.page_in(uid + 1, 0, 0, 10).unwrap().len(), 1);
        s.remove(slot(uid + 1, 1), Stored::Shared(id), false)
            .unwrap();
        assert!(
            s.backend
                .get(Tree::Messages, &id_key(b'm', id))
                .unwrap()
                .is_none()
        );
        assert_eq!(s.remove_range(uid, None, 0, u64::MAX).unwrap(), 1);
        assert_eq!(s.entry_bounds(uid, 0).unwrap(), None);
    }

    #[test]
    fn paged_messages_are_written_in_batches_and_leave_nothing_once_read() {
        let s = Store::in_memory_for_tests();
        let uid = s.new_queue_uid();
        let body = "x".repeat(1000);
        // 100 paged messages of ~1 KiB with a durable entry in the middle:
        // a few batches, not 100 keys.
        for seq in 0..101 {
            if seq == 50 {
                s.put_entry(slot(uid, seq), 0, Entry::Inline(&msg("durable")), false)
                    .unwrap();
            } else {
                s.page_out(slot(uid, seq), seq, &msg(&body)).unwrap();
            }
        }
        let mut seqs = Vec::new();
        let mut from = 0;
        loop {
            let page = s.page_in(uid, 0, from, 7).unwrap();
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            for r in &page {
                assert_eq!(r.expires_at_ms, if r.seq == 50 { 0 } else { r.seq });
                assert_eq!(r.stored == Stored::Entry, r.seq == 50);
            }
            seqs.extend(page.iter().map(|r| r.seq));
            let batches = keys(&s).iter().filter(|k| k[0] == s.paged.kind).count();
            assert!(
                batches <= 4,
                "{batches} batches left after reading to {from}"
            );
        }
        assert_eq!(seqs, (0..101).collect::<Vec<_>>());
        // Only the durable entry is left (the queue removes it on ack).
        assert_eq!(keys(&s), vec![key(b'q', slot(uid, 50)).to_vec()]);
    }

    #[test]
    fn paged_messages_can_be_taken_where_they_sit_and_purged() {
        let s = Store::in_memory_for_tests();
        let uid = s.new_queue_uid();
        let body = "y".repeat(4000);
        for seq in 0..40 {
            s.page_out(slot(uid, seq), 0, &msg(&body)).unwrap();
        }
        // Expired where they sit: read once, then gone.
        let taken = s.take_stored(slot(uid, 20), true, true).unwrap().unwrap();
        assert_eq!((taken.bytes, taken.durable), (4000, false));
        assert!(s.take_stored(slot(uid, 20), true, true).unwrap().is_none());
        assert!(s.take_stored(slot(uid, 99), true, true).unwrap().is_none());
        let seqs: Vec<u64> = s
            .page_in(uid, 0, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (0..40).filter(|s| *s != 20).collect::<Vec<_>>());
        assert!(keys(&s).is_empty());

        // A purge from the head of the stored region on, then more paging.
        for seq in 40..80 {
            s.page_out(slot(uid, seq), 0, &msg(&body)).unwrap();
        }
        assert_eq!(s.page_in(uid, 0, 40, 5).unwrap().len(), 5);
        s.remove_range(uid, Some(0), 45, 80).unwrap();
        assert!(keys(&s).is_empty());
        for seq in 80..90 {
            s.page_out(slot(uid, seq), 0, &msg(&body)).unwrap();
        }
        // Removing every message one by one deletes the batches.
        for seq in 80..90 {
            assert!(
                s.take_stored(slot(uid, seq), false, true)
                    .unwrap()
                    .is_some()
            );
        }
        assert!(keys(&s).is_empty());
        // A deleted queue's pending batch is dropped unwritten.
        s.page_out(slot(uid, 90), 0, &msg("z")).unwrap();
        s.remove_range(uid, None, 0, u64::MAX).unwrap();
        assert!(s.page_in(uid, 0, 0, 10).unwrap().is_empty());
        assert!(keys(&s).is_empty());
    }
}
