//! Reading a stream's log from an offset: from the in-memory tail when the
//! offset is recent, from the segments otherwise (positioned reads of one
//! chunk at a time, through the page cache), never past what is durable.
//! A filter skips whole chunks whose index says they hold nothing it
//! wants, without reading them, and then drops each record it does not
//! accept: a consumer never sees a record that does not match.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use amq_protocol::types::ShortString;
use bytes::Bytes;

use super::Filter;
use super::log::{Log, SegmentView, TailRecord};
use super::record::{Chunk, Decoded, Record, decode};
use crate::message::Message;
use crate::store::{StoreError, StoreResult};

#[derive(Debug)]
pub struct Cursor {
    log: Arc<Log>,
    next: u64,
    filter: Option<Filter>,
    /// Records read from a segment and not handed out yet.
    buffered: VecDeque<Record>,
}

impl Cursor {
    pub fn new(log: Arc<Log>, offset: u64, filter: Option<Filter>) -> Cursor {
        Cursor {
            log,
            next: offset,
            filter,
            buffered: VecDeque::new(),
        }
    }

    /// Read from `offset` on.
    pub fn seek(&mut self, offset: u64) {
        self.next = offset;
        self.buffered.clear();
    }

    /// The offset the next record read will have (or be after).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Whether the next read goes to the segment files (not the
    /// in-memory tail), and so may wait for the disk.
    pub fn needs_disk(&self) -> bool {
        self.buffered.is_empty()
            && self.next < self.log.committed()
            && self.log.tail_start().is_none_or(|t| self.next < t)
    }

    fn accepts(&self, filter_value: Option<&[u8]>) -> bool {
        self.filter.as_ref().is_none_or(|f| f.accepts(filter_value))
    }

    /// Up to `max` records the filter accepts, from the position on, not
    /// past what is durable. Empty when there is nothing more now.
    pub fn read(&mut self, max: usize) -> StoreResult<Vec<TailRecord>> {
        let mut out = Vec::new();
        while out.len() < max {
            let committed = self.log.committed();
            if self.next >= committed {
                break;
            }
            // Retention may have dropped what the cursor was at.
            let first = self.log.first_offset();
            if self.next < first {
                self.next = first;
                self.buffered.clear();
            }
            if let Some(r) = self.buffered.pop_front() {
                if r.offset < self.next {
                    continue;
                }
                self.next = r.offset + 1;
                if !r.erased && self.accepts(r.filter.as_deref()) {
                    match r.opened(self.log.keys.as_deref()) {
                        Ok(r) => out.push(to_tail(r)),
                        // Altered or sealed for another place: reported,
                        // never delivered.
                        Err(e) => tracing::error!(
                            log = self.log.uid,
                            "a stream record does not open: {e}; skipping it"
                        ),
                    }
                }
                continue;
            }
            if self.log.tail_start().is_some_and(|t| self.next >= t) {
                let tail = self.log.tail(self.next, max - out.len() + 64);
                if tail.is_empty() {
                    break;
                }
                for t in tail {
                    self.next = t.offset + 1;
                    if !t.erased && self.accepts(t.filter.as_deref()) {
                        out.push(t);
                        if out.len() == max {
                            break;
                        }
                    }
                }
                continue;
            }
            if !self.fill()? {
                break;
            }
        }
        Ok(out)
    }

    /// Read the chunk holding the position into `buffered` (or skip it
    /// whole if the filter wants nothing in it). False if there is none.
    fn fill(&mut self) -> StoreResult<bool> {
        let Some((view, chunk)) = self.locate() else {
            return Ok(false);
        };
        if let Some(f) = &self.filter
            && !chunk.may_match(f)
        {
            self.next = chunk.next_offset();
            return Ok(true);
        }
        let mut buf = vec![0u8; chunk.bytes as usize];
        {
            let _no_rewrite = self.log.rewriting.read();
            view.file
                .read_exact_at(&mut buf, chunk.position)
                .map_err(|e| StoreError::Io(format!("cannot read a stream segment: {e}")))?;
        }
        let mut buf = Bytes::from(buf);
        while !buf.is_empty() {
            match decode(&buf) {
                Decoded::Record(r, n) => {
                    let _ = buf.split_to(n);
                    self.buffered.push_back(r);
                }
                // The index said these bytes were whole records: they were
                // damaged since. Skip the chunk rather than stop the reader.
                _ => {
                    tracing::error!(
                        offset = chunk.first_offset,
                        "a stream chunk does not read back; skipping it"
                    );
                    self.buffered.clear();
                    self.next = chunk.next_offset();
                    break;
                }
            }
        }
        Ok(true)
    }

    /// The segment and chunk holding the position.
    fn locate(&self) -> Option<(SegmentView, Chunk)> {
        let segments = self.log.segments.read();
        let i = segments.partition_point(|s| s.first_offset <= self.next);
        let view = segments.get(i.checked_sub(1)?)?;
        let chunk = view.chunks.holding(self.next)?;
        Some((view.clone(), chunk))
    }
}

/// A record read back as the message it was.
pub(super) fn to_tail(r: Record) -> TailRecord {
    let text = |b: &Bytes| {
        ShortString::try_new(String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
    };
    TailRecord {
        offset: r.offset,
        timestamp: r.timestamp,
        filter: r.filter,
        message: Arc::new(Message {
            exchange: text(&r.exchange),
            routing_key: text(&r.routing_key),
            properties: r.properties,
            body: r.body,
            persistent: true,
            priority: 0,
            expiration_ms: None,
            received_ms: r.timestamp,
        }),
        erased: r.erased,
    }
}

/// The first offset at or after `timestamp` (ms), as the index tells it:
/// the first record of the first chunk whose newest record is that recent.
pub fn offset_at(log: &Log, timestamp: u64) -> u64 {
    let segments = log.segments.read();
    for s in segments.iter() {
        if let Some(c) = s.chunks.first_since(timestamp) {
            return c.first_offset;
        }
    }
    log.committed()
}
