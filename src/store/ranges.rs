//! Whole ranges of the `messages` tree: a queue level's bounds and count,
//! removing every stored message of a queue or of a range of sequence
//! numbers (purge, delete; with a deleted queue's entries still waiting in
//! write-behind), and clearing the previous run's paged-out messages at
//! boot.
//!
//! These scan many keys, a page at a time so that no scan holds a whole
//! queue in memory; none of them is on the publish or delivery path.

use super::paged;
use super::records::{level_range, queue_range, seq_of, u64_at};
use super::{Store, StoreResult, Tree};

impl Store {
    /// The first and last sequence numbers of a queue level's durable
    /// entries.
    pub fn entry_bounds(&self, uid: u64, level: u8) -> StoreResult<Option<(u64, u64)>> {
        let b = self.backend.as_ref();
        let (from, to) = level_range(b'q', uid, level, 0);
        let first = b.scan(Tree::Messages, &from, &to, 1)?;
        let Some(first) = first.first().and_then(|(k, _)| seq_of(k)) else {
            return Ok(None);
        };
        let last = b
            .last_key(Tree::Messages, &from, &to)?
            .and_then(|k| seq_of(&k))
            .unwrap_or(first);
        Ok(Some((first, last)))
    }

    /// Count a queue level's durable entries with sequence number `>= from`.
    /// Reads every entry: run it off the hot path.
    pub fn count_entries(&self, uid: u64, level: u8, from: u64) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let (start, to) = level_range(b'q', uid, level, from);
        let mut start = start.to_vec();
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

    /// Forget the entries of a deleted queue that were never written.
    pub fn cancel_unwritten(&self, uid: u64) {
        let (prefix, _) = queue_range(b'q', uid);
        self.write_behind.cancel_prefix(&prefix);
    }

    /// Remove every stored message of a queue with `from <= seq < to`, of
    /// one level or (`None`) all levels (purge, delete). Returns how many
    /// durable entries were removed.
    pub fn remove_range(
        &self,
        uid: u64,
        level: Option<u8>,
        from: u64,
        to: u64,
    ) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let mut removed = 0;
        self.remove_paged_range(uid, level, from, to)?;
        for kind in [b'q', b'd'] {
            let (start, end) = match level {
                Some(level) => {
                    let (s, e) = level_range(kind, uid, level, from);
                    (s.to_vec(), e.to_vec())
                }
                None => {
                    let (s, e) = queue_range(kind, uid);
                    (s.to_vec(), e.to_vec())
                }
            };
            let mut start = start;
            loop {
                let page = b.scan(Tree::Messages, &start, &end, 1024)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (k, v) in &page {
                    let Some(seq) = seq_of(k) else { continue };
                    if seq < from || seq >= to {
                        continue;
                    }
                    self.note(b.remove(Tree::Messages, k))?;
                    if kind == b'q' {
                        removed += 1;
                        if let Some((1, id)) = v.get(8..).and_then(|v| v.split_first())
                            && let Some(id) = u64_at(id, 0)
                        {
                            self.release_shared(id)?;
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Remove the paged messages of a queue with `from <= seq < to`, taking
    /// those of its batches below `from` to be read already.
    fn remove_paged_range(
        &self,
        uid: u64,
        level: Option<u8>,
        from: u64,
        to: u64,
    ) -> StoreResult<()> {
        let b = self.backend.as_ref();
        if level.is_none() && from == 0 && to == u64::MAX {
            self.paged.drop_queue(uid);
        } else {
            self.note(self.paged.write_level(b, uid, level))?;
        }
        let (mut start, end) = match level {
            Some(level) => {
                let (start, end) = self.paged.range_from(b, uid, level, from)?;
                (start, end.to_vec())
            }
            None => {
                let (start, end) = queue_range(self.paged.kind, uid);
                (start.to_vec(), end.to_vec())
            }
        };
        loop {
            let page = b.scan(Tree::Messages, &start, &end, 64)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                let mut in_range = Vec::new();
                let mut later = false;
                for entry in paged::entries(v) {
                    let seq = entry?.seq;
                    later |= seq >= to;
                    if seq >= from && seq < to {
                        in_range.push(seq);
                    }
                }
                if !later {
                    self.note(self.paged.consumed(b, k))?;
                } else if !in_range.is_empty() {
                    self.note(self.paged.remove_entries(b, k, v, &in_range))?;
                }
            }
        }
    }

    /// Drop the previous run's paged-out transient messages (they do not
    /// survive a restart); this run pages under the other key kind.
    pub fn clear_paged(&self) -> StoreResult<()> {
        let b = self.backend.as_ref();
        let old = paged::other_kind(self.paged.kind);
        loop {
            let page = b.scan(Tree::Messages, &[old], &[old + 1], 4096)?;
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
    use std::sync::Arc;

    use super::super::records::Slot;
    use super::super::records::fixtures::{keys, msg, slot};
    use super::super::{Backend, Entry};
    use super::*;

    #[test]
    fn levels_are_separate_ranges() {
        let s = Store::in_memory_for_tests();
        let uid = s.new_queue_uid();
        for (level, seq) in [(0u8, 1u64), (5, 2), (0, 3), (255, 4)] {
            s.put_entry(Slot { uid, level, seq }, 0, Entry::Inline(&msg("x")), false)
                .unwrap();
        }
        let seqs = |level| -> Vec<u64> {
            s.page_in(uid, level, 0, 10)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(seqs(0), vec![1, 3]);
        assert_eq!(seqs(5), vec![2]);
        assert_eq!(seqs(255), vec![4]);
        assert_eq!(s.entry_bounds(uid, 255).unwrap(), Some((4, 4)));
        assert_eq!(s.remove_range(uid, None, 0, u64::MAX).unwrap(), 4);
    }

    #[test]
    fn each_run_pages_under_the_kind_the_last_one_did_not_use() {
        let backend: Arc<dyn Backend> = Arc::new(super::super::MemoryBackend::default());
        let first = Store::over(backend.clone()).unwrap();
        let uid = first.new_queue_uid();
        for seq in 0..100 {
            first
                .page_out(slot(uid, seq), 0, &msg(&"a".repeat(1000)))
                .unwrap();
        }
        let left = keys(&first);
        assert!(!left.is_empty());
        assert!(left.iter().all(|k| k[0] == first.paged.kind));
        first.close().unwrap();
        drop(first);

        let second = Store::over(backend).unwrap();
        assert_ne!(second.paged.kind, left[0][0]);
        second.page_out(slot(uid, 0), 0, &msg("new")).unwrap();
        second
            .paged
            .write_level(backend_of(&second), uid, None)
            .unwrap();
        second.clear_paged().unwrap();
        let now = keys(&second);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0][0], second.paged.kind);
        assert_eq!(
            &second.page_in(uid, 0, 0, 10).unwrap()[0].message.body[..],
            b"new"
        );
    }

    fn backend_of(s: &Store) -> &dyn Backend {
        s.backend.as_ref()
    }
}
