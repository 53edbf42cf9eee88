//! What operators see of a queue: its event counts and rates, and a
//! snapshot of its state taken under one lock.
//!
//! Counts are bumped on the queue's own paths (publish, delivery, get,
//! ack) with relaxed atomic adds; rates and `idle_since` are the broker
//! sampler's business ([`QueueStats::sample`]), so nothing here reads a
//! clock on the message path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use amq_protocol::types::{FieldTable, ShortString};
use parking_lot::Mutex;

use super::{ConnectionId, ConsumerId, Queue, QueuedMessage};
use crate::metrics::rates::{EventCounts, Rates};

/// What a queue counts, in the order of [`QUEUE_EVENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum QueueEvent {
    Publish,
    Deliver,
    DeliverNoAck,
    Get,
    GetNoAck,
    Ack,
    Redeliver,
}

/// The names RabbitMQ's `message_stats` gives the counts.
pub const QUEUE_EVENTS: [&str; 7] = [
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "ack",
    "redeliver",
];

/// Upper bounds (ms) of the publish-to-deliver latency buckets.
pub const LATENCY_BUCKETS_MS: [u64; 10] = [1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 60_000];

/// How long messages waited between arriving at the broker and their first
/// delivery from this queue: counts per bucket (`+Inf` last) and the sum.
#[derive(Debug, Default)]
pub struct DeliveryLatency {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

/// [`DeliveryLatency`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Per bucket, not cumulative; `+Inf` last.
    pub buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    pub sum_ms: u64,
}

impl DeliveryLatency {
    #[inline]
    pub fn record(&self, ms: u64) {
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

impl LatencyHistogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound (ms) of the bucket holding quantile `q`; `None`
    /// with no deliveries, or when it falls past the last bound.
    pub fn quantile_bound_ms(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BUCKETS_MS.get(i).copied();
            }
        }
        None
    }
}

/// Counts, depth rates and idleness of one queue.
#[derive(Debug)]
pub struct QueueStats {
    pub events: EventCounts<7>,
    /// Publish-to-first-delivery latency.
    pub latency: DeliveryLatency,
    /// Rates of `messages`, `messages_ready`, `messages_unacknowledged`.
    pub depth: Rates<3>,
    /// Since when nothing happened, as the sampler last saw it.
    idle: Mutex<Idle>,
}

