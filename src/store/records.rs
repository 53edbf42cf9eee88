//! The byte layout of the `messages` tree: keys, message records and
//! delivery states, as pure functions (no backend, no [`Store`]).
//!
//! Keys are a one-letter kind, then big-endian integers, so each queue's
//! entries of one priority level sort by sequence number:
//!
//! | key | value |
//! |---|---|
//! | `b` uid level seq | durable queue entries, a batch from `seq` on (see `batches`) |
//! | `x` uid level seq | entries removed from the `b` batch of the same key (sorted seqs) |
//! | `p` uid level | ranges of a level purged but not yet cleared (pairs of seqs: from, to) |
//! | `d` uid level seq | delivery state of a returned message: failed deliveries (u32), other returns (u32), not-before time |
//! | `t` or `u` uid level seq | transient messages paged out of memory, a batch from `seq` on (the previous run's kind is wiped at boot) |
//! | `q` uid level seq | format 2's single queue entry: expiry time, then `0` + message record, or `1` + shared id (read, never written now) |
//! | `m` id, `r` id | format 2's message record shared by several queues, and how many entries still refer to it (read, never written now) |
//!
//! Times are u64 milliseconds since the Unix epoch; an expiry time of 0
//! means never.
//!
//! A message record is: version (1), flags (bit 0: persistent), priority,
//! exchange (short string), routing key (short string), properties length
//! (u32) and bytes, then the body.
//!
//! This is the on-disk format described in `docs/storage.md`: a change here
//! is a change of [`FORMAT_VERSION`](super::FORMAT_VERSION), never a
//! refactor.
//!
//! [`Store`]: super::Store

use bytes::Bytes;

use super::{StoreError, StoreResult};
use crate::message::Message;

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

/// A message record: version, persistent, priority, then (from version 2)
/// the time it was received (8 bytes, ms since the epoch), then exchange
/// and routing key (length-prefixed), properties (u32 length) and body.
/// Version 1 records, without the time, are still read.
const RECORD_VERSION: u8 = 2;
const RECORD_VERSION_1: u8 = 1;

/// The bytes before a record's exchange name.
fn record_head_len(version: u8) -> usize {
    if version == RECORD_VERSION_1 { 3 } else { 11 }
}

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
pub(super) fn level_range(kind: u8, uid: u64, level: u8, from: u64) -> (Key, Key) {
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
pub(super) fn queue_range(kind: u8, uid: u64) -> ([u8; 9], [u8; 9]) {
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

pub(super) fn id_key(kind: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(10..18)?.try_into().ok()?))
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

pub(super) fn encode_record(m: &Message, out: &mut Vec<u8>) {
    out.reserve(
        24 + m.exchange.as_str().len()
            + m.routing_key.as_str().len()
            + m.properties.len()
            + m.body.len(),
    );
    out.push(RECORD_VERSION);
    out.push(m.persistent as u8);
    out.push(m.priority);
    out.extend_from_slice(&m.received_ms.to_be_bytes());
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
pub(super) fn record_body_len(r: &[u8]) -> Option<u64> {
    let mut pos = record_head_len(*r.first()?);
    pos += 1 + usize::from(*r.get(pos)?);
    pos += 1 + usize::from(*r.get(pos)?);
    let plen = u32::from_be_bytes(r.get(pos..pos + 4)?.try_into().ok()?) as usize;
    pos += 4 + plen;
    r.len().checked_sub(pos).map(|n| n as u64)
}

pub(super) fn decode_record(bytes: &[u8]) -> StoreResult<Message> {
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
    let version = head[0];
    if version != RECORD_VERSION && version != RECORD_VERSION_1 {
        return Err(bad(&format!("unknown record version {version}")));
    }
    let (persistent, priority) = (head[1] & 1 == 1, head[2]);
    let received_ms = if version == RECORD_VERSION_1 {
        0
    } else {
        u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("length"))?)
    };
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
        received_ms,
    })
}

pub(super) fn encode_delivery(d: DeliveryState) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..4].copy_from_slice(&d.failed.to_be_bytes());
    v[4..8].copy_from_slice(&d.returned.to_be_bytes());
    v[8..].copy_from_slice(&d.not_before_ms.to_be_bytes());
    v
}

