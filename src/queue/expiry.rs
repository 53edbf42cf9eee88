//! When a queue's messages expire.
//!
//! One ordered index per queue holds every ready message that has an expiry
//! time, keyed by that time, so the next expiry is the first key and a
//! million messages with a TTL cost a million small index entries — not a
//! million timers. The queue asks the broker's [`Deadlines`] to wake it at
//! the first key; whatever is due then is expired where it sits, head of
//! the queue or not (RabbitMQ only expires at the head).
//!
//! Entries leave the index when their message leaves the ready list
//! (delivered, dropped, purged), and come back if it is requeued.
//!
//! [`Deadlines`]: super::Deadlines

use std::collections::BTreeSet;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message's expiry time, or 0 for never: the lower of the queue's TTL and
/// the message's own `expiration`, counted from `now`.
pub fn expiry_time(now: u64, queue_ttl: Option<u64>, message_ttl: Option<u64>) -> u64 {
    let ttl = match (queue_ttl, message_ttl) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => match a.or(b) {
            Some(t) => t,
            None => return 0,
        },
    };
    now.saturating_add(ttl).max(1)
}

/// Whether a message with expiry time `at` has expired at `now`. A message
/// lives through the millisecond its TTL ends in, so a TTL of 0 still
/// reaches a consumer that is waiting for it (as in RabbitMQ).
pub fn has_expired(at: u64, now: u64) -> bool {
    at != 0 && now > at
}

#[derive(Debug, Default)]
pub(super) struct ExpiryIndex {
    /// (expiry time, priority level, sequence number).
    entries: BTreeSet<(u64, u8, u64)>,
}

impl ExpiryIndex {
    pub fn add(&mut self, at: u64, level: u8, seq: u64) {
        if at != 0 {
            self.entries.insert((at, level, seq));
        }
    }

    pub fn remove(&mut self, at: u64, level: u8, seq: u64) {
        if at != 0 {
            self.entries.remove(&(at, level, seq));
        }
    }

    /// When the queue must next wake to expire something (the millisecond
    /// after the first expiry time).
    pub fn next_wake(&self) -> Option<u64> {
        self.entries.first().map(|(at, _, _)| at + 1)
    }

    /// Take the next entry that has expired at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, u8, u64)> {
        let first = *self.entries.first()?;
        if !has_expired(first.0, now) {
            return None;
        }
        self.entries.pop_first()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_ttl_wins_and_zero_means_never() {
        assert_eq!(expiry_time(1000, None, None), 0);
        assert_eq!(expiry_time(1000, Some(50), Some(20)), 1020);
        assert_eq!(expiry_time(1000, Some(50), None), 1050);
        assert_eq!(expiry_time(1000, None, Some(0)), 1000);
        assert!(!has_expired(1000, 1000));
        assert!(has_expired(1000, 1001));
        assert!(!has_expired(0, u64::MAX));
    }

    #[test]
    fn due_entries_come_out_in_time_order() {
        let mut ix = ExpiryIndex::default();
        ix.add(300, 0, 1);
        ix.add(100, 0, 2);
        ix.add(200, 3, 3);
        ix.add(0, 0, 4);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.next_wake(), Some(101));
        assert_eq!(ix.pop_due(100), None);
        assert_eq!(ix.pop_due(250), Some((100, 0, 2)));
        assert_eq!(ix.pop_due(250), Some((200, 3, 3)));
        assert_eq!(ix.pop_due(250), None);
        ix.remove(300, 0, 1);
        assert_eq!(ix.next_wake(), None);
    }
}
