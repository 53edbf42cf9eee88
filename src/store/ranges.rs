//! Whole ranges of the `messages` tree: a queue level's bounds and count,
//! purging a range of sequence numbers, removing a deleted queue, clearing
//! the previous run's paged-out messages, and sweeping entries of queues
//! that no longer exist.
//!
//! Purges and deletions take effect at once in memory; the keys are
//! removed afterwards by the background worker (`cleanup`), a page at a
//! time, so no scan holds a whole queue in memory and none of this is on
//! the publish or delivery path. A purge is durable once the commit after
//! it is flushed (the purged range is recorded); a deletion once the
//! queue's definition is gone (whatever it left is an orphan, swept at the
//! next boot if the worker did not finish).

use std::collections::HashSet;

use super::records::{level_range, queue_range, seq_of, u64_at};
use super::unwritten::Unwritten;
use super::{Backend, Store, StoreResult, Tree};

/// Key kinds that belong to a queue uid (`d`, `q` and the paged kinds hold
/// per-message keys; `b`, `x`, `p` batches, removals and purged ranges).
const QUEUE_KINDS: &[u8] = b"bdpqtux";

impl Store {
    /// The first and last sequence numbers of a queue level's durable
    /// entries (an estimate of what is there: removals are not counted).
    pub fn entry_bounds(&self, uid: u64, level: u8) -> StoreResult<Option<(u64, u64)>> {
        let b = self.backend.as_ref();
        let (from, to) = level_range(b'q', uid, level, 0);
        let legacy = match b.scan(Tree::Messages, &from, &to, 1)?.first() {
            Some((k, _)) => {
                let first = seq_of(k).unwrap_or(0);
                let last = b
                    .last_key(Tree::Messages, &from, &to)?
                    .and_then(|k| seq_of(&k))
                    .unwrap_or(first);
                Some((first, last))
            }
            None => None,
        };
        let batches = self.unwritten.entries.bounds(b, uid, level)?;
        Ok(match (legacy, batches) {
            (Some((f1, l1)), Some((f2, l2))) => Some((f1.min(f2), l1.max(l2))),
            (a, b) => a.or(b),
        })
    }

    /// Count a queue level's durable entries with sequence number `>= from`.
    /// Reads every entry: run it off the hot path.
    pub fn count_entries(&self, uid: u64, level: u8, from: u64) -> StoreResult<u64> {
        let b = self.backend.as_ref();
        let purged = self.unwritten.entries.purged(b, uid, level)?;
        let (start, to) = level_range(b'q', uid, level, from);
        let mut start = start.to_vec();
        let mut count = self.unwritten.entries.count(b, uid, level, from)?;
        loop {
            let page = b.scan(Tree::Messages, &start, &to, 4096)?;
            let Some((last, _)) = page.last() else {
                return Ok(count);
            };
            count += page
                .iter()
                .filter_map(|(k, _)| seq_of(k))
                .filter(|s| !purged.iter().any(|(f, t)| (*f..*t).contains(s)))
                .count() as u64;
            start = last.clone();
            start.push(0);
        }
    }