pub(super) fn decode_delivery(v: &[u8]) -> DeliveryState {
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

/// A batch (see `batches`) is written once it holds about this many bytes.
pub(super) const BATCH_BYTES: usize = 32 * 1024;
const BATCH_HEADER: usize = 12;
const ENTRY_HEADER: usize = 20;

/// A batch value: its last seq (u64) and entry count (u32), then entries of
/// seq (u64), expiry time (u64), record length (u32) and the record.
/// Returns the last seq written.
pub(super) fn encode_batch<'a>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (u64, u64, &'a Message)>,
) -> u64 {
    out.resize(BATCH_HEADER, 0);
    let (mut last, mut count) = (0u64, 0u32);
    for (seq, expires_at, message) in entries {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&expires_at.to_be_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        encode_record(message, out);
        let len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        last = seq;
        count += 1;
    }
    out[..8].copy_from_slice(&last.to_be_bytes());
    out[8..12].copy_from_slice(&count.to_be_bytes());
    last
}

/// A batch's last seq and number of entries.
pub(super) fn batch_header(value: &[u8]) -> Option<(u64, usize)> {
    let last = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let count = u32::from_be_bytes(value.get(8..12)?.try_into().ok()?);
    Some((last, count as usize))
}

/// One message in a batch.
pub(super) struct BatchEntry<'a> {
    pub seq: u64,
    pub expires_at_ms: u64,
    pub record: &'a [u8],
}

/// The entries of a batch value, in order; a truncated entry ends it with
/// an error.
pub(super) fn batch_entries(value: &[u8]) -> impl Iterator<Item = StoreResult<BatchEntry<'_>>> {
    let mut rest = value.get(BATCH_HEADER..).unwrap_or_default();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let expires_at_ms = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
            let len = u32::from_be_bytes(rest.get(16..20)?.try_into().ok()?) as usize;
            let record = rest.get(ENTRY_HEADER..ENTRY_HEADER.checked_add(len)?)?;
            Some((
                BatchEntry {
                    seq,
                    expires_at_ms,
                    record,
                },
                ENTRY_HEADER + len,
            ))
        })();
        Some(match entry {
            Some((entry, used)) => {
                rest = &rest[used..];
                Ok(entry)
            }
            None => {
                rest = &[];
                Err(StoreError::corrupt("batch", "truncated entry"))
            }
        })
    })
}

/// A sorted list of sequence numbers (a batch's removals, a level's purged
/// ranges as pairs).
pub(super) fn encode_seqs(seqs: &[u64]) -> Vec<u8> {
    seqs.iter().flat_map(|s| s.to_be_bytes()).collect()
}

pub(super) fn decode_seqs(v: &[u8]) -> Vec<u64> {
    v.chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .collect()
}

/// Messages and slots shared by the store's unit tests.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use crate::store::{Store, Tree};

    pub fn msg(body: &str) -> Message {
        Message {
            exchange: "x".into(),
            routing_key: "rk".into(),
            properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::copy_from_slice(body.as_bytes()),
            persistent: true,
            priority: 3,
            expiration_ms: None,
            received_ms: 0,
        }
    }

    pub fn slot(uid: u64, seq: u64) -> Slot {
        Slot { uid, level: 0, seq }
    }

    /// Every key of the messages tree.
    pub fn keys(s: &Store) -> Vec<Vec<u8>> {
        s.backend
            .scan(Tree::Messages, &[0], &[255], usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::msg;
    use super::*;

    #[test]
    fn records_round_trip() {
        let m = Message {
            received_ms: 1_764_000_000_123,
            ..msg("hello")
        };
        let mut buf = Vec::new();
        encode_record(&m, &mut buf);
        let back = decode_record(&buf).unwrap();
        assert_eq!(back.exchange.as_str(), "x");
        assert_eq!(back.routing_key.as_str(), "rk");
        assert_eq!(back.properties, m.properties);
        assert_eq!(back.body, m.body);
        assert!(back.persistent);
        assert_eq!(back.priority, 3);
        assert_eq!(back.received_ms, 1_764_000_000_123);
        assert_eq!(record_body_len(&buf), Some(5));
        assert!(decode_record(&buf[..5]).is_err());
        assert_eq!(record_body_len(&buf[..5]), None);
    }

    #[test]
    fn version_1_records_are_still_read() {
        // v1, persistent, priority 3, "x", "rk", 3 bytes of properties, body.
        let mut v1 = vec![1, 1, 3, 1, b'x', 2, b'r', b'k', 0, 0, 0, 3, 0x10, 0x00, 2];
        v1.extend_from_slice(b"old");
        let back = decode_record(&v1).unwrap();
        assert_eq!(back.routing_key.as_str(), "rk");
        assert_eq!(back.body.as_ref(), b"old");
        assert_eq!(back.received_ms, 0);
        assert_eq!(record_body_len(&v1), Some(3));
    }
}
