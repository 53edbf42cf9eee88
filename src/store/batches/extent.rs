//! A batch space by range: purging, clearing purged and deleted ranges,
//! forgetting a deleted queue, counting and bounding a level.

use super::super::records::{batch_entries, batch_header, seq_of};
use super::super::{Backend, Slot, StoreResult, Tree};
use super::{BatchSpace, State, entry_size, mark_removed};

impl BatchSpace {
    /// Record a durable level's range `[from, to)` as purged (written at the
    /// next commit) and drop its entries held in memory.
    pub fn purge(
        &self,
        b: &dyn Backend,
        uid: u64,
        level: u8,
        from: u64,
        to: u64,
    ) -> StoreResult<()> {
        self.purged(b, uid, level)?;
        let mut st = self.state.lock();
        self.forget_range(&mut st, uid, level, from, to);
        let lv = st.levels.entry((uid, level)).or_default();
        if self.durable {
            lv.purged.push((from, to));
            lv.purged_dirty = true;
        }
        Ok(())
    }

    fn forget_range(&self, st: &mut State, uid: u64, level: u8, from: u64, to: u64) {
        let Some(lv) = st.levels.get_mut(&(uid, level)) else {
            return;
        };
        let seqs: Vec<u64> = lv.pending.range(from..to).map(|(s, _)| *s).collect();
        for seq in seqs {
            if let Some(p) = lv.pending.remove(&seq) {
                let size = entry_size(&p.message);
                lv.pending_bytes -= size;
                st.pending_bytes -= size;
            }
        }
        let writing: Vec<u64> = lv.writing.range(from..to).map(|(s, _)| *s).collect();
        lv.removed_while_writing.extend(writing);
    }

    /// Clear a purged or deleted range: every entry of the level with
    /// `from <= seq < to` is marked removed (batches left empty go at the
    /// next commit), then the purged range is forgotten. Background work.
    pub fn clear_range(
        &self,
        b: &dyn Backend,
        uid: u64,
        level: u8,
        from: u64,
        to: u64,
    ) -> StoreResult<()> {
        {
            let mut st = self.state.lock();
            self.forget_range(&mut st, uid, level, from, to);
        }
        let (mut start, end) = {
            let slot = Slot {
                uid,
                level,
                seq: from,
            };
            let holding = self.holding_batch(b, slot)?.map(|(k, _)| k);
            (
                holding.unwrap_or_else(|| self.batch_key(slot).to_vec()),
                self.level_keys(uid, level).1,
            )
        };
        loop {
            let page = {
                let _reading = self.deleting.read();
                b.scan(Tree::Messages, &start, &end, 16)?
            };
            let Some((last_key, _)) = page.last() else {
                break;
            };
            start = last_key.clone();
            start.push(0);
            let mut past_end = false;
            for (k, v) in &page {
                let Some(first) = seq_of(k) else { continue };
                if first >= to {
                    past_end = true;
                    break;
                }
                self.removals_of(b, uid, level, first, v)?;
                let seqs: Vec<u64> = batch_entries(v)
                    .filter_map(|e| e.ok().map(|e| e.seq))
                    .filter(|s| (from..to).contains(s))
                    .collect();
                let mut st = self.state.lock();
                let lv = st.levels.entry((uid, level)).or_default();
                for seq in seqs {
                    mark_removed(lv, seq);
                }
            }
            if past_end {
                break;
            }
        }
        let mut st = self.state.lock();
        if let Some(lv) = st.levels.get_mut(&(uid, level)) {
            let before = lv.purged.len();
            lv.purged.retain(|r| *r != (from, to));
            lv.purged_dirty |= lv.purged.len() != before;
        }
        Ok(())
    }

    /// Forget everything in memory of a deleted queue; a batch of it being
    /// written now is deleted by the next commit.
    pub fn drop_queue(&self, uid: u64) {
        let mut st = self.state.lock();
        let mut dropped = 0;
        let mut writing = false;
        st.levels.retain(|(u, _), lv| {
            let keep = *u != uid;
            if !keep {
                dropped += lv.pending_bytes;
                writing |= !lv.writing.is_empty();
            }
            keep
        });
        st.pending_bytes -= dropped;
        if writing {
            st.dropped.insert(uid);
        }
    }

    /// Live entries with `seq >= from` of a level: in written batches
    /// (reading each) and in memory. Background work.
    pub fn count(&self, b: &dyn Backend, uid: u64, level: u8, from: u64) -> StoreResult<u64> {
        let purged = self.purged(b, uid, level)?;
        let skip = |seq: u64| purged.iter().any(|(f, t)| (*f..*t).contains(&seq));
        // Memory first, as `read` does: an entry written meanwhile is then
        // counted once, in memory or in the backend, never missed.
        let in_memory: std::collections::BTreeSet<u64> = {
            let st = self.state.lock();
            st.levels
                .get(&(uid, level))
                .map_or_else(Default::default, |lv| {
                    let memory = lv.writing.range(from..).chain(lv.pending.range(from..));
                    memory.map(|(s, _)| *s).filter(|s| !skip(*s)).collect()
                })
        };
        let (start, end) = self.level_keys(uid, level);
        let mut start = start.to_vec();
        let mut n = in_memory.len() as u64;
        loop {
            let page = {
                let _reading = self.deleting.read();
                b.scan(Tree::Messages, &start, &end, 16)?
            };
            let Some((last_key, _)) = page.last() else {
                break;
            };
            start = last_key.clone();
            start.push(0);
            for (k, v) in &page {
                let Some(first) = seq_of(k) else { continue };
                let removed = self.removals_of(b, uid, level, first, v)?;
                for e in batch_entries(v) {
                    let seq = e?.seq;
                    n += u64::from(
                        seq >= from
                            && !removed.contains(&seq)
                            && !skip(seq)
                            && !in_memory.contains(&seq),
                    );
                }
            }
        }
        Ok(n)
    }

    /// First and last seq of a level's written batches (the first batch's
    /// first seq, the last batch's last).
    pub fn bounds(&self, b: &dyn Backend, uid: u64, level: u8) -> StoreResult<Option<(u64, u64)>> {
        let (start, end) = self.level_keys(uid, level);
        let _reading = self.deleting.read();
        let Some((k, _)) = b.scan(Tree::Messages, &start, &end, 1)?.pop() else {
            return Ok(None);
        };
        let first = seq_of(&k).unwrap_or(0);
        let last = match b.last_key(Tree::Messages, &start, &end)? {
            Some(k) => match b.get(Tree::Messages, &k)? {
                Some(v) => batch_header(&v).map_or(first, |(last, _)| last),
                None => first,
            },
            None => first,
        };
        Ok(Some((first, last)))
    }
}
