//! Queue messages kept in the store, a batch to a key.
//!
//! One key per message cost sled an insert and a remove (~70–120 µs of CPU:
//! sled rewrites whole nodes) and kept ~90 bytes of bookkeeping per message
//! after the queue drained. So messages are written in batches of about
//! [`BATCH_BYTES`] under one key, `kind uid level first-seq` (the value
//! format is `records::encode_batch`'s).
//!
//! A [`BatchSpace`] holds one kind of batch: durable queue entries (`b`,
//! recovered at boot) or transient messages paged out of memory (`t`/`u`,
//! not). Nothing here writes on the caller's thread. A message is accepted
//! into memory (`pending`) and readable from there at once; the
//! group-commit thread writes what is due ([`BatchSpace::commit`]) — every
//! durable entry before each flush, transient ones once a level has a full
//! batch — and entries being written stay readable meanwhile (`writing`).
//! An entry removed before it is written is never written; one removed
//! while it is being written is marked removed in its batch once the batch
//! is registered, so the removal is never lost to the write.
//!
//! Removals from written batches are kept in memory per batch and written
//! by the next commit: durable batches record them under `x` + the batch's
//! key, so a clean restart brings back only what is left; a batch with
//! nothing left is deleted. A crash can lose the removals since the last
//! commit: those messages come back, flagged redelivered.
//!
//! A purge of a durable level records the purged range (`p` uid level) at
//! the next commit, so the range is gone for good once that commit is
//! flushed; the entries in it are cleared afterwards, in the background, and
//! the record with them.
//!
//! Written batches are never rewritten. Scans read them without this
//! space's lock; a batch is deleted only under the write side of
//! `deleting`, whose read side every scan holds, so a scan never sees a
//! batch without the removals that went with it.

mod commit;
mod extent;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::records::{
    BATCH_BYTES, BatchEntry, batch_entries, batch_header, decode_record, decode_seqs, key,
    record_body_len, seq_of,
};
use super::{Backend, Slot, StoreResult, TakenMessage, Tree};
use crate::message::Message;

/// Transient pending entries of all queues together are written once they
/// hold this much, full batches or not.
const PENDING_LIMIT: usize = 8 * 1024 * 1024;

/// Key kinds of a durable level's removal records and purged ranges.
const REMOVALS: u8 = b'x';
const PURGED: u8 = b'p';

#[derive(Clone, Debug)]
struct Pending {
    expires_at: u64,
    message: Arc<Message>,
}

/// A written batch, as far as this run knows it.
#[derive(Debug)]
struct Batch {
    last: u64,
    entries: usize,
    removed: BTreeSet<u64>,
    /// Removals not yet written.
    dirty: bool,
}

#[derive(Debug, Default)]
struct Level {
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    writing: BTreeMap<u64, Pending>,
    /// Entries removed while being written: marked once their batch is.
    removed_while_writing: Vec<u64>,
    /// Written batches this run knows, by first seq.
    batches: BTreeMap<u64, Batch>,
    /// Purged ranges `[from, to)` not yet cleared; `purged_loaded` once the
    /// stored record was read.
    purged: Vec<(u64, u64)>,
    purged_loaded: bool,
    purged_dirty: bool,
}

impl Level {
    fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.writing.is_empty()
            && self.batches.is_empty()
            && self.purged.is_empty()
            && !self.purged_dirty
    }
}

#[derive(Debug, Default)]
struct State {
    levels: HashMap<(u64, u8), Level>,
    pending_bytes: usize,
    /// Bytes of the entries being written now.
    writing_bytes: usize,
    /// Queues deleted while a commit was writing some of their entries.
    dropped: HashSet<u64>,
    /// Batches of deleted queues that landed anyway: deleted next commit.
    orphans: Vec<Slot>,
}

/// A message read back.
#[derive(Debug)]
pub(super) struct ReadEntry {
    pub seq: u64,
    pub expires_at: u64,
    pub message: Message,
}

/// One kind of batch: durable entries or paged-out transient messages.
#[derive(Debug)]
pub(super) struct BatchSpace {
    pub kind: u8,
    durable: bool,
    state: Mutex<State>,
    deleting: RwLock<()>,
}

fn entry_size(m: &Message) -> usize {
    36 + m.exchange.as_str().len()
        + m.routing_key.as_str().len()
        + m.properties.len()
        + m.body.len()
}

fn purged_key(uid: u64, level: u8) -> [u8; 10] {
    let mut k = [PURGED; 10];
    k[1..9].copy_from_slice(&uid.to_be_bytes());
    k[9] = level;
    k
}

impl BatchSpace {
    pub fn new(kind: u8, durable: bool) -> BatchSpace {
        BatchSpace {
            kind,
            durable,
            state: Mutex::new(State::default()),
            deleting: RwLock::new(()),
        }
    }

    fn batch_key(&self, slot: Slot) -> [u8; 18] {
        key(self.kind, slot)
    }