    /// The uids in `[from, to)` that have durable entries written (one
    /// key read per uid): how a delayed-message exchange finds its time
    /// buckets after a restart.
    pub fn uids_with_entries(&self, from: u64, to: u64) -> StoreResult<Vec<u64>> {
        let b = self.backend.as_ref();
        let mut uids = Vec::new();
        for kind in [b'b', b'q'] {
            let end = queue_range(kind, to).0;
            let mut start = queue_range(kind, from).0.to_vec();
            while let Some((k, _)) = b.scan(Tree::Messages, &start, &end, 1)?.pop() {
                let Some(uid) = u64_at(&k, 1) else { break };
                uids.push(uid);
                let Some(next) = uid.checked_add(1) else {
                    break;
                };
                start = queue_range(kind, next).0.to_vec();
            }
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// A deleted queue: forget what it has in memory and have its keys
    /// removed in the background.
    pub fn drop_queue(&self, uid: u64) {
        self.unwritten.entries.drop_queue(uid);
        self.unwritten.paged.drop_queue(uid);
        self.unwritten.drop_marks(uid);
        let (backend, unwritten) = (self.backend.clone(), self.unwritten.clone());
        self.cleanup
            .run(move || remove_queue(backend.as_ref(), &unwritten, uid));
    }

    /// Purge a queue level's stored messages with `from <= seq < to`: gone
    /// at once for reads, durable with the next flush, and cleared in the
    /// background.
    pub fn purge_range(&self, uid: u64, level: u8, from: u64, to: u64) -> StoreResult<()> {
        let b = self.backend.as_ref();
        self.unwritten.entries.purge(b, uid, level, from, to)?;
        self.unwritten.paged.purge(b, uid, level, from, to)?;
        self.commit.touch();
        let (backend, unwritten) = (self.backend.clone(), self.unwritten.clone());
        self.cleanup
            .run(move || clear_range(backend.as_ref(), &unwritten, uid, level, from, to));
        Ok(())
    }

    /// Resume the clearing of ranges purged before the last shutdown.
    pub fn resume_purges(&self, uid: u64, level: u8) -> StoreResult<()> {
        let b = self.backend.as_ref();
        for (from, to) in self.unwritten.entries.purged(b, uid, level)? {
            let (backend, unwritten) = (self.backend.clone(), self.unwritten.clone());
            self.cleanup
                .run(move || clear_range(backend.as_ref(), &unwritten, uid, level, from, to));
        }
        Ok(())
    }

    /// Drop the previous run's paged-out transient messages (they do not
    /// survive a restart; this run pages under the other key kind), and the
    /// keys of queues that no longer exist (deleted just before a crash):
    /// every uid of an earlier run not in `live`. Background work.
    pub fn sweep(&self, live: HashSet<u64>) {
        let backend = self.backend.clone();
        let below = self.first_uid;
        let old = other_kind(self.unwritten.paged.kind);
        let current = self.unwritten.paged.kind;
        self.cleanup.run(move || {
            let b = backend.as_ref();
            remove_prefix(b, &[old], &[old + 1])?;
            for kind in QUEUE_KINDS
                .iter()
                .copied()
                .filter(|k| *k != old && *k != current)
            {
                sweep_kind(b, kind, &live, below)?;
            }
            Ok(())
        });
    }

    /// Whether background removals are still running (tests wait for them).
    pub fn cleanup_idle(&self) -> bool {
        self.cleanup.is_idle()
    }
}

/// The key kind the run after one paging under `kind` pages under.
pub(super) fn other_kind(kind: u8) -> u8 {
    if kind == b't' { b'u' } else { b't' }
}

/// Mark everything of a level in `[from, to)` removed — batches, format-2
/// entries and delivery states — then forget the purged range.
fn clear_range(
    b: &dyn Backend,
    u: &Unwritten,
    uid: u64,
    level: u8,
    from: u64,
    to: u64,
) -> StoreResult<()> {
    u.paged.clear_range(b, uid, level, from, to)?;
    for kind in [b'q', b'd'] {
        let (start, end) = level_range(kind, uid, level, from);
        let mut start = start.to_vec();
        loop {
            let page = b.scan(Tree::Messages, &start, &end, 1024)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                let Some(seq) = seq_of(k) else { continue };
                if seq >= to {
                    break;
                }
                b.remove(Tree::Messages, k)?;
                if kind == b'q'
                    && let Some((1, id)) = v.get(8..).and_then(|v| v.split_first())
                    && let Some(id) = u64_at(id, 0)
                {
                    release_legacy_shared(b, id)?;
                }
            }
        }
    }
    // Last: the purged range is forgotten only once its entries are.
    u.entries.clear_range(b, uid, level, from, to)
}

/// Every key of a deleted queue.
fn remove_queue(b: &dyn Backend, u: &Unwritten, uid: u64) -> StoreResult<()> {
    u.entries.drop_queue(uid);
    u.paged.drop_queue(uid);
    for kind in QUEUE_KINDS {
        let (start, end) = queue_range(*kind, uid);
        if *kind == b'q' {
            release_shared_of(b, &start, &end)?;
        }
        remove_prefix(b, &start, &end)?;
    }
    Ok(())
}

/// Format-2 shared bodies referred to by entries in `[start, end)`.
fn release_shared_of(b: &dyn Backend, start: &[u8], end: &[u8]) -> StoreResult<()> {
    let mut start = start.to_vec();
    loop {
        let page = b.scan(Tree::Messages, &start, end, 1024)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        start = last.clone();
        start.push(0);
        for (_, v) in &page {
            if let Some((1, id)) = v.get(8..).and_then(|v| v.split_first())
                && let Some(id) = u64_at(id, 0)
            {
                release_legacy_shared(b, id)?;
            }
        }
    }
}

fn release_legacy_shared(b: &dyn Backend, id: u64) -> StoreResult<()> {
    let key = |kind: u8| {
        let mut k = [kind; 9];
        k[1..].copy_from_slice(&id.to_be_bytes());
        k
    };
    let refs = b
        .get(Tree::Messages, &key(b'r'))?
        .and_then(|v| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
        .unwrap_or(0);
    if refs <= 1 {
        b.remove(Tree::Messages, &key(b'm'))?;
        b.remove(Tree::Messages, &key(b'r'))
    } else {
        b.insert(Tree::Messages, &key(b'r'), &(refs - 1).to_be_bytes())
    }
}

fn remove_prefix(b: &dyn Backend, start: &[u8], end: &[u8]) -> StoreResult<()> {
    loop {
        let page = b.scan(Tree::Messages, start, end, 1024)?;
        if page.is_empty() {
            return Ok(());
        }
        for (k, _) in page {
            b.remove(Tree::Messages, &k)?;
        }
    }
}

/// Remove the keys of `kind` whose queue uid is below `below` and not in
/// `live`.
fn sweep_kind(b: &dyn Backend, kind: u8, live: &HashSet<u64>, below: u64) -> StoreResult<()> {
    let mut start = vec![kind];
    let end = [kind + 1];
    while let Some((k, _)) = b.scan(Tree::Messages, &start, &end, 1)?.pop() {
        let Some(uid) = u64_at(&k, 1) else {
            return Ok(());
        };
        if uid >= below {
            return Ok(());
        }
        let (from, to) = queue_range(kind, uid);
        if !live.contains(&uid) {
            if kind == b'q' {
                release_shared_of(b, &from, &to)?;
            }
            tracing::debug!(uid, kind = %(kind as char), "removing what a deleted queue left");
            remove_prefix(b, &from, &to)?;
        }
        start = to.to_vec();
    }
    Ok(())
}

#[cfg(test)]
#[path = "ranges_tests.rs"]
mod tests;