impl Default for QueueStats {
    /// A new queue is idle since it was made.
    fn default() -> Self {
        QueueStats {
            events: EventCounts::default(),
            latency: DeliveryLatency::default(),
            depth: Rates::default(),
            idle: Mutex::new(Idle {
                last_events: None,
                since: Some(SystemTime::now()),
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Idle {
    last_events: Option<[u64; 7]>,
    since: Option<SystemTime>,
}

impl QueueStats {
    #[inline]
    pub fn count(&self, event: QueueEvent, n: u64) {
        self.events.add(event as usize, n);
    }

    /// A message handed to a consumer (`consumer`) or to `basic.get`.
    #[inline]
    pub fn count_delivery(&self, consumer: bool, no_ack: bool, redelivered: bool) {
        let event = match (consumer, no_ack) {
            (true, false) => QueueEvent::Deliver,
            (true, true) => QueueEvent::DeliverNoAck,
            (false, false) => QueueEvent::Get,
            (false, true) => QueueEvent::GetNoAck,
        };
        self.count(event, 1);
        if redelivered {
            self.count(QueueEvent::Redeliver, 1);
        }
    }

    /// The sampler's look: rates, and whether the queue has been idle
    /// since the previous look.
    pub fn sample(&self, now: Instant, wall: SystemTime, depth: [u64; 3]) {
        self.events.sample(now);
        self.depth.observe(now, depth);
        let events = self.events.values();
        let mut idle = self.idle.lock();
        match idle.last_events {
            Some(last) if last == events => {
                idle.since.get_or_insert(wall);
            }
            // The first look at a queue with events: busy since made.
            Some(_) => idle.since = None,
            None if events != [0; 7] => idle.since = None,
            None => {}
        }
        idle.last_events = Some(events);
    }

    /// When the queue went idle (RabbitMQ's `idle_since`), if it is.
    pub fn idle_since(&self) -> Option<SystemTime> {
        self.idle.lock().since
    }
}

/// One consumer as operators see it.
#[derive(Clone, Debug)]
pub struct ConsumerView {
    pub id: ConsumerId,
    pub tag: ShortString,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u16,
    pub priority: i32,
    pub arguments: FieldTable,
    /// Receives messages now (with a single active consumer, only one).
    pub active: bool,
    pub timeout_ms: Option<u64>,
    pub connection: ConnectionId,
    pub channel: u16,
    /// A stream consumer's next offset and its lag behind the stream's end.
    pub stream_position: Option<(u64, u64)>,
    /// Deliveries it holds unacknowledged.
    pub unacked: u32,
    /// When it last acknowledged or rejected one (ms since the epoch; 0 if
    /// never, and for stream consumers, whose acks are credit).
    pub last_settled_ms: u64,
}

/// A queue's numbers at one moment, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueGauges {
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
    pub ready_bytes: u64,
    pub ready_in_memory: u64,
    pub memory_bytes: u64,
    /// When the oldest ready message was received (ms since the epoch).
    pub oldest_ready_ms: Option<u64>,
}

/// A queue's state at one moment.
#[derive(Clone, Debug)]
pub struct QueueView {
    pub ready: u64,
    pub unacked: u64,
    /// Body bytes of ready messages.
    pub ready_bytes: u64,
    /// Ready messages held in memory; the rest are paged out to the store.
    pub ready_in_memory: u64,
    pub memory_bytes: u64,
    /// Ready messages that survive a restart (persistent, in a durable
    /// queue).
    pub persistent: u64,
    pub consumers: Vec<ConsumerView>,
    /// The policy that applies, if any.
    pub policy: Option<String>,
    pub operator_policy: Option<String>,
    /// When the oldest ready message was received (ms since the epoch).
    pub oldest_ready_ms: Option<u64>,
}

impl ConsumerView {
    /// What a queue's consumer record says of it; a stream's caller adds
    /// its position and outstanding deliveries.
    fn of(c: &super::Consumer, active: bool) -> ConsumerView {
        let (connection, channel) = c.channel.owner();
        ConsumerView {
            id: c.id,
            tag: c.tag.clone(),
            ack_required: !c.no_ack,
            exclusive: c.exclusive,
            prefetch_count: c.prefetch,
            priority: c.priority,
            arguments: c.arguments.clone(),
            active,
            timeout_ms: c.timeout_ms,
            connection,
            channel,
            stream_position: None,
            unacked: c.unacked,
            last_settled_ms: c.last_settled_ms,
        }
    }
}

impl Queue {
    /// A snapshot for the management API (one lock).
    pub fn view(self: &Arc<Self>) -> QueueView {
        if let Some(stream) = &self.stream {
            return self.stream_view(stream);
        }
        let st = self.state.lock();
        let core = &st.core;
        let consumers = core
            .consumers()
            .map(|c| ConsumerView::of(c, core.is_active_consumer(c.id)))
            .collect();
        QueueView {
            ready: core.len() as u64,
            unacked: u64::from(core.unacked()),
            ready_bytes: core.ready_bytes(),
            ready_in_memory: core.in_memory() as u64,
            memory_bytes: core.memory_bytes(),
            persistent: core.persistent_ready(),
            consumers,
            policy: core.settings().policy.clone(),
            operator_policy: core.settings().operator_policy.clone(),
            oldest_ready_ms: core.oldest_ready_received_ms(),
        }
    }

    /// Up to `n` ready messages from the head, in delivery order, without
    /// delivering them: nothing is marked redelivered or moved. Messages
    /// paged out to the store are not shown.
    pub fn browse(&self, n: usize) -> Vec<QueuedMessage> {
        self.state.lock().core.peek(n)
    }

    fn stream_view(&self, stream: &super::stream::StreamQueue) -> QueueView {
        let committed = stream.log.committed();
        let consumers = stream
            .consumers()
            .iter()
            .map(|s| {
                let mut view = ConsumerView::of(&s.consumer, s.is_active());
                let at = s.position();
                view.stream_position = Some((at, committed.saturating_sub(at)));
                view.unacked = s.outstanding();
                view
            })
            .collect();
        let (bytes, _) = stream.log.size();
        let settings = self.state.lock().core.settings().clone();
        QueueView {
            ready: stream.len(),
            unacked: stream.unacked(),
            ready_bytes: bytes,
            ready_in_memory: 0,
            memory_bytes: 0,
            persistent: stream.len(),
            consumers,
            policy: settings.policy,
            operator_policy: settings.operator_policy,
            oldest_ready_ms: None,
        }
    }

    /// The figures metrics export, under one lock and without copying
    /// consumers.
    pub fn gauges(&self) -> QueueGauges {
        if let Some(stream) = &self.stream {
            let (bytes, _) = stream.log.size();
            return QueueGauges {
                ready: stream.len(),
                unacked: stream.unacked(),
                consumers: stream.consumer_count() as u64,
                ready_bytes: bytes,
                ready_in_memory: 0,
                memory_bytes: 0,
                oldest_ready_ms: None,
            };
        }
        let st = self.state.lock();
        let core = &st.core;
        QueueGauges {
            ready: core.len() as u64,
            unacked: u64::from(core.unacked()),
            consumers: core.consumer_count() as u64,
            ready_bytes: core.ready_bytes(),
            ready_in_memory: core.in_memory() as u64,
            memory_bytes: core.memory_bytes(),
            oldest_ready_ms: core.oldest_ready_received_ms(),
        }
    }

    /// Ready and unacknowledged counts, for aggregates (one lock, nothing
    /// copied).
    pub fn depth(&self) -> (u64, u64) {
        if let Some(stream) = &self.stream {
            return (stream.len(), stream.unacked());
        }
        let st = self.state.lock();
        (st.core.len() as u64, u64::from(st.core.unacked()))
    }
}
