//! The broker's one timer: wakes queues when something of theirs is due —
//! a message expiring, a delayed retry becoming deliverable, an unused
//! queue's `x-expires` running out.
//!
//! Each queue keeps its own ordered index of what is due when and asks to be
//! woken at its earliest time; this heap holds one entry per request, not
//! per message. A queue that asks again for an earlier time simply adds an
//! entry; stale entries wake a queue that finds nothing due, which is
//! cheap.
//!
//! The timer is a thread of its own, not an async task: expiring messages
//! that live in the store means blocking store I/O, which must not hold up
//! the runtime's workers (and with them every connection).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Queue;
use super::expiry::now_ms;
use super::state::Now;

/// Expired messages one timer wake handles before releasing the queue (about
/// a millisecond of work when they live in the store).
const EXPIRE_BATCH: usize = 128;

/// How long the timer sleeps at most, to notice that it should stop.
const IDLE_WAKE: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct Deadlines {
    heap: Mutex<BinaryHeap<Reverse<Wake>>>,
    changed: Condvar,
    stopped: AtomicBool,
    next_order: AtomicU64,
}

#[derive(Debug)]
struct Wake {
    at: u64,
    /// Ties broken by arrival, so equal times wake in request order.
    order: u64,
    queue: Weak<Queue>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Wake {}

impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Wake {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl Deadlines {
    /// Wake `queue` at `at` (ms since the epoch).
    pub fn arm(&self, at: u64, queue: &Arc<Queue>) {
        let order = self.next_order.fetch_add(1, Ordering::Relaxed);
        let mut heap = self.heap.lock();
        let earliest = heap.peek().is_none_or(|Reverse(w)| at < w.at);
        heap.push(Reverse(Wake {
            at,
            order,
            queue: Arc::downgrade(queue),
        }));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Start the timer thread. It runs until [`Deadlines::stop`] or until
    /// the broker that owns this timer is gone.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("warren-timer".into())
            .spawn(move || {
                while let Some(deadlines) = weak.upgrade() {
                    if deadlines.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    deadlines.tick();
                }
            })
            .map(drop)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Wake the queues that are due, or sleep until the next is.
    fn tick(&self) {
        let now = now_ms();
        let due = {
            let mut heap = self.heap.lock();
            match heap.peek().map(|Reverse(w)| w.at) {
                Some(at) if at <= now => take_due(&mut heap, now),
                Some(at) => {
                    let wait = Duration::from_millis(at - now).min(IDLE_WAKE);
                    self.changed.wait_for(&mut heap, wait);
                    return;
                }
                None => {
                    self.changed.wait_for(&mut heap, IDLE_WAKE);
                    return;
                }
            }
        };
        for queue in due {
            queue.on_deadline(now);
        }
    }

    /// Take the queues due at `now` (what a tick wakes; tests tick by hand
    /// with a manual clock).
    pub fn due(&self, now: u64) -> Vec<Arc<Queue>> {
        take_due(&mut self.heap.lock(), now)
    }
}

fn take_due(heap: &mut BinaryHeap<Reverse<Wake>>, now: u64) -> Vec<Arc<Queue>> {
    let mut due = Vec::new();
    let mut seen = HashSet::new();
    while heap.peek().is_some_and(|Reverse(w)| w.at <= now) {
        if let Some(Reverse(w)) = heap.pop()
            && seen.insert(w.queue.as_ptr())
            && let Some(q) = w.queue.upgrade()
        {
            due.push(q);
        }
    }
    due
}

impl Queue {
    /// The broker's timer woke the queue: deliver delayed messages that are
    /// due, expire messages whose time has come, and delete the queue if it
    /// has been unused for its `x-expires`.
    pub fn on_deadline(self: &Arc<Self>, now: u64) {
        let clock = move || now;
        let now = Now::new(&clock);
        let mut st = self.lock();
        if st.core.is_deleted() {
            return;
        }
        if st.armed.is_some_and(|at| at <= now.get()) {
            st.armed = None;
        }
        st.core.promote_delayed(&now);
        // The timer comes straight back for the next batch: hand the lock
        // to whoever waits for it first, or they could wait for the lot.
        st.fair = true;
        for _ in 0..EXPIRE_BATCH {
            let Some((level, seq)) = st.core.pop_expired(&now) else {
                break;
            };
            if let Some((level, seq)) = st.core.expire(level, seq) {
                self.take_stored(&mut st, level, seq);
            }
        }
        if st.core.settings().message_ttl.is_some() {
            // After a restart only what has been read back is indexed; with
            // a queue TTL the next to expire are the next stored ones.
            self.page_in_heads(&mut st, &now);
        }
        self.dispatch_locked(&mut st, &now);
        let expired = st.core.expires_deadline().is_some_and(|at| now.get() >= at);
        drop(st);
        if expired && let Some(owner) = self.env.owner() {
            owner.expire(self);
        }
    }
}
