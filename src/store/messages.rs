//! Queue contents in the `messages` tree.
//!
//! Keys are a one-letter kind, then big-endian integers, so each queue's
//! entries of one priority level sort by sequence number:
//!
//! | key | value |
//! |---|---|
//! | `q` uid level seq | queue entry: expiry time, then `0` + message record, or `1` + shared id |
//! | `d` uid level seq | delivery state of a returned message: failed deliveries (u32), other returns (u32), not-before time |
//! | `t` or `u` uid level seq | transient messages paged out of memory, a batch from `seq` on (see `paged`; the previous run's kind is wiped at boot) |
//! | `m` id | a message record shared by several queues |
//! | `r` id | how many queue entries still refer to `m` id (u32) |
//!
//! Times are u64 milliseconds since the Unix epoch; an expiry time of 0
//! means never.
//!
//! A message record is: version (1), flags (bit 0: persistent), priority,
//! exchange (short string), routing key (short string), properties length
//! (u32) and bytes, then the body.

use bytes::Bytes;
use parking_lot::Mutex;

use super::paged::{self, PagedEntry};
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

/// The address of one message of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub uid: u64,
    /// Priority level (0 for queues without priorities).
    pub level: u8,
    pub seq: u64,
}

/// What a returned message carries across a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// Deliveries that a consumer rejected (`x-delivery-count`).
    pub failed: u32,
    /// Other returns: the consumer's channel closed, or it recovered.
    pub returned: u32,
    /// Not deliverable before this time (ms since the epoch; delayed retry).
    pub not_before_ms: u64,
}

impl DeliveryState {
    pub fn is_redelivery(&self) -> bool {
        self.failed > 0 || self.returned > 0
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
    /// How it is stored now (paged messages come back as `No`: page-in
    /// removes them from the store).
    pub stored: Stored,
}

const RECORD_VERSION: u8 = 1;

pub(super) type Key = [u8; 18];

pub(super) fn key(kind: u8, slot: Slot) -> Key {
    let mut k = [0u8; 18];
    k[0] = kind;
    k[1..9].copy_from_slice(&slot.uid.to_be_bytes());
    k[9] = slot.level;
    k[10..].copy_from_slice(&slot.seq.to_be_bytes());
    k
}

/// The half-open key range of one queue level from `seq` on.
fn level_range(kind: u8, uid: u64, level: u8, from: u64) -> (Key, Key) {
    let start = key(
        kind,
        Slot {
            uid,
            level,
            seq: from,
        },
    );
    let end = match level.checked_add(1) {
        Some(next) => key(
            kind,
            Slot {
                uid,
                level: next,
                seq: 0,
            },
        ),
        None => key(
            kind,
            Slot {
                uid: uid.saturating_add(1),
                level: 0,
                seq: 0,
            },
        ),
    };
    (start, end)
}

/// Every key of one queue (all levels).
fn queue_range(kind: u8, uid: u64) -> ([u8; 9], [u8; 9]) {
    let mut start = [0u8; 9];
    start[0] = kind;
    start[1..].copy_from_slice(&uid.to_be_bytes());
    let mut end = start;
    match uid.checked_add(1) {
        Some(next) => end[1..].copy_from_slice(&next.to_be_bytes()),
        None => end[0] = kind + 1,
    }
    (start, end)
}

fn id_key(kind: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(10..18)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn encode_record(m: &Message, out: &mut Vec<u8>) {
    out.reserve(
        16 + m.exchange.as_str().len()
            + m.routing_key.as_str().len()
            + m.properties.len()
            + m.body.len(),
    );
    out.push(RECORD_VERSION);
    out.push(m.persistent as u8);
    out.push(m.priority);
    for s in [m.exchange.as_str(), m.routing_key.as_str()] {
        let b = &s.as_bytes()[..s.len().min(255)];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&(m.properties.len() as u32).to_be_bytes());
    out.extend_from_slice(&m.properties);
    out.extend_from_slice(&m.body);
}

/// A record's body size, from its header alone.
fn record_body_len(r: &[u8]) -> Option<u64> {
    let mut pos = 3;
    pos += 1 + usize::from(*r.get(pos)?);
    pos += 1 + usize::from(*r.get(pos)?);
    let plen = u32::from_be_bytes(r.get(pos..pos + 4)?.try_into().ok()?) as usize;
    pos += 4 + plen;
    r.len().checked_sub(pos).map(|n| n as u64)
}

fn decode_record(bytes: &[u8]) -> StoreResult<Message> {
    let bad = |detail: &str| StoreError::corrupt("message", detail);
    let mut pos = 0usize;
    let mut take = |n: usize| -> StoreResult<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let s = &bytes[pos..end];
        pos = end;
        Ok(s)
    };
    let head = take(3)?;
    if head[0] != RECORD_VERSION {
        return Err(bad(&format!("unknown record version {}", head[0])));
    }
    let (persistent, priority) = (head[1] & 1 == 1, head[2]);
    let mut shortstr = || -> StoreResult<String> {
        let len = take(1)?[0] as usize;
        String::from_utf8(take(len)?.to_vec()).map_err(|_| bad("non-UTF-8 name"))
    };
    let exchange = shortstr()?;
    let routing_key = shortstr()?;
    let plen = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad("length"))?) as usize;
    let properties = Bytes::copy_from_slice(take(plen)?);
    let body = Bytes::copy_from_slice(&bytes[pos..]);
    Ok(Message {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        expiration_ms: crate::message::expiration_of(&properties),
        properties,
        body,
        persistent,
        priority,
    })
}

