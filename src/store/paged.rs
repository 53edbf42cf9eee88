//! Transient messages paged out of memory, a batch to a key.
//!
//! A queue over its memory window keeps new transient messages only in the
//! store. One key per message cost sled ~7 µs of CPU each, and sled kept
//! ~90 bytes of bookkeeping per message after the queue drained (it never
//! gives that memory back); under one key per ~32 KiB batch, both go away.
//!
//! A queue level's paged messages collect in a pending batch until it holds
//! [`BATCH_BYTES`], then it is written under `t`|`u` uid level first-seq:
//! its last seq (u64) and entry count (u32), then entries of: seq (u64),
//! expiry time (u64), record length (u32), record.
//! Whatever reads or removes a level's paged messages writes its pending
//! batch first. A batch is deleted once each of its entries was read back
//! or removed; removals from a batch still stored (a message expired where
//! it sat, a purge) are remembered here until then. Paged messages do not
//! survive a restart, so none of this is persisted — and each run pages
//! under the other of two key kinds, so the previous run's leftovers can be
//! cleared in the background while this run pages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::records::{Key, Slot, key};
use super::{Backend, StoreError, StoreResult, Tree};

/// A pending batch is written once it holds this many bytes.
const BATCH_BYTES: usize = 32 * 1024;
/// All pending batches are written once together they hold this much (many
/// queues paging at once).
const PENDING_LIMIT: usize = 8 * 1024 * 1024;
const BATCH_HEADER: usize = 12;
const ENTRY_HEADER: usize = 20;

/// A batch's last seq and number of entries.
fn header(value: &[u8]) -> Option<(u64, usize)> {
    let last = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let count = u32::from_be_bytes(value.get(8..12)?.try_into().ok()?);
    Some((last, count as usize))
}

/// One paged message in a batch.
pub(super) struct PagedEntry<'a> {
    pub seq: u64,
    pub expires_at_ms: u64,
    pub record: &'a [u8],
}

/// The entries of a batch value, in order; a truncated entry ends it with
/// an error.
pub(super) fn entries(value: &[u8]) -> impl Iterator<Item = StoreResult<PagedEntry<'_>>> {
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
                PagedEntry {
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
                Err(StoreError::corrupt("paged batch", "truncated entry"))
            }
        })
    })
}

struct Pending {
    first: u64,
    last: u64,
    count: u32,
    value: Vec<u8>,
}

/// Entries removed from a stored batch, and how many it holds.
struct Removed {
    seqs: HashSet<u64>,
    entries: usize,
}

/// A stored batch kept in memory after a removal read it.
struct Recent {
    key: Key,
    value: Arc<Vec<u8>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<(u64, u8), Pending>,
    pending_bytes: usize,
    removed: HashMap<Key, Removed>,
    /// Per queue level, the batch a removal last read: messages expire in
    /// queue order, so the next removal is usually in the same batch. A
    /// batch is never rewritten and its key never reused, so the copy stays
    /// right until the batch is deleted.
    recent: HashMap<(u64, u8), Recent>,
}

impl State {
    fn forget_batch(&mut self, k: &Key) {
        self.removed.remove(k);
        self.recent.retain(|_, r| r.key != *k);
    }
}

/// The key kind the run after one paging under `kind` pages under.
pub(super) fn other_kind(kind: u8) -> u8 {
    if kind == b't' { b'u' } else { b't' }
}

/// The paged-out transient messages of every queue.
pub(super) struct PagedBatches {
    /// This run's key kind (`t` or `u`).
    pub kind: u8,
    state: Mutex<State>,
}

impl std::fmt::Debug for PagedBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedBatches")
            .field("kind", &(self.kind as char))
            .finish()
    }
}

impl PagedBatches {
    pub fn new(kind: u8) -> PagedBatches {
        PagedBatches {
            kind,
            state: Mutex::new(State::default()),
        }
    }

    fn batch_key(&self, uid: u64, level: u8, first: u64) -> Key {
        key(
            self.kind,
            Slot {
                uid,
                level,
                seq: first,
            },
        )
    }