    /// The key range of a level's written batches.
    pub fn level_keys(&self, uid: u64, level: u8) -> ([u8; 18], [u8; 18]) {
        (
            self.batch_key(Slot { uid, level, seq: 0 }),
            self.batch_key(Slot {
                uid,
                level,
                seq: u64::MAX,
            }),
        )
    }

    /// Bytes of messages accepted and not yet being written.
    pub fn pending_bytes(&self) -> usize {
        self.state.lock().pending_bytes
    }

    /// Bytes of messages in memory: accepted, or being written.
    pub fn held_bytes(&self) -> usize {
        let st = self.state.lock();
        st.pending_bytes + st.writing_bytes
    }

    /// Accept a message; true if the writer should run soon (too much is
    /// pending in memory).
    pub fn put(&self, slot: Slot, expires_at: u64, message: Arc<Message>) -> bool {
        let size = entry_size(&message);
        let mut st = self.state.lock();
        let level = st.levels.entry((slot.uid, slot.level)).or_default();
        level.pending.insert(
            slot.seq,
            Pending {
                expires_at,
                message,
            },
        );
        level.pending_bytes += size;
        let full = level.pending_bytes >= BATCH_BYTES;
        st.pending_bytes += size;
        full && !self.durable || st.pending_bytes > PENDING_LIMIT
    }

    /// Remove an entry wherever it is; false if this space does not hold it
    /// (a format-2 key, or nothing).
    pub fn remove(&self, slot: Slot) -> bool {
        let mut st = self.state.lock();
        self.remove_locked(&mut st, slot).is_some()
    }

    /// Remove an entry; what it was, if it was in memory.
    fn remove_locked(&self, st: &mut State, slot: Slot) -> Option<Option<Pending>> {
        let level = st.levels.get_mut(&(slot.uid, slot.level))?;
        if let Some(p) = level.pending.remove(&slot.seq) {
            let size = entry_size(&p.message);
            level.pending_bytes -= size;
            st.pending_bytes -= size;
            return Some(Some(p));
        }
        if let Some(p) = level.writing.get(&slot.seq) {
            let p = p.clone();
            level.removed_while_writing.push(slot.seq);
            return Some(Some(p));
        }
        mark_removed(level, slot.seq).then_some(None)
    }

    /// Take one entry out where it sits (it expired): its body size, and
    /// the message if `read`. `None` if it is not here.
    pub fn take(
        &self,
        b: &dyn Backend,
        slot: Slot,
        read: bool,
    ) -> StoreResult<Option<TakenMessage>> {
        let in_memory = {
            let mut st = self.state.lock();
            let level = st.levels.get(&(slot.uid, slot.level));
            let there = level.is_some_and(|l| {
                l.pending.contains_key(&slot.seq) || l.writing.contains_key(&slot.seq)
            });
            if there {
                self.remove_locked(&mut st, slot).flatten()
            } else {
                None
            }
        };
        if let Some(p) = in_memory {
            return Ok(Some(TakenMessage {
                bytes: p.message.body_size() as u64,
                durable: self.durable,
                message: read.then(|| (*p.message).clone()),
            }));
        }
        let _reading = self.deleting.read();
        let Some((k, value)) = self.holding_batch(b, slot)? else {
            return Ok(None);
        };
        let Some(first) = seq_of(&k) else {
            return Ok(None);
        };
        let removed = self.removals_of(b, slot.uid, slot.level, first, &value)?;
        if removed.contains(&slot.seq) {
            return Ok(None);
        }
        for entry in batch_entries(&value) {
            let entry = entry?;
            if entry.seq != slot.seq {
                continue;
            }
            let taken = TakenMessage {
                bytes: record_body_len(entry.record).unwrap_or(0),
                durable: self.durable,
                message: if read {
                    Some(decode_record(entry.record)?)
                } else {
                    None
                },
            };
            let mut st = self.state.lock();
            let level = st.levels.entry((slot.uid, slot.level)).or_default();
            mark_removed(level, slot.seq);
            return Ok(Some(taken));
        }
        Ok(None)
    }

