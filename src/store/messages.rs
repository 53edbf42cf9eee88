//! Queue contents in the `messages` tree.
//!
//! Keys are a one-letter kind, then big-endian integers, so each queue's
//! entries sort by sequence number:
//!
//! | key | value |
//! |---|---|
//! | `q` uid seq | a queue entry: `0` + message record, or `1` + shared id |
//! | `d` uid seq | (empty) the entry was delivered and returned (requeued) |
//! | `t` uid seq | a transient message paged out of memory (wiped at boot) |
//! | `m` id | a message record shared by several queues |
//! | `r` id | how many queue entries still refer to `m` id (u32) |
//!
//! A message record is: version (1), flags (bit 0: persistent), priority,
//! exchange (short string), routing key (short string), properties length
//! (u32) and bytes, then the body.

use bytes::Bytes;
use parking_lot::Mutex;

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

/// How a durable queue entry carries its message.
#[derive(Debug)]
pub enum Entry<'a> {
    Inline(&'a Message),
    Shared(u64),
}

/// A message read back from the store.
#[derive(Debug)]
pub struct Recovered {
    pub seq: u64,
    pub message: Message,
    /// It had been delivered before (a delivery marker exists).
    pub redelivered: bool,
    /// How it is stored now (paged messages come back as `No`: page-in
    /// removes them from the store).
    pub stored: Stored,
}

const RECORD_VERSION: u8 = 1;

fn queue_key(kind: u8, uid: u64, seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = kind;
    k[1..9].copy_from_slice(&uid.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn id_key(kind: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(9..17)?.try_into().ok()?))
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
        properties,
        body,
        persistent,
        priority,
    })
}

