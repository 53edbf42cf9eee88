//! Message deduplication, with LavinMQ's names: a queue or an exchange
//! with `x-message-deduplication: true` drops a message whose
//! deduplication id — the `x-deduplication-header` header, or the header
//! the `x-deduplication-header` argument names — it has seen within its
//! window: the last `x-cache-size` ids (default: no limit), each for
//! `x-cache-ttl` ms (default: until pushed out). A dropped duplicate is
//! still confirmed to its publisher. Beyond LavinMQ, whose cache is lost on
//! restart, a durable queue keeps its window in the store (a queue of ids
//! of its own), so a restart does not let duplicates through.

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::fields;
use crate::message::{self, Message};
use crate::store::{Slot, Store, Stored};

/// The header a message's deduplication id is in, unless the argument
/// names another.
pub const DEFAULT_HEADER: &str = "x-deduplication-header";
/// A durable queue's window lives under its uid with this bit set.
const WINDOW_SPACE: u64 = 1 << 61;
const PAGE: usize = 4096;

/// What `x-message-deduplication` and its companions ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupArgs {
    pub header: String,
    pub size: Option<u64>,
    pub ttl_ms: Option<u64>,
}

impl DedupArgs {
    /// From queue or exchange arguments: `None` unless deduplication is
    /// on; `Err` names a bad value.
    pub fn parse(arguments: &FieldTable) -> Result<Option<DedupArgs>, String> {
        let args = arguments.inner();
        match args.get("x-message-deduplication") {
            None | Some(AMQPValue::Boolean(false)) => return Ok(None),
            Some(AMQPValue::Boolean(true)) => {}
            Some(other) => {
                return Err(format!(
                    "x-message-deduplication must be a boolean, not {}",
                    fields::type_name(other)
                ));
            }
        }
        let number = |name: &str| -> Result<Option<u64>, String> {
            match args.get(name) {
                None => Ok(None),
                Some(v) => fields::int_value(v)
                    .and_then(|n| u64::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("{name} must be a non-negative integer")),
            }
        };
        let header = match args.get("x-deduplication-header") {
            None => DEFAULT_HEADER.to_string(),
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Some(AMQPValue::ShortString(s)) => s.to_string(),
            Some(other) => {
                return Err(format!(
                    "x-deduplication-header must be a string, not {}",
                    fields::type_name(other)
                ));
            }
        };
        Ok(Some(DedupArgs {
            header,
            size: number("x-cache-size")?,
            ttl_ms: number("x-cache-ttl")?,
        }))
    }
}

/// What a message is to the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Its id is in the window: drop it.
    Duplicate,
    /// A new id: remember it once the message is taken.
    New(Vec<u8>),
    /// No deduplication id: not deduplicated.
    NoId,
}

#[derive(Debug, Default)]
struct Window {
    /// Id → (when seen, its sequence number).
    ids: FxHashMap<Vec<u8>, (u64, u64)>,
    /// Ids in the order seen, with their sequence numbers (a later
    /// sighting of the same id supersedes an earlier entry).
    order: VecDeque<(Vec<u8>, u64)>,
    next_seq: u64,
}

/// One queue's or exchange's window of ids seen.
#[derive(Debug)]
pub struct DedupCache {
    args: DedupArgs,
    /// Where a durable queue keeps its window.
    kept: Option<(Arc<Store>, u64)>,
    window: Mutex<Window>,
}

impl DedupCache {
    /// A window in memory only (exchanges, transient queues).
    pub fn new(args: DedupArgs) -> DedupCache {
        DedupCache {
            args,
            kept: None,
            window: Mutex::new(Window::default()),
        }
    }

    /// A durable queue's window, kept in `store` beside queue `uid`'s
    /// messages, and read back from it (after a restart).
    pub fn kept(args: DedupArgs, store: Arc<Store>, uid: u64, now_ms: u64) -> DedupCache {
        let cache = DedupCache {
            args,
            kept: Some((store, uid | WINDOW_SPACE)),
            window: Mutex::new(Window::default()),
        };
        cache.read_back(now_ms);
        cache
    }

