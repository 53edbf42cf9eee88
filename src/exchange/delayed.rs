//! The delayed-message exchange (`x-delayed-message`, the community
//! plugin's wire API, built in): it routes like its `x-delayed-type`
//! (direct, fanout, topic or headers), except that a message with an
//! `x-delay` header of 1 ms to 2³²−1 ms is held and routed that much later.
//!
//! [`DelayBuffer`] holds one exchange's messages, paged like a long queue:
//! messages due in the same second share a time bucket, and each bucket is
//! kept in the store as a queue of its own (its uid made of the exchange's
//! and the bucket's number), appended in arrival order. Memory holds only
//! the buckets due within the next [`BUCKET_MS`] (read back whole and sorted
//! by due time) — however many messages wait for later, they cost memory
//! only when their second comes. A persistent message in a durable
//! exchange is a durable entry (it survives restarts and is confirmed once
//! written); a transient one is paged out (and gone after a restart, as
//! with queues). The broker's timer (`broker::delayed`) takes what is due
//! and routes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::Mutex;

use super::ExchangeKind;
use crate::error::AmqpError;
use crate::message::{self, Message};
use crate::store::{Slot, Store, StoreResult, Stored};

/// The longest delay (the plugin's Erlang timer limit).
pub const MAX_DELAY_MS: u64 = u32::MAX as u64;
/// The width of a time bucket.
pub const BUCKET_MS: u64 = 1000;
/// How many are read back from the store at a time.
const PAGE: usize = 4096;
/// Bucket numbers count seconds from 2020-01-01 (32 bits: to 2156).
const EPOCH_MS: u64 = 1_577_836_800_000;
/// Bucket uids: this bit, the exchange's uid above bit 32, the bucket
/// number below — far above the uids queues count up from 1.
const BUCKET_SPACE: u64 = 1 << 62;

/// The delay a message asks for, as the plugin reads `x-delay`: an integer
/// (or a float, truncated, or a string of digits); `None` routes at once —
/// absent, zero, negative, beyond [`MAX_DELAY_MS`], or not a number.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let value = headers?.inner().get("x-delay")?;
    let ms: i128 = match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().parse().ok()?,
        AMQPValue::Float(f) => *f as i128,
        AMQPValue::Double(d) => *d as i128,
        other => crate::fields::int_value(other)?,
    };
    (1..=i128::from(MAX_DELAY_MS))
        .contains(&ms)
        .then_some(ms as u64)
}

/// The type a delayed-message exchange routes as, from its arguments;
/// the plugin's refusals otherwise.
pub fn delayed_type(arguments: &FieldTable) -> Result<ExchangeKind, AmqpError> {
    let name = match arguments.inner().get("x-delayed-type") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        // The plugin's text, typos and all: clients match on it.
        _ => {
            return Err(AmqpError::precondition_failed(
                "Invalid argument, 'x-delayed-type' must bean existing exchnage type",
            ));
        }
    };
    match ExchangeKind::parse(&name) {
        Some(
            kind @ (ExchangeKind::Direct
            | ExchangeKind::Fanout
            | ExchangeKind::Topic
            | ExchangeKind::Headers
            | ExchangeKind::ConsistentHash
            | ExchangeKind::ModulusHash),
        ) => Ok(kind),
        _ => Err(AmqpError::command_invalid(format!(
            "invalid exchange type '{name}'"
        ))),
    }
}

/// The message as the plugin routes it when its time comes (`now_ms`):
/// `x-delay` set to minus the delay, so it is not delayed again
/// downstream, and received now — its queues count TTLs and waits from
/// here, as for a message published now.
pub fn swap_delay_header(m: &Arc<Message>, delay_ms: u64, now_ms: u64) -> Arc<Message> {
    let Some(props) = message::parse(&m.properties) else {
        return Arc::new(Message {
            received_ms: now_ms,
            ..m.as_ref().clone()
        });
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        "x-delay".into(),
        AMQPValue::LongInt(-(i32::try_from(delay_ms).unwrap_or(i32::MAX))),
    );
    Arc::new(Message {
        properties: message::encode(&props.with_headers(headers)),
        received_ms: now_ms,
        ..m.as_ref().clone()
    })
}

