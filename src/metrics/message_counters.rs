//! The per-message counters, striped per thread.
//!
//! The exporter's counters are one shared atomic each, wrapped in a second
//! (a generation count), so every increment is two locked instructions on a
//! cache line that the publisher's and the consumer's threads both write.
//! With four counters bumped per message that was ~5 % of a 1→1 run's CPU.
//! Here each thread adds to its own stripe and a scrape sums the stripes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// What happened to a message, as RabbitMQ's `rabbitmq_global_messages_*`
/// counters count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEvent {
    Received,
    ReceivedConfirm,
    Routed,
    UnroutableDropped,
    UnroutableReturned,
    Confirmed,
    Delivered,
    Redelivered,
    DeliveredConsumeAutoAck,
    DeliveredConsumeManualAck,
    DeliveredGetAutoAck,
    DeliveredGetManualAck,
    GetEmpty,
    Acknowledged,
    DeadLetteredExpired,
    DeadLetteredMaxLen,
    DeadLetteredRejected,
    DeadLetteredDeliveryLimit,
}

const EVENTS: usize = MessageEvent::DeadLetteredDeliveryLimit as usize + 1;
/// More stripes than runtime threads on most machines; threads beyond that
/// share a stripe, which costs speed, not correctness.
const STRIPES: usize = 16;

/// Upper bounds of the message size histogram's buckets, RabbitMQ 4.x's
/// (`rabbitmq_message_size_bytes`); the last bucket is `+Inf`.
pub const SIZE_BUCKETS: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// One thread's counts: events, then message sizes (a bucket per bound
/// and `+Inf`, then the byte sum).
struct Stripe {
    events: [AtomicU64; EVENTS],
    sizes: [AtomicU64; SIZE_BUCKETS.len() + 2],
}

pub struct MessageCounters {
    stripes: Box<[CachePadded<Stripe>]>,
}

/// The size histogram summed over threads: counts per bucket (not
/// cumulative, `+Inf` last) and the byte sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeHistogram {
    pub buckets: [u64; SIZE_BUCKETS.len() + 1],
    pub sum: u64,
}

impl MessageCounters {
    pub fn new() -> MessageCounters {
        MessageCounters {
            stripes: (0..STRIPES)
                .map(|_| {
                    CachePadded::new(Stripe {
                        events: std::array::from_fn(|_| AtomicU64::new(0)),
                        sizes: std::array::from_fn(|_| AtomicU64::new(0)),
                    })
                })
                .collect(),
        }
    }

    pub fn add(&self, event: MessageEvent, n: u64) {
        self.stripes[stripe()].events[event as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A message of `bytes` was published.
    #[inline]
    pub fn size(&self, bytes: u64) {
        let bucket = SIZE_BUCKETS
            .iter()
            .position(|&b| bytes <= b)
            .unwrap_or(SIZE_BUCKETS.len());
        let s = &self.stripes[stripe()].sizes;
        s[bucket].fetch_add(1, Ordering::Relaxed);
        s[SIZE_BUCKETS.len() + 1].fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sizes(&self) -> SizeHistogram {
        let total = |i: usize| -> u64 {
            self.stripes
                .iter()
                .map(|s| s.sizes[i].load(Ordering::Relaxed))
                .sum()
        };
        SizeHistogram {
            buckets: std::array::from_fn(total),
            sum: total(SIZE_BUCKETS.len() + 1),
        }
    }

    /// The count so far, over all threads.
    pub fn total(&self, event: MessageEvent) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.events[event as usize].load(Ordering::Relaxed))
            .sum()
    }
}

impl Default for MessageCounters {
    fn default() -> Self {
        MessageCounters::new()
    }
}

/// This thread's stripe, handed out round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_across_threads() {
        let counters = std::sync::Arc::new(MessageCounters::new());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let c = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(MessageEvent::Delivered, 1);
                    }
                    c.add(MessageEvent::Acknowledged, 3);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counters.total(MessageEvent::Delivered), 20_000);
        assert_eq!(counters.total(MessageEvent::Acknowledged), 60);
        assert_eq!(counters.total(MessageEvent::Received), 0);
    }

    #[test]
    fn sizes_fall_in_rabbitmqs_buckets() {
        let c = MessageCounters::new();
        for bytes in [0, 100, 101, 5_000, 200_000_000] {
            c.size(bytes);
        }
        let h = c.sizes();
        assert_eq!(h.buckets, [2, 1, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(h.sum, 200_005_201);
    }
}
