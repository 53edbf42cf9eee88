//! One stream's log: appends, the durable high-water mark readers stop
//! at, the recent records kept in memory, retention, and the offsets
//! consumers asked the broker to remember.
//!
//! An append only takes the next offset and adds the record's bytes to a
//! pending buffer (and the message to the in-memory tail). The group-commit
//! thread writes what is pending to the active segment, rolls to a new
//! segment when it is full, syncs, and only then moves `committed` and
//! wakes the readers waiting at the tail — so a consumer never sees a
//! message a crash could take back, and a confirm follows the same sync.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::record::{Chunk, RecordRef, bloom_bits};
use super::segment::{self, ChunkIndex, Segment};
use super::{Entry, Retention};
use crate::message::Message;
use crate::store::{Backend, StoreResult, Tree};

/// Largest chunk one sync writes: an index entry per this many bytes keeps
/// seeks and filter skips fine-grained.
const CHUNK_MAX_BYTES: u64 = 128 * 1024;

/// A record in the in-memory tail.
#[derive(Clone, Debug)]
pub struct TailRecord {
    pub offset: u64,
    pub timestamp: u64,
    pub filter: Option<Bytes>,
    pub message: Arc<Message>,
    /// Erased since it was appended (readers skip it).
    pub erased: bool,
}

#[derive(Debug)]
struct Appender {
    next_offset: u64,
    last_timestamp: u64,
    /// Record bytes not yet written, and each record's place in them.
    pending: BytesMut,
    pending_meta: Vec<Meta>,
    /// The newest records, for readers at the tail.
    tail: VecDeque<TailRecord>,
    tail_bytes: usize,
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    offset: u64,
    timestamp: u64,
    len: u64,
    /// Filter bits (0 and `unfiltered` for a record without a value).
    bloom: u64,
    unfiltered: bool,
}

/// What readers see of a segment.
#[derive(Clone, Debug)]
pub struct SegmentView {
    pub first_offset: u64,
    pub file: Arc<std::fs::File>,
    pub chunks: ChunkIndex,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Log {
    pub uid: u64,
    pub(super) dir: PathBuf,
    append: Mutex<Appender>,
    /// The active segment, written by the group-commit thread only (and
    /// held by an erasure while it rewrites records, so that segments
    /// neither roll nor go meanwhile).
    pub(super) writer: Mutex<Segment>,
    pub(super) segments: RwLock<Vec<SegmentView>>,
    /// Held for reading while a chunk is read from a segment, for writing
    /// while an erasure rewrites records in place: no reader sees a
    /// half-rewritten record.
    pub(super) rewriting: RwLock<()>,
    /// Offsets below this are durable and may be read.
    committed: AtomicU64,
    watch: watch::Sender<u64>,
    /// Set when there is something to sync.
    pub(super) dirty: AtomicBool,
    retention: Mutex<Retention>,
    tail_limit: usize,
    /// Seals each record's properties and body (encryption at rest).
    pub(super) keys: Option<Arc<crate::store::sealed::Keyring>>,
    /// Offsets consumers asked the broker to remember, by consumer tag;
    /// `dirty_tracked` are not written yet.
    tracked: Mutex<HashMap<String, u64>>,
    dirty_tracked: Mutex<HashMap<String, u64>>,
    pub(super) deleted: AtomicBool,
}

/// The key of a tracked offset in the messages tree.
pub(super) fn tracking_key(uid: u64, tag: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + tag.len());
    k.push(b'o');
    k.extend_from_slice(&uid.to_be_bytes());
    k.extend_from_slice(tag.as_bytes());
    k
}