fn encode_delivery(d: DeliveryState) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..4].copy_from_slice(&d.failed.to_be_bytes());
    v[4..8].copy_from_slice(&d.returned.to_be_bytes());
    v[8..].copy_from_slice(&d.not_before_ms.to_be_bytes());
    v
}

fn decode_delivery(v: &[u8]) -> DeliveryState {
    let u32_at = |at: usize| {
        v.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    };
    DeliveryState {
        failed: u32_at(0),
        returned: u32_at(4),
        not_before_ms: u64_at(v, 8).unwrap_or(0),
    }
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

    /// Forget the entries of a deleted queue that were never written.
    pub fn cancel_unwritten(&self, uid: u64) {
        let (prefix, _) = queue_range(b'q', uid);
        self.write_behind.cancel_prefix(&prefix);
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

    /// The first and last sequence numbers of a queue level's durable
    /// entries.
    pub fn entry_bounds(&self, uid: u64, level: u8) -> StoreResult<Option<(u64, u64)>> {
        let b = self.backend.as_ref();
        let (from, to) = level_range(b'q', uid, level, 0);
        let first = b.scan(Tree::Messages, &from, &to, 1)?;
        let Some(first) = first.first().and_then(|(k, _)| seq_of(k)) else {
            return Ok(None);
        };
        let last = b
            .last_key(Tree::Messages, &from, &to)?
            .and_then(|k| seq_of(&k))
            .unwrap_or(first);
        Ok(Some((first, last)))
    }

    /// Count a queue level's durable entries with sequence number `>= from`.
    /// Reads every entry: run it off the hot path.
    pub fn count_entries(&self, uid: u64, level: u8, from: u64) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let (start, to) = level_range(b'q', uid, level, from);
        let mut start = start.to_vec();
        let mut count = 0u64;
        loop {
            let page = b.scan(Tree::Messages, &start, &to, 4096)?;
            let Some((last, _)) = page.last() else {
                return Ok(count);
            };
            count += page.len() as u64;
            start = last.clone();
            start.push(0);
        }
    }

    /// Remove every stored message of a queue with `from <= seq < to`, of
    /// one level or (`None`) all levels (purge, delete). Returns how many
    /// durable entries were removed.
    pub fn remove_range(
        &self,
        uid: u64,
        level: Option<u8>,
        from: u64,
        to: u64,
    ) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let mut removed = 0;
        self.remove_paged_range(uid, level, from, to)?;
        for kind in [b'q', b'd'] {
            let (start, end) = match level {
                Some(level) => {
                    let (s, e) = level_range(kind, uid, level, from);
                    (s.to_vec(), e.to_vec())
                }
                None => {
                    let (s, e) = queue_range(kind, uid);
                    (s.to_vec(), e.to_vec())
                }
            };
            let mut start = start;
            loop {
                let page = b.scan(Tree::Messages, &start, &end, 1024)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (k, v) in &page {
                    let Some(seq) = seq_of(k) else { continue };
                    if seq < from || seq >= to {
                        continue;
                    }
                    self.note(b.remove(Tree::Messages, k))?;
                    if kind == b'q' {
                        removed += 1;
                        if let Some((1, id)) = v.get(8..).and_then(|v| v.split_first())
                            && let Some(id) = u64_at(id, 0)
                        {
                            self.release_shared(id)?;
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Remove the paged messages of a queue with `from <= seq < to`, taking
    /// those of its batches below `from` to be read already.
    fn remove_paged_range(
        &self,
        uid: u64,
        level: Option<u8>,
        from: u64,
        to: u64,
    ) -> StoreResult<()> {
        let b = self.backend.as_ref();
        if level.is_none() && from == 0 && to == u64::MAX {
            self.paged.drop_queue(uid);
        } else {
            self.note(self.paged.write_level(b, uid, level))?;
        }
        let (mut start, end) = match level {
            Some(level) => {
                let (start, end) = self.paged.range_from(b, uid, level, from)?;
                (start, end.to_vec())
            }
            None => {
                let (start, end) = queue_range(self.paged.kind, uid);
                (start.to_vec(), end.to_vec())
            }
        };
        loop {
            let page = b.scan(Tree::Messages, &start, &end, 64)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                let mut in_range = Vec::new();
                let mut later = false;
                for entry in paged::entries(v) {
                    let seq = entry?.seq;
                    later |= seq >= to;
                    if seq >= from && seq < to {
                        in_range.push(seq);
                    }
                }
                if !later {
                    self.note(self.paged.consumed(b, k))?;
                } else if !in_range.is_empty() {
                    self.note(self.paged.remove_entries(b, k, v, &in_range))?;
                }
            }
        }
    }

    /// Drop the previous run's paged-out transient messages (they do not
    /// survive a restart); this run pages under the other key kind.
    pub fn clear_paged(&self) -> StoreResult<()> {
        let b = self.backend.as_ref();
        let old = paged::other_kind(self.paged.kind);
        loop {
            let page = b.scan(Tree::Messages, &[old], &[old + 1], 4096)?;
            if page.is_empty() {
                return Ok(());
            }
            for (k, _) in page {
                self.note(b.remove(Tree::Messages, &k))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn msg(body: &str) -> Message {
        Message {
            exchange: "x".into(),
            routing_key: "rk".into(),
            properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::copy_from_slice(body.as_bytes()),
            persistent: true,
            priority: 3,
            expiration_ms: None,
        }
    }

    fn slot(uid: u64, seq: u64) -> Slot {
        Slot { uid, level: 0, seq }
    }

    #[test]
    fn records_round_trip() {
        let m = msg("hello");
        let mut buf = Vec::new();
        encode_record(&m, &mut buf);
        let back = decode_record(&buf).unwrap();
        assert_eq!(back.exchange.as_str(), "x");
        assert_eq!(back.routing_key.as_str(), "rk");
        assert_eq!(back.properties, m.properties);
        assert_eq!(back.body, m.body);
        assert!(back.persistent);
        assert_eq!(back.priority, 3);
        assert_eq!(record_body_len(&buf), Some(5));
        assert!(decode_record(&buf[..5]).is_err());
        assert_eq!(record_body_len(&buf[..5]), None);
    }

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
    fn levels_are_separate_ranges() {
        let s = Store::in_memory_for_tests();
        let uid = s.new_queue_uid();
        for (level, seq) in [(0u8, 1u64), (5, 2), (0, 3), (255, 4)] {
            s.put_entry(Slot { uid, level, seq }, 0, Entry::Inline(&msg("x")), false)
                .unwrap();
        }
        let seqs = |level| -> Vec<u64> {
            s.page_in(uid, level, 0, 10)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(seqs(0), vec![1, 3]);
        assert_eq!(seqs(5), vec![2]);
        assert_eq!(seqs(255), vec![4]);
        assert_eq!(s.entry_bounds(uid, 255).unwrap(), Some((4, 4)));
        assert_eq!(s.remove_range(uid, None, 0, u64::MAX).unwrap(), 4);
    }

    /// Every key of the messages tree.
    fn keys(s: &Store) -> Vec<Vec<u8>> {
        s.backend
            .scan(Tree::Messages, &[0], &[255], usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
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

    #[test]
    fn each_run_pages_under_the_kind_the_last_one_did_not_use() {
        let backend: Arc<dyn Backend> = Arc::new(super::super::MemoryBackend::default());
        let first = Store::over(backend.clone()).unwrap();
        let uid = first.new_queue_uid();
        for seq in 0..100 {
            first
                .page_out(slot(uid, seq), 0, &msg(&"a".repeat(1000)))
                .unwrap();
        }
        let left = keys(&first);
        assert!(!left.is_empty());
        assert!(left.iter().all(|k| k[0] == first.paged.kind));
        first.close().unwrap();
        drop(first);

        let second = Store::over(backend).unwrap();
        assert_ne!(second.paged.kind, left[0][0]);
        second.page_out(slot(uid, 0), 0, &msg("new")).unwrap();
        second
            .paged
            .write_level(backend_of(&second), uid, None)
            .unwrap();
        second.clear_paged().unwrap();
        let now = keys(&second);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0][0], second.paged.kind);
        assert_eq!(
            &second.page_in(uid, 0, 0, 10).unwrap()[0].message.body[..],
            b"new"
        );
    }

    fn backend_of(s: &Store) -> &dyn Backend {
        s.backend.as_ref()
    }
}