/// What to do with a mandatory message that routes nowhere when its time
/// comes (return it to its publisher, if its channel is still open).
pub type OnUnroutable = Box<dyn FnOnce(&Arc<Message>) + Send>;

struct Held {
    message: Arc<Message>,
    /// Where the store has it (a durable entry is removed once routed).
    slot: Slot,
    stored: Stored,
    delay_ms: u64,
    /// Kept in memory only: a message paged out or restored has none.
    unroutable: Option<OnUnroutable>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("slot", &self.slot)
            .field("stored", &self.stored)
            .field("delay_ms", &self.delay_ms)
            .finish_non_exhaustive()
    }
}

/// One time bucket not read into memory yet.
#[derive(Debug, Default)]
struct Bucket {
    /// Its next sequence number (arrival order).
    next_seq: u64,
    /// Messages in it (unknown for a restored bucket until read: 0).
    count: u64,
}

#[derive(Debug, Default)]
struct Buffer {
    /// Messages of the buckets read into memory, by (due ms, arrival).
    held: BTreeMap<(u64, u64), Held>,
    arrivals: u64,
    /// Buckets below this number are in `held`.
    loaded_below: u32,
    /// Buckets still only in the store, by number.
    stored: BTreeMap<u32, Bucket>,
    /// Next sequence number of each bucket read in (for late arrivals).
    loaded_seq: BTreeMap<u32, u64>,
}

/// One delayed-message exchange's held messages.
#[derive(Debug)]
pub struct DelayBuffer {
    uid: u64,
    /// Persistent messages are durable entries (a durable exchange).
    durable: bool,
    /// Whether buckets are paged out (not over a store that keeps nothing).
    pages: bool,
    store: Arc<Store>,
    buffer: Mutex<Buffer>,
    /// Messages held, in memory and in the store (signed: a restored
    /// buffer delivers while its store is still being counted).
    count: AtomicI64,
}

/// One message whose time came.
pub struct Due {
    pub message: Arc<Message>,
    pub delay_ms: u64,
    pub unroutable: Option<OnUnroutable>,
}

fn bucket_of(due_ms: u64) -> u32 {
    u32::try_from(due_ms.saturating_sub(EPOCH_MS) / BUCKET_MS).unwrap_or(u32::MAX)
}

fn bucket_start(bucket: u32) -> u64 {
    EPOCH_MS + u64::from(bucket) * BUCKET_MS
}

impl DelayBuffer {
    /// A new exchange's, holding nothing, under store uid `uid`. Over a
    /// store that keeps nothing (`--ephemeral`) everything stays in
    /// memory, as queues do there.
    pub fn new(uid: u64, durable: bool, store: Arc<Store>) -> DelayBuffer {
        let pages = store.is_durable() && uid < (1 << 30);
        DelayBuffer {
            uid,
            durable: durable && pages,
            pages,
            store,
            buffer: Mutex::new(Buffer::default()),
            count: AtomicI64::new(0),
        }
    }

    /// A durable exchange's after a restart: its buckets are found in the
    /// store (counted by [`Self::count_recovered`], in the background).
    pub fn recovered(uid: u64, store: Arc<Store>) -> DelayBuffer {
        let buffer = DelayBuffer::new(uid, true, store);
        if buffer.pages {
            let space = buffer.bucket_uid(0);
            match buffer.store.uids_with_entries(space, space + (1 << 32)) {
                Ok(uids) => {
                    let mut b = buffer.buffer.lock();
                    for uid in uids {
                        let number = (uid & 0xffff_ffff) as u32;
                        let next_seq = match buffer.store.entry_bounds(uid, 0) {
                            Ok(Some((_, last))) => last + 1,
                            _ => 0,
                        };
                        b.stored.insert(number, Bucket { next_seq, count: 0 });
                    }
                }
                Err(e) => tracing::error!("cannot find delayed messages: {e}"),
            }
        }
        buffer
    }

