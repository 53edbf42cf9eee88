//! Writing a batch space: what is pending becomes batches, removals and
//! purged ranges are recorded, and batches with nothing left are deleted.

use std::collections::BTreeSet;

use super::super::records::{encode_batch, encode_seqs, key};
use super::super::{Backend, Slot, StoreResult, Tree};
use super::{
    BATCH_BYTES, Batch, BatchSpace, PENDING_LIMIT, Pending, REMOVALS, entry_size, purged_key,
};

/// What a commit failed to write, to be written by the next.
#[derive(Default)]
struct Retry {
    /// Written batches whose removal record failed.
    removals: Vec<Slot>,
    /// Purged ranges (as written: flat pairs) whose record failed.
    purged: Vec<((u64, u8), Vec<u64>)>,
    /// Batches with nothing left whose deletion failed (kept registered,
    /// so they are deleted again).
    deletions: Vec<Slot>,
}

/// What one commit writes.
#[derive(Default)]
struct Work {
    batches: Vec<(Slot, Vec<(u64, Pending)>)>,
    removals: Vec<(Slot, Vec<u64>)>,
    deletions: Vec<Slot>,
    purged: Vec<((u64, u8), Vec<u64>)>,
}

impl BatchSpace {
    /// Write what is due: every pending durable entry, full transient
    /// batches (all of them with `everything`, or once too much is pending),
    /// removals and purged ranges changed since the last commit, and the
    /// deletion of batches with nothing left. Runs on the group-commit
    /// thread, before its flush.
    pub fn commit(&self, b: &dyn Backend, everything: bool) -> StoreResult<()> {
        let work = self.take_work(everything);
        let mut failed = None;
        let mut note = |r: StoreResult<()>| {
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        };
        let mut written = Vec::with_capacity(work.batches.len());
        let mut value = Vec::new();
        for (slot, entries) in &work.batches {
            value.clear();
            let items = entries
                .iter()
                .map(|(s, p)| (*s, p.expires_at, p.message.as_ref()));
            let last = encode_batch(&mut value, items);
            let r = b.insert(Tree::Messages, &self.batch_key(*slot), &value);
            if r.is_ok() {
                written.push((*slot, last, entries.len()));
            }
            note(r);
        }
        // What fails to be written is kept and tried again by the next
        // commit (the group commit retries while the store fails).
        let mut retry = Retry::default();
        for (batch, seqs) in &work.removals {
            let r = b.insert(Tree::Messages, &key(REMOVALS, *batch), &encode_seqs(seqs));
            if r.is_err() {
                retry.removals.push(*batch);
            }
            note(r);
        }
        for ((uid, level), ranges) in work.purged {
            let k = purged_key(uid, level);
            let r = if ranges.is_empty() {
                b.remove(Tree::Messages, &k)
            } else {
                b.insert(Tree::Messages, &k, &encode_seqs(&ranges))
            };
            if r.is_err() {
                retry.purged.push(((uid, level), ranges));
            }
            note(r);
        }
        if !work.deletions.is_empty() {
            let _deleting = self.deleting.write();
            for batch in &work.deletions {
                let mut r = b.remove(Tree::Messages, &self.batch_key(*batch));
                if self.durable {
                    r = r.and(b.remove(Tree::Messages, &key(REMOVALS, *batch)));
                }
                if r.is_err() {
                    retry.deletions.push(*batch);
                }
                note(r);
            }
            let mut st = self.state.lock();
            for batch in &work.deletions {
                let known = st
                    .levels
                    .get_mut(&(batch.uid, batch.level))
                    .and_then(|lv| lv.batches.get_mut(&batch.seq));
                match known {
                    // Still empty and registered: deleted next commit (a
                    // read meanwhile must see its removals, not just the
                    // record last written).
                    Some(b) if retry.deletions.contains(batch) => b.dirty = true,
                    Some(_) => {
                        if let Some(lv) = st.levels.get_mut(&(batch.uid, batch.level)) {
                            lv.batches.remove(&batch.seq);
                        }
                    }
                    // An orphan (its queue is gone).
                    None if retry.deletions.contains(batch) => st.orphans.push(*batch),
                    None => {}
                }
            }
        }
        self.retry(retry);
        self.written(work.batches, written);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Move what is due into `writing`, and collect the rest to write.
    fn take_work(&self, everything: bool) -> Work {
        let mut st = self.state.lock();
        let st = &mut *st;
        let all = everything || self.durable || st.pending_bytes > PENDING_LIMIT;
        let mut work = Work::default();
        for (&(uid, level), lv) in st.levels.iter_mut() {
            if !lv.pending.is_empty() && (all || lv.pending_bytes >= BATCH_BYTES) {
                st.pending_bytes -= lv.pending_bytes;
                st.writing_bytes += lv.pending_bytes;
                lv.pending_bytes = 0;
                let mut batch: Vec<(u64, Pending)> = Vec::new();
                let mut bytes = 0;
                for (seq, p) in std::mem::take(&mut lv.pending) {
                    bytes += entry_size(&p.message);
                    lv.writing.insert(seq, p.clone());
                    batch.push((seq, p));
                    if bytes >= BATCH_BYTES {
                        let slot = Slot {
                            uid,
                            level,
                            seq: batch[0].0,
                        };
                        work.batches.push((slot, std::mem::take(&mut batch)));
                        bytes = 0;
                    }
                }
                if let Some((first, _)) = batch.first() {
                    let slot = Slot {
                        uid,
                        level,
                        seq: *first,
                    };
                    work.batches.push((slot, batch));
                }
            }
            for (&first, batch) in lv.batches.iter_mut().filter(|(_, b)| b.dirty) {
                batch.dirty = false;
                let slot = Slot {
                    uid,
                    level,
                    seq: first,
                };
                if batch.removed.len() >= batch.entries {
                    work.deletions.push(slot);
                } else if self.durable {
                    work.removals
                        .push((slot, batch.removed.iter().copied().collect()));
                }
            }
            if lv.purged_dirty {
                lv.purged_dirty = false;
                let flat = lv.purged.iter().flat_map(|(f, t)| [*f, *t]).collect();
                work.purged.push(((uid, level), flat));
            }
        }
        st.levels.retain(|_, lv| !lv.is_idle());
        work.deletions.append(&mut st.orphans);
        work
    }

    /// Mark what failed to be written as due again.
    fn retry(&self, retry: Retry) {
        let mut st = self.state.lock();
        for slot in retry.removals {
            if let Some(batch) = st
                .levels
                .get_mut(&(slot.uid, slot.level))
                .and_then(|lv| lv.batches.get_mut(&slot.seq))
            {
                batch.dirty = true;
            }
        }
        for ((uid, level), flat) in retry.purged {
            let lv = st.levels.entry((uid, level)).or_default();
            // Unless the ranges changed since (then they are dirty anyway),
            // the level holds them; a level that went idle meanwhile gets
            // back exactly what was to be written.
            if !lv.purged_loaded {
                lv.purged_loaded = true;
                lv.purged = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            }
            lv.purged_dirty = true;
        }
    }

    /// Batches are written: register them with what was removed meanwhile.
    /// Entries whose write failed go back to `pending`, to be written by
    /// the next commit: they may be nowhere else (a long queue keeps them
    /// only here, and transient ones were confirmed at once). Entries of
    /// those removed while they were being written are gone for good.
    fn written(&self, taken: Vec<(Slot, Vec<(u64, Pending)>)>, written: Vec<(Slot, u64, usize)>) {
        let mut st = self.state.lock();
        let landed: std::collections::HashSet<Slot> = written.iter().map(|(s, _, _)| *s).collect();
        for (slot, last, entries) in written {
            if st.dropped.contains(&slot.uid) {
                st.orphans.push(slot);
                continue;
            }
            let lv = st.levels.entry((slot.uid, slot.level)).or_default();
            let removed: BTreeSet<u64> = lv
                .removed_while_writing
                .iter()
                .copied()
                .filter(|s| (slot.seq..=last).contains(s))
                .collect();
            let dirty = !removed.is_empty();
            let batch = Batch {
                last,
                entries,
                removed,
                dirty,
            };
            lv.batches.insert(slot.seq, batch);
        }
        let done: usize = taken
            .iter()
            .flat_map(|(_, entries)| entries.iter().map(|(_, p)| entry_size(&p.message)))
            .sum();
        st.writing_bytes = st.writing_bytes.saturating_sub(done);
        let st = &mut *st;
        for (slot, entries) in taken {
            let failed = !landed.contains(&slot) && !st.dropped.contains(&slot.uid);
            if let Some(lv) = st.levels.get_mut(&(slot.uid, slot.level)) {
                for (seq, p) in entries {
                    let Some(_) = lv.writing.remove(&seq) else {
                        continue;
                    };
                    if failed && !lv.removed_while_writing.contains(&seq) {
                        let size = entry_size(&p.message);
                        lv.pending_bytes += size;
                        st.pending_bytes += size;
                        lv.pending.insert(seq, p);
                    }
                }
                if lv.writing.is_empty() {
                    lv.removed_while_writing.clear();
                }
            }
        }
        st.dropped.clear();
    }
}