/// The highest shared-message id in use.
pub(super) fn last_shared_id(backend: &dyn Backend) -> StoreResult<Option<u64>> {
    Ok(backend
        .last_key(Tree::Messages, b"m", b"n")?
        .and_then(|k| Some(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?))))
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
        uid: u64,
        seq: u64,
        entry: Entry<'_>,
        defer: bool,
    ) -> StoreResult<Stored> {
        let mut value = Vec::new();
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
        let key = queue_key(b'q', uid, seq);
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

    /// Record that a stored entry was delivered and came back, so it is
    /// still flagged redelivered after a restart.
    pub fn mark_redelivered(&self, uid: u64, seq: u64) -> StoreResult<()> {
        self.note(
            self.backend
                .insert(Tree::Messages, &queue_key(b'd', uid, seq), &[]),
        )
    }

    /// Page a transient message out of memory.
    pub fn page_out(&self, uid: u64, seq: u64, message: &Message) -> StoreResult<Stored> {
        let mut value = Vec::new();
        encode_record(message, &mut value);
        self.note(
            self.backend
                .insert(Tree::Messages, &queue_key(b't', uid, seq), &value),
        )?;
        Ok(Stored::Paged)
    }

    /// Forget a queue's message (acked, dropped, or purged). `marked`: it
    /// may carry a redelivery mark.
    pub fn remove(&self, uid: u64, seq: u64, stored: Stored, marked: bool) -> StoreResult<()> {
        let b = self.backend.as_ref();
        let unmark = || {
            if marked {
                self.note(b.remove(Tree::Messages, &queue_key(b'd', uid, seq)))
            } else {
                Ok(())
            }
        };
        match stored {
            Stored::No => Ok(()),
            Stored::Paged => self.note(b.remove(Tree::Messages, &queue_key(b't', uid, seq))),
            Stored::Entry => {
                self.remove_entry(uid, seq)?;
                unmark()
            }
            Stored::Shared(id) => {
                self.remove_entry(uid, seq)?;
                unmark()?;
                self.release_shared(id)
            }
        }
    }

    /// An entry still waiting to be written is just dropped.
    fn remove_entry(&self, uid: u64, seq: u64) -> StoreResult<()> {
        let key = queue_key(b'q', uid, seq);
        if self.write_behind.cancel(&key) {
            return Ok(());
        }
        self.note(self.backend.remove(Tree::Messages, &key))
    }

    /// Forget the entries of a deleted queue that were never written.
    pub fn cancel_unwritten(&self, uid: u64) {
        let mut prefix = vec![b'q'];
        prefix.extend_from_slice(&uid.to_be_bytes());
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

    /// Read up to `limit` of a queue's stored messages with sequence number
    /// `>= from`, in order: durable entries and paged transient messages
    /// merged. Paged messages are removed from the store as they are read.
    pub fn page_in(&self, uid: u64, from: u64, limit: usize) -> StoreResult<Vec<Recovered>> {
        let b = self.backend.as_ref();
        let end = uid
            .checked_add(1)
            .map(|u| (u, 0))
            .unwrap_or((u64::MAX, u64::MAX));
        let range = |kind: u8| (queue_key(kind, uid, from), queue_key(kind, end.0, end.1));
        let (qf, qt) = range(b'q');
        let (tf, tt) = range(b't');
        let entries = b.scan(Tree::Messages, &qf, &qt, limit)?;
        let paged = b.scan(Tree::Messages, &tf, &tt, limit)?;
        let mut out: Vec<Recovered> = Vec::with_capacity(limit.min(entries.len() + paged.len()));
        let (mut ei, mut pi) = (entries.iter().peekable(), paged.iter().peekable());
        while out.len() < limit {
            let next_entry = ei.peek().and_then(|(k, _)| seq_of(k));
            let next_paged = pi.peek().and_then(|(k, _)| seq_of(k));
            let take_entry = match (next_entry, next_paged) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(e), Some(p)) => e < p,
            };
            if take_entry {
                let Some((k, v)) = ei.next() else { break };
                let seq = seq_of(k).unwrap_or_default();
                let (message, stored) = match v.split_first() {
                    Some((0, record)) => (decode_record(record)?, Stored::Entry),
                    Some((1, id)) => {
                        let id =
                            u64::from_be_bytes(id.try_into().map_err(|_| {
                                StoreError::corrupt("queue entry", "bad shared id")
                            })?);
                        let record =
                            b.get(Tree::Messages, &id_key(b'm', id))?.ok_or_else(|| {
                                StoreError::corrupt(
                                    "queue entry",
                                    format!("shared message {id} missing"),
                                )
                            })?;
                        (decode_record(&record)?, Stored::Shared(id))
                    }
                    _ => return Err(StoreError::corrupt("queue entry", "unknown kind")),
                };
                let redelivered = b.get(Tree::Messages, &queue_key(b'd', uid, seq))?.is_some();
                out.push(Recovered {
                    seq,
                    message,
                    redelivered,
                    stored,
                });
            } else {
                let Some((k, v)) = pi.next() else { break };
                let seq = seq_of(k).unwrap_or_default();
                let message = decode_record(v)?;
                self.note(b.remove(Tree::Messages, k))?;
                out.push(Recovered {
                    seq,
                    message,
                    redelivered: false,
                    stored: Stored::No,
                });
            }
        }
        Ok(out)
    }

    /// The first and last sequence numbers of a queue's durable entries.
    pub fn entry_bounds(&self, uid: u64) -> StoreResult<Option<(u64, u64)>> {
        let b = self.backend.as_ref();
        let from = queue_key(b'q', uid, 0);
        let to = queue_key(b'q', uid, u64::MAX);
        let first = b.scan(Tree::Messages, &from, &to, 1)?;
        let Some(first) = first.first().and_then(|(k, _)| seq_of(k)) else {
            return Ok(None);
        };
        // `to` excludes seq u64::MAX, which is never used.
        let last = b
            .last_key(Tree::Messages, &from, &to)?
            .and_then(|k| seq_of(&k))
            .unwrap_or(first);
        Ok(Some((first, last)))
    }

    /// Count a queue's durable entries with sequence number `>= from`. Reads
    /// every entry: run it off the hot path.
    pub fn count_entries(&self, uid: u64, from: u64) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let to = queue_key(b'q', uid, u64::MAX);
        let mut start = queue_key(b'q', uid, from).to_vec();
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

    /// Remove every stored message of a queue with `from <= seq < to`
    /// (purge, delete). Returns how many durable entries were removed.
    pub fn remove_range(&self, uid: u64, from: u64, to: u64) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let mut removed = 0;
        for kind in [b'q', b't', b'd'] {
            let end = queue_key(kind, uid, to);
            let mut start = queue_key(kind, uid, from).to_vec();
            loop {
                let page = b.scan(Tree::Messages, &start, &end, 1024)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (k, v) in &page {
                    self.note(b.remove(Tree::Messages, k))?;
                    if kind == b'q' {
                        removed += 1;
                        if let Some((1, id)) = v.split_first()
                            && let Ok(id) = <[u8; 8]>::try_from(id)
                        {
                            self.release_shared(u64::from_be_bytes(id))?;
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Drop every paged-out transient message (at boot: they do not survive
    /// a restart).
    pub fn clear_paged(&self) -> StoreResult<()> {
        let b = self.backend.as_ref();
        loop {
            let page = b.scan(Tree::Messages, b"t", b"u", 4096)?;
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
    use super::*;

    fn msg(body: &str) -> Message {
        Message {
            exchange: "x".into(),
            routing_key: "rk".into(),
            properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::copy_from_slice(body.as_bytes()),
            persistent: true,
            priority: 3,
        }
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
        assert!(decode_record(&buf[..5]).is_err());
    }

    #[test]
    fn entries_paged_and_shared_messages_merge_in_order() {
        let s = Store::in_memory_for_tests();
        let uid = s.new_queue_uid();
        s.put_entry(uid, 1, Entry::Inline(&msg("one")), false)
            .unwrap();
        s.page_out(uid, 2, &msg("two")).unwrap();
        let id = s.put_shared(&msg("three"), 2).unwrap();
        s.put_entry(uid, 3, Entry::Shared(id), true).unwrap();
        s.flush_now().unwrap();
        s.put_entry(uid + 1, 1, Entry::Shared(id), false).unwrap();
        s.mark_redelivered(uid, 1).unwrap();
        assert_eq!(s.entry_bounds(uid).unwrap(), Some((1, 3)));
        assert_eq!(s.count_entries(uid, 0).unwrap(), 2);

        let got = s.page_in(uid, 0, 10).unwrap();
        let summary: Vec<(u64, &[u8], bool, Stored)> = got
            .iter()
            .map(|r| (r.seq, &r.message.body[..], r.redelivered, r.stored))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, &b"one"[..], true, Stored::Entry),
                (2, b"two", false, Stored::No),
                (3, b"three", false, Stored::Shared(id)),
            ]
        );
        // The paged message was removed by page-in.
        assert_eq!(s.page_in(uid, 2, 1).unwrap()[0].seq, 3);

        // The shared body survives until its last reference goes.
        s.remove(uid, 3, Stored::Shared(id), false).unwrap();
        assert_eq!(s.page_in(uid + 1, 0, 10).unwrap().len(), 1);
        s.remove(uid + 1, 1, Stored::Shared(id), false).unwrap();
        assert!(
            s.backend
                .get(Tree::Messages, &id_key(b'm', id))
                .unwrap()
                .is_none()
        );
        assert_eq!(s.remove_range(uid, 0, u64::MAX).unwrap(), 1);
        assert_eq!(s.entry_bounds(uid).unwrap(), None);
    }
}