    /// The written batch that would hold `slot`, if any.
    fn holding_batch(
        &self,
        b: &dyn Backend,
        slot: Slot,
    ) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        let start = self.batch_key(Slot { seq: 0, ..slot });
        let end = self.batch_key(Slot {
            seq: slot.seq.saturating_add(1),
            ..slot
        });
        let Some(k) = b.last_key(Tree::Messages, &start, &end)? else {
            return Ok(None);
        };
        Ok(b.get(Tree::Messages, &k)?.map(|v| (k, v)))
    }

    /// What has been removed from the written batch at `first` (value `v`),
    /// registering it if this run did not know it yet.
    fn removals_of(
        &self,
        b: &dyn Backend,
        uid: u64,
        level: u8,
        first: u64,
        v: &[u8],
    ) -> StoreResult<BTreeSet<u64>> {
        let known = {
            let st = self.state.lock();
            st.levels
                .get(&(uid, level))
                .and_then(|l| l.batches.get(&first))
                .map(|batch| batch.removed.clone())
        };
        if let Some(removed) = known {
            return Ok(removed);
        }
        let recorded: BTreeSet<u64> = if self.durable {
            let slot = Slot {
                uid,
                level,
                seq: first,
            };
            b.get(Tree::Messages, &key(REMOVALS, slot))?
                .map(|r| decode_seqs(&r).into_iter().collect())
                .unwrap_or_default()
        } else {
            BTreeSet::new()
        };
        let (last, entries) = batch_header(v).unwrap_or((first, 0));
        let mut st = self.state.lock();
        let lv = st.levels.entry((uid, level)).or_default();
        let batch = lv.batches.entry(first).or_insert(Batch {
            last,
            entries,
            removed: recorded,
            dirty: false,
        });
        Ok(batch.removed.clone())
    }

    /// A durable level's purged ranges, read from the store the first time.
    pub fn purged(&self, b: &dyn Backend, uid: u64, level: u8) -> StoreResult<Vec<(u64, u64)>> {
        if !self.durable {
            return Ok(Vec::new());
        }
        {
            let st = self.state.lock();
            if let Some(lv) = st.levels.get(&(uid, level))
                && lv.purged_loaded
            {
                return Ok(lv.purged.clone());
            }
        }
        let stored: Vec<(u64, u64)> = b
            .get(Tree::Messages, &purged_key(uid, level))?
            .map(|v| {
                decode_seqs(&v)
                    .chunks_exact(2)
                    .map(|p| (p[0], p[1]))
                    .collect()
            })
            .unwrap_or_default();
        let mut st = self.state.lock();
        let lv = st.levels.entry((uid, level)).or_default();
        if !lv.purged_loaded {
            lv.purged_loaded = true;
            lv.purged.extend(stored);
        }
        Ok(lv.purged.clone())
    }

    /// Read up to `limit` of a level's messages numbered in `seqs`, in
    /// order, skipping removed and purged ones. Reading removes nothing.
    pub fn read(
        &self,
        b: &dyn Backend,
        uid: u64,
        level: u8,
        seqs: Range<u64>,
        limit: usize,
    ) -> StoreResult<Vec<ReadEntry>> {
        let Range {
            start: from,
            end: before,
        } = seqs;
        let purged = self.purged(b, uid, level)?;
        let skip = |seq: u64| purged.iter().any(|(f, t)| (*f..*t).contains(&seq));
        // Memory before the backend: the group commit drops an entry from
        // memory only once it is written, so an entry written meanwhile is
        // seen in one look or the other. The other order misses it (written
        // and dropped between the two looks), and a short page is taken
        // for the end of the level's stored messages.
        let mut out: BTreeMap<u64, ReadEntry> = BTreeMap::new();
        {
            let st = self.state.lock();
            if let Some(lv) = st.levels.get(&(uid, level)) {
                for held in [&lv.writing, &lv.pending] {
                    let wanted = held.range(from..before).filter(|(seq, _)| !skip(**seq));
                    for (seq, p) in wanted.take(limit) {
                        out.insert(
                            *seq,
                            ReadEntry {
                                seq: *seq,
                                expires_at: p.expires_at,
                                message: (*p.message).clone(),
                            },
                        );
                    }
                }
            }
        }
        {
            let _reading = self.deleting.read();
            let slot = Slot {
                uid,
                level,
                seq: from,
            };
            let mut start = match self.holding_batch(b, slot)? {
                Some((k, _)) => k,
                None => self.batch_key(slot).to_vec(),
            };
            let (_, end) = self.level_keys(uid, level);
            let mut written = 0;
            while written < limit {
                let Some((k, v)) = b.scan(Tree::Messages, &start, &end, 1)?.pop() else {
                    break;
                };
                start = k.clone();
                start.push(0);
                let Some(first) = seq_of(&k) else {
                    continue;
                };
                if first >= before {
                    break;
                }
                let removed = self.removals_of(b, uid, level, first, &v)?;
                for entry in batch_entries(&v) {
                    let BatchEntry {
                        seq,
                        expires_at_ms,
                        record,
                    } = entry?;
                    if (from..before).contains(&seq) && !removed.contains(&seq) && !skip(seq) {
                        written += 1;
                        if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(seq) {
                            slot.insert(ReadEntry {
                                seq,
                                expires_at: expires_at_ms,
                                message: decode_record(record)?,
                            });
                        }
                    }
                }
            }
        }
        Ok(out.into_values().take(limit).collect())
    }
}

/// Mark `seq` removed in the written batch that holds it; false if none
/// this run knows does.
fn mark_removed(level: &mut Level, seq: u64) -> bool {
    let Some((_, batch)) = level.batches.range_mut(..=seq).next_back() else {
        return false;
    };
    if seq > batch.last {
        return false;
    }
    if batch.removed.insert(seq) {
        batch.dirty = true;
    }
    true
}
