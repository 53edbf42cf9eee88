//! The broker's one timer: wakes queues when something of theirs is due —
//! a message expiring, a delayed retry becoming deliverable, an unused
//! queue's `x-expires` running out.
//!
//! Each queue keeps its own ordered index of what is due when and asks to be
//! woken at its earliest time; this heap holds one entry per request, not
//! per message. A queue that asks again for an earlier time simply adds an
//! entry; stale entries wake a queue that finds nothing due, which is
//! cheap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Queue;
use super::expiry::now_ms;

#[derive(Debug, Default)]
pub struct Deadlines {
    heap: Mutex<BinaryHeap<Reverse<Wake>>>,
    changed: Notify,
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

    /// Entries waiting (for diagnostics and tests).
    pub fn pending(&self) -> usize {
        self.heap.lock().len()
    }

    /// Wake queues as their times come, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let now = now_ms();
            let next = self.heap.lock().peek().map(|Reverse(w)| w.at);
            match next {
                Some(at) if at <= now => {
                    for queue in self.take_due(now) {
                        queue.on_deadline(now);
                        // Let connections run between queues with much to do.
                        tokio::task::yield_now().await;
                    }
                }
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                        _ = self.changed.notified() => {}
                        _ = stop.cancelled() => return,
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.changed.notified() => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    fn take_due(&self, now: u64) -> Vec<Arc<Queue>> {
        let mut heap = self.heap.lock();
        let mut due = Vec::new();
        let mut seen = std::collections::HashSet::new();
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
}