impl Log {
    /// Open the log in `dir` (created if missing), checking its segments.
    pub(super) fn open(
        uid: u64,
        dir: PathBuf,
        tail_limit: usize,
        backend: &dyn Backend,
        keys: Option<Arc<crate::store::sealed::Keyring>>,
    ) -> StoreResult<Log> {
        std::fs::create_dir_all(&dir).map_err(|e| segment::io("cannot create", &dir, e))?;
        super::erase::finish_interrupted(&dir)?;
        let firsts = segment::list(&dir)?;
        let mut segments: Vec<Segment> = Vec::new();
        for first in firsts {
            let s = Segment::open(&dir, first)?;
            // A gap (a segment lost or cut short): later segments cannot
            // follow it, so the log ends where the records stop.
            if let Some(prev) = segments.last()
                && prev.next_offset() != s.first_offset
            {
                tracing::error!(
                    log = %dir.display(),
                    "stream segment {} does not follow the one before (expected offset {}); \
                     the log ends before it",
                    s.first_offset,
                    prev.next_offset()
                );
                break;
            }
            segments.push(s);
        }
        // Empty segments other than the last carry nothing.
        let writer = match segments.pop() {
            Some(last) => last,
            None => Segment::create(&dir, 0)?,
        };
        let mut views: Vec<SegmentView> = Vec::new();
        for s in segments.iter().chain(std::iter::once(&writer)) {
            views.push(SegmentView {
                first_offset: s.first_offset,
                file: Arc::new(s.reader()?),
                chunks: s.chunks.clone(),
                bytes: s.bytes,
            });
        }
        let next = writer.next_offset();
        let last_timestamp = views
            .iter()
            .rev()
            .find_map(|v| v.chunks.last().map(|c| c.last_timestamp))
            .unwrap_or(0);
        let mut tracked = HashMap::new();
        let prefix = tracking_key(uid, "");
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        for (k, v) in backend.scan(Tree::Messages, &prefix, &end, usize::MAX)? {
            if let (Ok(tag), Ok(bytes)) = (
                String::from_utf8(k[prefix.len()..].to_vec()),
                <[u8; 8]>::try_from(v.as_slice()),
            ) {
                tracked.insert(tag, u64::from_be_bytes(bytes));
            }
        }
        let (watch, _) = watch::channel(next);
        Ok(Log {
            uid,
            dir,
            append: Mutex::new(Appender {
                next_offset: next,
                last_timestamp,
                pending: BytesMut::new(),
                pending_meta: Vec::new(),
                tail: VecDeque::new(),
                tail_bytes: 0,
            }),
            writer: Mutex::new(writer),
            segments: RwLock::new(views),
            rewriting: RwLock::new(()),
            committed: AtomicU64::new(next),
            watch,
            dirty: AtomicBool::new(false),
            retention: Mutex::new(Retention::default()),
            tail_limit,
            keys,
            tracked: Mutex::new(tracked),
            dirty_tracked: Mutex::new(HashMap::new()),
            deleted: AtomicBool::new(false),
        })
    }

    /// Append one record. `make` gets the record's offset and timestamp
    /// and returns what to store (the message carries its offset in its
    /// headers). Returns the offset.
    pub fn append(&self, now_ms: u64, make: impl FnOnce(u64, u64) -> Entry) -> u64 {
        let mut a = self.append.lock();
        let offset = a.next_offset;
        // Timestamps never go back, so a time index lookup is a search.
        let timestamp = now_ms.max(a.last_timestamp);
        let entry = make(offset, timestamp);
        let m = &entry.message;
        let len = RecordRef {
            offset,
            timestamp,
            filter: entry.filter.as_deref(),
            exchange: m.exchange.as_str().as_bytes(),
            routing_key: m.routing_key.as_str().as_bytes(),
            properties: &m.properties,
            body: &m.body,
        }
        .encode_sealed(&mut a.pending, self.keys.as_deref());
        a.pending_meta.push(Meta {
            offset,
            timestamp,
            len: len as u64,
            bloom: entry.filter.as_deref().map_or(0, bloom_bits),
            unfiltered: entry.filter.is_none(),
        });
        a.next_offset += 1;
        a.last_timestamp = timestamp;
        a.tail_bytes += m.body.len();
        a.tail.push_back(TailRecord {
            offset,
            timestamp,
            filter: entry.filter,
            message: entry.message,
            erased: false,
        });
        // Keep at least what is not written yet.
        while a.tail_bytes > self.tail_limit
            && a.tail.front().is_some_and(|t| t.offset < self.committed())
        {
            if let Some(t) = a.tail.pop_front() {
                a.tail_bytes -= t.message.body.len();
            }
        }
        drop(a);
        self.dirty.store(true, Ordering::Release);
        offset
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.append.lock().next_offset
    }