    /// Count what a restored buffer found (reads every entry: run it off
    /// the runtime).
    pub fn count_recovered(&self) {
        let numbers: Vec<u32> = self.buffer.lock().stored.keys().copied().collect();
        let mut total = 0u64;
        for number in numbers {
            match self.store.count_entries(self.bucket_uid(number), 0, 0) {
                Ok(n) => {
                    if let Some(b) = self.buffer.lock().stored.get_mut(&number) {
                        b.count = n;
                    }
                    total += n;
                }
                Err(e) => tracing::error!("cannot count delayed messages: {e}"),
            }
        }
        self.count
            .fetch_add(i64::try_from(total).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// The store uid of its time bucket `number`.
    fn bucket_uid(&self, number: u32) -> u64 {
        BUCKET_SPACE | (self.uid << 32) | u64::from(number)
    }

    /// The uid it was made with (kept in its exchange's record).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Hold `message` until `now_ms + delay_ms`. Returns whether it was
    /// written as a durable entry (confirm after the commit), and whether it
    /// may be the earliest due now (the timer must look again).
    pub fn add(
        &self,
        message: Arc<Message>,
        delay_ms: u64,
        now_ms: u64,
        unroutable: Option<OnUnroutable>,
    ) -> (bool, bool) {
        let due = now_ms.saturating_add(delay_ms);
        let number = bucket_of(due);
        let durable = self.durable && message.persistent;
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut b = self.buffer.lock();
        if self.pages && number >= b.loaded_below {
            // Its second is not near: only in the store. A bucket earlier
            // than any stored has the timer look again (to read it in time).
            let earliest = b.stored.first_key_value().is_none_or(|(n, _)| number < *n);
            let bucket = b.stored.entry(number).or_default();
            let slot = Slot {
                uid: self.bucket_uid(number),
                level: 0,
                seq: bucket.next_seq,
            };
            bucket.next_seq += 1;
            bucket.count += 1;
            if durable {
                self.store.put_entry(slot, 0, &message);
            } else {
                self.store.page_out(slot, 0, &message);
            }
            return (durable, earliest);
        }
        let seq = b.loaded_seq.entry(number).or_insert(0);
        let slot = Slot {
            uid: self.bucket_uid(number),
            level: 0,
            seq: *seq,
        };
        *seq += 1;
        let stored = if durable {
            self.store.put_entry(slot, 0, &message)
        } else {
            Stored::No
        };
        b.arrivals += 1;
        let key = (due, b.arrivals);
        let earliest = b
            .held
            .first_key_value()
            .is_none_or(|(first, _)| key < *first);
        b.held.insert(
            key,
            Held {
                message,
                slot,
                stored,
                delay_ms,
                unroutable,
            },
        );
        (durable, earliest)
    }

    /// Read into memory every bucket that starts before `until_ms`.
    fn load(&self, b: &mut Buffer, until_ms: u64) {
        while let Some((&number, _)) = b.stored.first_key_value() {
            if bucket_start(number) >= until_ms {
                break;
            }
            let uid = self.bucket_uid(number);
            let mut from = 0;
            loop {
                let page = match self.store.page_in(uid, 0, from, PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!("cannot read delayed messages: {e}");
                        return;
                    }
                };
                let full = page.len() >= PAGE;
                for r in page {
                    from = r.seq + 1;
                    let delay_ms = message::parse(&r.message.properties)
                        .and_then(|p| delay_of(p.headers().as_ref()))
                        .unwrap_or(0);
                    let due = r.message.received_ms.saturating_add(delay_ms);
                    b.arrivals += 1;
                    let key = (due, b.arrivals);
                    let slot = Slot {
                        uid,
                        level: 0,
                        seq: r.seq,
                    };
                    let held = Held {
                        message: Arc::new(r.message),
                        slot,
                        stored: r.stored,
                        delay_ms,
                        unroutable: None,
                    };
                    b.held.insert(key, held);
                }
                if !full {
                    break;
                }
            }
            let next_seq = b.stored.remove(&number).map_or(from, |s| s.next_seq);
            b.loaded_seq.insert(number, next_seq);
            b.loaded_below = b.loaded_below.max(number + 1);
        }
        // Buckets are read a second ahead of their start.
        b.loaded_below = b.loaded_below.max(bucket_of(until_ms));
    }

    /// When the timer must look again: the earliest held message's due
    /// time, or a second before the next stored bucket starts (to read it).
    pub fn next_due(&self) -> Option<u64> {
        let b = self.buffer.lock();
        let held = b.held.first_key_value().map(|((due, _), _)| *due);
        let bucket = b
            .stored
            .first_key_value()
            .map(|(n, _)| bucket_start(*n).saturating_sub(BUCKET_MS));
        match (held, bucket) {
            (Some(h), Some(s)) => Some(h.min(s)),
            (h, s) => h.or(s),
        }
    }

    /// Take every message due by `now_ms`, in due order, out of the buffer
    /// and the store; read the buckets of the next second in.
    pub fn take_due(&self, now_ms: u64) -> Vec<Due> {
        let mut out = Vec::new();
        let mut b = self.buffer.lock();
        if self.pages {
            self.load(&mut b, now_ms.saturating_add(BUCKET_MS));
            // Past buckets take no more arrivals (a due time is in the future).
            let current = bucket_of(now_ms);
            b.loaded_seq.retain(|n, _| *n >= current);
        }
        while let Some(entry) = b.held.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let held = entry.remove();
            if held.stored != Stored::No
                && let Err(e) = self.store.remove(held.slot, held.stored, false)
            {
                tracing::error!("cannot remove a delayed message: {e}");
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
            out.push(Due {
                message: held.message,
                delay_ms: held.delay_ms,
                unroutable: held.unroutable,
            });
        }
        out
    }

    /// Messages held.
    pub fn len(&self) -> u64 {
        u64::try_from(self.count.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Nothing held, in memory or in the store.
    pub fn is_empty(&self) -> bool {
        let b = self.buffer.lock();
        b.held.is_empty() && b.stored.is_empty()
    }

    /// Drop every held message `matches` selects, in the store and in
    /// memory (erasure by header); returns how many. Blocks on the store:
    /// the stored buckets are read without the buffer's lock, so neither
    /// publishers nor the timer wait for the scan.
    pub fn erase(&self, matches: &dyn Fn(&Message) -> bool) -> StoreResult<u64> {
        let numbers: Vec<u32> = self.buffer.lock().stored.keys().copied().collect();
        let mut found = Vec::new();
        for number in numbers {
            let uid = self.bucket_uid(number);
            for (_, seq) in self.store.matching(uid, 1, matches)? {
                found.push((number, Slot { uid, level: 0, seq }));
            }
        }
        let mut b = self.buffer.lock();
        let mut erased = 0;
        for (number, slot) in found {
            // A bucket read in meanwhile is handled with memory below.
            let Some(bucket) = b.stored.get_mut(&number) else {
                continue;
            };
            if self.store.take_stored(slot, false, false)?.is_some() {
                bucket.count = bucket.count.saturating_sub(1);
                erased += 1;
            }
        }
        let in_memory: Vec<(u64, u64)> = b
            .held
            .iter()
            .filter(|(_, h)| matches(&h.message))
            .map(|(k, _)| *k)
            .collect();
        for key in in_memory {
            if let Some(h) = b.held.remove(&key) {
                if h.stored != Stored::No {
                    self.store.remove(h.slot, h.stored, false)?;
                }
                erased += 1;
            }
        }
        self.count.fetch_sub(erased as i64, Ordering::Relaxed);
        Ok(erased)
    }

    /// The exchange is gone: so are its messages.
    pub fn drop_all(&self) {
        let mut b = self.buffer.lock();
        let numbers: Vec<u32> = b
            .stored
            .keys()
            .chain(b.loaded_seq.keys())
            .copied()
            .collect();
        *b = Buffer::default();
        self.count.store(0, Ordering::Relaxed);
        for number in numbers {
            self.store.drop_queue(self.bucket_uid(number));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{LongString, ShortString};

    fn with(value: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(ShortString::from("x-delay"), value);
        t
    }

    #[test]
    fn x_delay_is_read_as_the_plugin_reads_it() {
        assert_eq!(delay_of(Some(&with(AMQPValue::LongInt(5000)))), Some(5000));
        assert_eq!(delay_of(Some(&with(AMQPValue::LongLongInt(1)))), Some(1));
        assert_eq!(delay_of(Some(&with(AMQPValue::Double(2.9)))), Some(2));
        let text = AMQPValue::LongString(LongString::from("300"));
        assert_eq!(delay_of(Some(&with(text))), Some(300));
        for at_once in [
            AMQPValue::LongInt(0),
            AMQPValue::LongInt(-5),
            AMQPValue::LongLongInt(1 << 33),
            AMQPValue::LongString(LongString::from("soon")),
            AMQPValue::Boolean(true),
        ] {
            assert_eq!(delay_of(Some(&with(at_once))), None);
        }
        assert_eq!(delay_of(None), None);
        assert_eq!(delay_of(Some(&FieldTable::default())), None);
    }

    #[test]
    fn the_delayed_type_must_be_a_type_it_can_route_as() {
        let args = |t: &str| {
            let mut a = FieldTable::default();
            a.insert("x-delayed-type".into(), AMQPValue::LongString(t.into()));
            a
        };
        assert_eq!(delayed_type(&args("topic")).ok(), Some(ExchangeKind::Topic));
        let missing = delayed_type(&FieldTable::default()).map(drop);
        assert_eq!(missing.map_err(|e| e.code.code()), Err(406));
        let unknown = delayed_type(&args("x-delayed-message")).map(drop);
        assert_eq!(unknown.map_err(|e| e.code.code()), Err(503));
    }

    #[test]
    fn messages_come_out_in_due_order_never_early() {
        let store = Arc::new(Store::in_memory_for_tests());
        let buffer = DelayBuffer::new(7, true, store);
        let now = EPOCH_MS + 10_000_000;
        for (i, delay) in [5000u64, 1200, 3000, 1, 2500].iter().enumerate() {
            // As published: the x-delay header (read again when paged in).
            let props = amq_protocol::protocol::BasicProperties::default()
                .with_headers(with(AMQPValue::LongLongInt(*delay as i64)));
            let m = Message {
                properties: message::encode(&props),
                body: bytes::Bytes::from(format!("{delay}")),
                persistent: i % 2 == 0,
                received_ms: now,
                ..Message::empty()
            };
            buffer.add(Arc::new(m), *delay, now, None);
        }
        assert_eq!(buffer.len(), 5);
        assert!(buffer.take_due(now).is_empty());
        let mut seen = Vec::new();
        for t in (now..now + 6000).step_by(100) {
            for due in buffer.take_due(t) {
                let delay: u64 = String::from_utf8_lossy(&due.message.body).parse().unwrap();
                assert!(now + delay <= t, "early: {delay} at {t}");
                seen.push(delay);
            }
        }
        assert_eq!(seen, vec![1, 1200, 2500, 3000, 5000]);
        assert!(buffer.is_empty());
    }
}