    /// Add a message to its level's pending batch, `encode` writing its
    /// record straight into the batch; the batch is written once it is full.
    pub fn add(
        &self,
        b: &dyn Backend,
        slot: Slot,
        expires_at_ms: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> StoreResult<()> {
        let mut st = self.state.lock();
        let pending = st.pending.entry((slot.uid, slot.level)).or_insert_with(|| {
            let mut value = Vec::with_capacity(BATCH_BYTES + 256);
            value.resize(BATCH_HEADER, 0);
            Pending {
                first: slot.seq,
                last: slot.seq,
                count: 0,
                value,
            }
        });
        let before = pending.value.len();
        pending.last = slot.seq;
        pending.count += 1;
        pending.value.extend_from_slice(&slot.seq.to_be_bytes());
        pending
            .value
            .extend_from_slice(&expires_at_ms.to_be_bytes());
        let len_at = pending.value.len();
        pending.value.extend_from_slice(&[0; 4]);
        encode(&mut pending.value);
        let len = (pending.value.len() - len_at - 4) as u32;
        pending.value[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        let full = pending.value.len() >= BATCH_BYTES;
        st.pending_bytes += pending.value.len() - before;
        if full {
            self.write_pending(b, &mut st, slot.uid, slot.level)
        } else if st.pending_bytes > PENDING_LIMIT {
            let levels: Vec<_> = st.pending.keys().copied().collect();
            levels
                .into_iter()
                .try_for_each(|(uid, level)| self.write_pending(b, &mut st, uid, level))
        } else {
            Ok(())
        }
    }

    fn write_pending(
        &self,
        b: &dyn Backend,
        st: &mut State,
        uid: u64,
        level: u8,
    ) -> StoreResult<()> {
        let Some(mut pending) = st.pending.remove(&(uid, level)) else {
            return Ok(());
        };
        st.pending_bytes -= pending.value.len() - BATCH_HEADER;
        pending.value[..8].copy_from_slice(&pending.last.to_be_bytes());
        pending.value[8..12].copy_from_slice(&pending.count.to_be_bytes());
        b.insert(
            Tree::Messages,
            &self.batch_key(uid, level, pending.first),
            &pending.value,
        )
    }

    /// Write `level`'s pending batch (or every level's, for `None`) so that
    /// reads see it.
    pub fn write_level(&self, b: &dyn Backend, uid: u64, level: Option<u8>) -> StoreResult<()> {
        let mut st = self.state.lock();
        let levels: Vec<u8> = match level {
            Some(level) => vec![level],
            None => st
                .pending
                .keys()
                .filter(|(u, _)| *u == uid)
                .map(|(_, l)| *l)
                .collect(),
        };
        levels
            .into_iter()
            .try_for_each(|level| self.write_pending(b, &mut st, uid, level))
    }

    /// The key range of a level's batches that may hold entries `>= from`:
    /// from the batch holding `from` on.
    pub fn range_from(
        &self,
        b: &dyn Backend,
        uid: u64,
        level: u8,
        from: u64,
    ) -> StoreResult<(Vec<u8>, Key)> {
        let start = self.batch_key(uid, level, 0);
        let end = match level.checked_add(1) {
            Some(next) => self.batch_key(uid, next, 0),
            None => key(
                self.kind,
                Slot {
                    uid: uid.saturating_add(1),
                    level: 0,
                    seq: 0,
                },
            ),
        };
        let holding = b.last_key(
            Tree::Messages,
            &start,
            &self.batch_key(uid, level, from.saturating_add(1)),
        )?;
        Ok((holding.unwrap_or_else(|| start.to_vec()), end))
    }

    /// The entries already removed from the batch under `batch`.
    pub fn removed_from(&self, batch: &[u8]) -> HashSet<u64> {
        let st = self.state.lock();
        Key::try_from(batch)
            .ok()
            .and_then(|k| st.removed.get(&k))
            .map_or_else(HashSet::new, |r| r.seqs.clone())
    }

    /// Whether `seq` was removed from the batch under `batch`.
    pub fn was_removed(&self, batch: &[u8], seq: u64) -> bool {
        let st = self.state.lock();
        Key::try_from(batch)
            .ok()
            .and_then(|k| st.removed.get(&k))
            .is_some_and(|r| r.seqs.contains(&seq))
    }

    /// The batch holding `seq` of a level, if a removal read it lately.
    pub fn recent(&self, uid: u64, level: u8, seq: u64) -> Option<(Key, Arc<Vec<u8>>)> {
        let st = self.state.lock();
        let r = st.recent.get(&(uid, level))?;
        let first = u64::from_be_bytes(r.key[10..].try_into().ok()?);
        let (last, _) = header(&r.value)?;
        (first <= seq && seq <= last).then(|| (r.key, r.value.clone()))
    }

    /// Keep a batch a removal read, for the removals after it.
    pub fn remember(&self, uid: u64, level: u8, batch: &[u8], value: Arc<Vec<u8>>) {
        let Ok(key) = Key::try_from(batch) else {
            return;
        };
        self.state
            .lock()
            .recent
            .insert((uid, level), Recent { key, value });
    }

    /// Note that `seqs` of a stored batch are gone; the batch is deleted
    /// once nothing in it is left.
    pub fn remove_entries(
        &self,
        b: &dyn Backend,
        batch: &[u8],
        value: &[u8],
        seqs: &[u64],
    ) -> StoreResult<()> {
        let Ok(k) = Key::try_from(batch) else {
            return Ok(());
        };
        let mut st = self.state.lock();
        let removed = st.removed.entry(k).or_insert_with(|| Removed {
            seqs: HashSet::new(),
            entries: header(value).map_or_else(|| entries(value).count(), |(_, count)| count),
        });
        removed.seqs.extend(seqs);
        if removed.seqs.len() >= removed.entries {
            st.forget_batch(&k);
            b.remove(Tree::Messages, batch)?;
        }
        Ok(())
    }

    /// A batch was read to its end: delete it.
    pub fn consumed(&self, b: &dyn Backend, batch: &[u8]) -> StoreResult<()> {
        if let Ok(k) = Key::try_from(batch) {
            self.state.lock().forget_batch(&k);
        }
        b.remove(Tree::Messages, batch)
    }

    /// Forget a deleted queue's pending batches.
    pub fn drop_queue(&self, uid: u64) {
        let mut st = self.state.lock();
        let mut dropped = 0;
        st.pending.retain(|(u, _), p| {
            let keep = *u != uid;
            if !keep {
                dropped += p.value.len() - BATCH_HEADER;
            }
            keep
        });
        st.pending_bytes -= dropped;
        st.recent.retain(|(u, _), _| *u != uid);
    }
}
