//! The store's bookkeeping in the `meta` tree about queues: lengths kept
//! at a clean shutdown, and how far a crash flagged messages redelivered.

use super::{Store, StoreResult, Tree};

impl Store {
    /// Remember each queue's length per priority level at a clean
    /// shutdown, so the next boot knows queue lengths without counting:
    /// `(uid, level, count)`.
    pub fn save_counts(&self, counts: &[(u64, u8, u64)]) -> StoreResult<()> {
        if !self.durable {
            return Ok(());
        }
        for (uid, level, count) in counts {
            let mut k = b"c".to_vec();
            k.extend_from_slice(&uid.to_be_bytes());
            k.push(*level);
            self.note(self.backend.insert(Tree::Meta, &k, &count.to_be_bytes()))?;
        }
        Ok(())
    }

    /// After a crash every recovered message of a queue up to `seq` comes
    /// back flagged redelivered; this keeps that for the queue with `uid`
    /// across later restarts (clean ones too) until the queue is deleted.
    pub fn set_redelivered_through(&self, uid: u64, seq: u64) -> StoreResult<()> {
        if !self.durable {
            return Ok(());
        }
        let k = redelivered_key(uid);
        self.note(self.backend.insert(Tree::Meta, &k, &seq.to_be_bytes()))
    }

    /// What [`set_redelivered_through`](Self::set_redelivered_through) kept.
    pub fn redelivered_through(&self, uid: u64) -> StoreResult<Option<u64>> {
        let v = self.backend.get(Tree::Meta, &redelivered_key(uid))?;
        Ok(v.and_then(|v| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))))
    }

    /// The queue with `uid` is gone.
    pub fn forget_redelivered_through(&self, uid: u64) -> StoreResult<()> {
        if !self.durable {
            return Ok(());
        }
        self.note(self.backend.remove(Tree::Meta, &redelivered_key(uid)))
    }

    /// Counts saved by the last clean shutdown, by queue uid: `(level,
    /// count)` pairs. They are removed as they are read, so a later crash
    /// cannot reuse them.
    pub fn take_counts(&self) -> StoreResult<std::collections::HashMap<u64, Vec<(u8, u64)>>> {
        let mut out: std::collections::HashMap<u64, Vec<(u8, u64)>> =
            std::collections::HashMap::new();
        for (k, v) in self.backend.scan(Tree::Meta, b"c", b"d", usize::MAX)? {
            let uid = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let level = k.get(9).copied();
            let count = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            if let (Some(uid), Some(level), Some(count)) = (uid, level, count) {
                out.entry(uid).or_default().push((level, count));
            }
            self.note(self.backend.remove(Tree::Meta, &k))?;
        }
        if !out.is_empty() {
            self.note(self.backend.flush())?;
        }
        Ok(out)
    }
}

fn redelivered_key(uid: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&uid.to_be_bytes());
    k
}