    fn read_back(&self, now_ms: u64) {
        let Some((store, uid)) = &self.kept else {
            return;
        };
        let mut w = self.window.lock();
        let mut from = 0;
        loop {
            let page = match store.page_in(*uid, 0, from, PAGE) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!("cannot read a deduplication window: {e}");
                    return;
                }
            };
            let full = page.len() >= PAGE;
            for r in page {
                from = r.seq + 1;
                let id = r.message.body.to_vec();
                w.next_seq = w.next_seq.max(r.seq + 1);
                if let Some((_, old)) = w.ids.insert(id.clone(), (r.message.received_ms, r.seq)) {
                    self.forget(old);
                }
                w.order.push_back((id, r.seq));
            }
            if !full {
                break;
            }
        }
        self.trim(&mut w, now_ms);
    }

    /// The deduplication id a message carries, if any.
    fn id_of(&self, m: &Message) -> Option<Vec<u8>> {
        message::header_text(&m.properties, &self.args.header).map(String::into_bytes)
    }

    /// Whether `m` is a duplicate within the window (nothing is
    /// remembered yet: see [`Self::remember`]).
    pub fn check(&self, m: &Message, now_ms: u64) -> Seen {
        let Some(id) = self.id_of(m) else {
            return Seen::NoId;
        };
        let w = self.window.lock();
        match w.ids.get(&id) {
            Some((seen, _)) if self.args.ttl_ms.is_none_or(|ttl| now_ms < seen + ttl) => {
                Seen::Duplicate
            }
            _ => Seen::New(id),
        }
    }

    /// Whether `m` is a duplicate, remembering its id if not, in one step
    /// (an exchange: nothing after it can refuse the message).
    pub fn is_duplicate(&self, m: &Message, now_ms: u64) -> bool {
        let Some(id) = self.id_of(m) else {
            return false;
        };
        let mut w = self.window.lock();
        if let Some((seen, _)) = w.ids.get(&id)
            && self.args.ttl_ms.is_none_or(|ttl| now_ms < seen + ttl)
        {
            return true;
        }
        self.insert(&mut w, id, now_ms);
        false
    }

    /// Remember an id whose message was taken.
    pub fn remember(&self, id: Vec<u8>, now_ms: u64) {
        let mut w = self.window.lock();
        self.insert(&mut w, id, now_ms);
    }

    fn insert(&self, w: &mut Window, id: Vec<u8>, now_ms: u64) {
        let seq = w.next_seq;
        w.next_seq += 1;
        if let Some((store, uid)) = &self.kept {
            let record = Message {
                body: Bytes::from(id.clone()),
                received_ms: now_ms,
                persistent: true,
                ..Message::empty()
            };
            let slot = Slot {
                uid: *uid,
                level: 0,
                seq,
            };
            store.put_entry(slot, 0, &Arc::new(record));
        }
        if let Some((_, old)) = w.ids.insert(id.clone(), (now_ms, seq)) {
            self.forget(old);
        }
        w.order.push_back((id, seq));
        self.trim(w, now_ms);
    }

    /// Push out ids past the size limit or the time limit.
    fn trim(&self, w: &mut Window, now_ms: u64) {
        while let Some((id, seq)) = w.order.front() {
            let current = w.ids.get(id).filter(|(_, s)| s == seq).copied();
            let Some((seen, _)) = current else {
                // Superseded by a later sighting.
                w.order.pop_front();
                continue;
            };
            let too_many = self.args.size.is_some_and(|max| w.ids.len() as u64 > max);
            let too_old = self.args.ttl_ms.is_some_and(|ttl| now_ms >= seen + ttl);
            if !(too_many || too_old) {
                break;
            }
            if let Some((id, seq)) = w.order.pop_front() {
                w.ids.remove(&id);
                self.forget(seq);
            }
        }
    }

    /// A kept id left the window: out of the store too.
    fn forget(&self, seq: u64) {
        if let Some((store, uid)) = &self.kept {
            let slot = Slot {
                uid: *uid,
                level: 0,
                seq,
            };
            if let Err(e) = store.remove(slot, Stored::Entry, false) {
                tracing::error!("cannot remove a deduplication id: {e}");
            }
        }
    }

    /// Ids in the window.
    pub fn len(&self) -> usize {
        self.window.lock().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue is gone: its kept window too.
    pub fn drop_kept(&self) {
        if let Some((store, uid)) = &self.kept {
            store.drop_queue(*uid);
        }
    }
}