    /// Offsets below this are durable and readable.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The first offset still kept.
    pub fn first_offset(&self) -> u64 {
        self.segments.read().first().map_or(0, |s| s.first_offset)
    }

    /// Where the last chunk written starts (RabbitMQ's "last").
    pub fn last_chunk_start(&self) -> Option<u64> {
        self.segments
            .read()
            .iter()
            .rev()
            .find_map(|s| s.chunks.last().map(|c| c.first_offset))
    }

    /// Woken whenever `committed` moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.watch.subscribe()
    }

    /// Up to `max` committed records from `from` held in memory; empty if
    /// `from` is not there (older: read the segments).
    pub fn tail(&self, from: u64, max: usize) -> Vec<TailRecord> {
        let committed = self.committed();
        let a = self.append.lock();
        let Some(first) = a.tail.front().map(|t| t.offset) else {
            return Vec::new();
        };
        if from < first {
            return Vec::new();
        }
        let skip = (from - first) as usize;
        a.tail
            .iter()
            .skip(skip)
            .take_while(|t| t.offset < committed)
            .take(max)
            .cloned()
            .collect()
    }

    /// Mark erased records of the in-memory tail (`offsets` ascending).
    pub(super) fn erase_in_tail(&self, offsets: &[u64]) {
        let mut a = self.append.lock();
        let Some(first) = a.tail.front().map(|t| t.offset) else {
            return;
        };
        for &o in offsets.iter().filter(|o| **o >= first) {
            if let Some(t) = a.tail.get_mut((o - first) as usize) {
                t.erased = true;
                t.message = Arc::new(Message::empty());
                t.filter = None;
            }
        }
    }

    /// The oldest offset held in the in-memory tail.
    pub fn tail_start(&self) -> Option<u64> {
        self.append.lock().tail.front().map(|t| t.offset)
    }

    pub fn set_retention(&self, r: Retention) {
        *self.retention.lock() = r;
    }

    pub fn retention(&self) -> Retention {
        *self.retention.lock()
    }

    /// Total bytes of record data kept, and the number of segments.
    pub fn size(&self) -> (u64, usize) {
        let s = self.segments.read();
        (s.iter().map(|v| v.bytes).sum(), s.len())
    }

    /// Remember `offset` for consumer `tag`; written with the next sync.
    pub fn track(&self, tag: &str, offset: u64) {
        self.tracked.lock().insert(tag.to_string(), offset);
        self.dirty_tracked.lock().insert(tag.to_string(), offset);
        self.dirty.store(true, Ordering::Release);
    }

    pub fn tracked(&self, tag: &str) -> Option<u64> {
        self.tracked.lock().get(tag).copied()
    }

    pub fn tracked_all(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .tracked
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all
    }

    /// Write what is pending, roll segments as they fill, sync; then let
    /// readers see it. Run by the group-commit thread (and at shutdown).
    pub(super) fn sync(&self, backend: &dyn Backend) -> StoreResult<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let tracked = std::mem::take(&mut *self.dirty_tracked.lock());
        for (tag, offset) in tracked {
            backend.insert(
                Tree::Messages,
                &tracking_key(self.uid, &tag),
                &offset.to_be_bytes(),
            )?;
        }
        let mut writer = self.writer.lock();
        let (data, metas) = {
            let mut a = self.append.lock();
            (
                std::mem::take(&mut a.pending).freeze(),
                std::mem::take(&mut a.pending_meta),
            )
        };
        let Some(last) = metas.last().copied() else {
            return Ok(());
        };
        let max_segment = self.retention.lock().max_segment_bytes.max(4096);
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut from = 0usize;
        let mut at = 0usize;
        let mut rolled = false;
        for m in &metas {
            // Roll when the record would pass the segment's size; a
            // segment always takes at least one record.
            let used = writer.bytes + (at - from) as u64;
            if used > 0 && used + m.len > max_segment {
                self.write(&mut writer, &data[from..at], &chunks)?;
                chunks.clear();
                from = at;
                *writer = Segment::create(&self.dir, m.offset)?;
                self.segments.write().push(SegmentView {
                    first_offset: m.offset,
                    file: Arc::new(writer.reader()?),
                    chunks: writer.chunks.clone(),
                    bytes: 0,
                });
                rolled = true;
            }
            let position = writer.bytes + (at - from) as u64;
            match chunks.last_mut() {
                Some(c) if c.bytes + m.len <= CHUNK_MAX_BYTES => {
                    c.count += 1;
                    c.bytes += m.len;
                    c.last_timestamp = c.last_timestamp.max(m.timestamp);
                    c.filters |= m.bloom;
                    c.unfiltered |= m.unfiltered;
                }
                _ => chunks.push(new_chunk(m, position)),
            }
            at += m.len as usize;
        }
        self.write(&mut writer, &data[from..at], &chunks)?;
        drop(writer);
        let next = last.offset + 1;
        self.committed.store(next, Ordering::Release);
        self.watch.send_replace(next);
        if rolled {
            self.apply_retention(super::now_ms());
        }
        Ok(())
    }

    fn write(&self, writer: &mut Segment, data: &[u8], chunks: &[Chunk]) -> StoreResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        writer.append(data, chunks)?;
        let mut segments = self.segments.write();
        if let Some(v) = segments.last_mut() {
            v.bytes = writer.bytes;
        }
        Ok(())
    }

    /// Drop whole segments from the head while the log is over its size or
    /// they are older than its age limit; the active segment too once all
    /// of it is too old and nothing is pending (an idle stream shrinks).
    /// Returns how many segments went.
    pub fn apply_retention(&self, now_ms: u64) -> usize {
        let r = self.retention();
        if r.max_bytes.is_none() && r.max_age_ms.is_none() {
            return 0;
        }
        let mut writer = self.writer.lock();
        let mut segments = self.segments.write();
        let mut dropped = 0;
        loop {
            let total: u64 = segments.iter().map(|v| v.bytes).sum();
            let Some(oldest) = segments.first() else {
                break;
            };
            let newest_ts = oldest.chunks.last().map(|c| c.last_timestamp);
            let too_big = r.max_bytes.is_some_and(|max| total > max);
            let too_old = match (r.max_age_ms, newest_ts) {
                (Some(age), Some(ts)) => ts.saturating_add(age) < now_ms,
                _ => false,
            };
            if !(too_big || too_old) {
                break;
            }
            if segments.len() == 1 {
                // The active segment: only when all of it is too old and
                // nothing waits to be written, replaced by an empty one.
                let idle = self.append.lock().pending_meta.is_empty();
                if !(too_old && idle && writer.bytes > 0) {
                    break;
                }
                let next = writer.next_offset();
                let Ok(fresh) = Segment::create(&self.dir, next) else {
                    break;
                };
                let Ok(file) = fresh.reader() else { break };
                let old = std::mem::replace(&mut *writer, fresh);
                old.remove();
                segments.clear();
                segments.push(SegmentView {
                    first_offset: next,
                    file: Arc::new(file),
                    chunks: writer.chunks.clone(),
                    bytes: 0,
                });
                dropped += 1;
                break;
            }
            let gone = segments.remove(0);
            let (data, index) = Segment::names(&self.dir, gone.first_offset);
            for p in [data, index] {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!("cannot remove {}: {e}", p.display());
                }
            }
            dropped += 1;
        }
        dropped
    }

    /// Remove the log's files (the stream was deleted).
    pub(super) fn destroy(&self) {
        self.deleted.store(true, Ordering::Release);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn new_chunk(m: &Meta, position: u64) -> Chunk {
    Chunk {
        first_offset: m.offset,
        count: 1,
        position,
        bytes: m.len,
        first_timestamp: m.timestamp,
        last_timestamp: m.timestamp,
        filters: m.bloom,
        unfiltered: m.unfiltered,
    }
}
