//! Stream queues: a queue whose messages are appended to a log and read
//! by offset, kept by size or age rather than until acknowledged.
//!
//! A [`StreamQueue`] sits inside a [`Queue`] of type stream: publishing
//! appends to its log (`store::log`), each consumer reads the log from its
//! own offset through its own cursor, and an acknowledgement only gives
//! the consumer credit (its prefetch bounds what it holds unacknowledged).
//! Every delivery carries `x-stream-offset`. A consumer with
//! `x-stream-automatic-offset-tracking` has the broker remember, per
//! stream and consumer tag, the first offset it has not acknowledged;
//! a later consumer with that tag starts there.
//!
//! Each consumer has a small task (`pump`) that delivers while it has
//! credit and the log has more, and sleeps otherwise — woken by a sync
//! that moves the log's durable high-water mark, by credit coming back,
//! or by its channel draining.

mod group;
mod offsets;
mod pump;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::args::{AppliedPolicies, QueueArgs};
use super::{Consumer, ConsumerId, Queue, QueuedMessage};
use crate::error::{AmqpError, AmqpResult};
use crate::message::{self, Message};
use crate::store::Store;
use crate::store::log::{Cursor, Entry, Log, Retention, now_ms, offset_at};

pub use offsets::{StartAt, StreamConsumerArgs};

/// One consumer of a stream.
#[derive(Debug)]
pub struct StreamConsumer {
    pub consumer: Consumer,
    state: Mutex<ConsumerState>,
    wake: Notify,
    cancelled: AtomicBool,
    track: bool,
    /// Its `x-stream-consumer-group`, if any.
    group: Option<String>,
    /// Whether it is given messages: always, unless it is a waiting member
    /// of a group.
    active: AtomicBool,
}

impl StreamConsumer {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Credit worth waking up for at once: a quarter of the prefetch.
    pub(super) fn batch_credit(&self) -> u32 {
        (u32::from(self.consumer.prefetch) / 4).max(1)
    }

    /// The offset it reads next.
    pub fn position(&self) -> u64 {
        self.state.lock().cursor.position()
    }

    /// Deliveries it holds unacknowledged.
    pub fn outstanding(&self) -> u32 {
        self.state.lock().outstanding.len() as u32
    }

    /// Where its acknowledgements are remembered, if anywhere: the group's
    /// key for the active member of a group, its tag with automatic
    /// tracking.
    fn tracking_key(&self) -> Option<String> {
        match &self.group {
            Some(g) => self.is_active().then(|| group::tracking_key(g)),
            None => self.track.then(|| self.consumer.tag.to_string()),
        }
    }
}

#[derive(Debug)]
struct ConsumerState {
    cursor: Cursor,
    /// Deliveries it may still take before acknowledging.
    credit: u32,
    /// Offsets delivered and not yet acknowledged (for tracking, which
    /// must never skip past one of them).
    outstanding: BTreeSet<u64>,
}

/// A consumer as operators see it.
#[derive(Clone, Debug)]
pub struct StreamConsumerInfo {
    pub id: ConsumerId,
    pub tag: String,
    /// The next offset it will be given.
    pub offset: u64,
    /// Messages between it and the end of the stream.
    pub lag: u64,
    pub active: bool,
}

/// A stream as operators see it.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    pub first_offset: u64,
    /// Offsets below this are durable and readable.
    pub committed_offset: u64,
    pub segments: usize,
    pub bytes: u64,
    pub consumers: Vec<StreamConsumerInfo>,
}

#[derive(Debug)]
pub struct StreamQueue {
    pub log: Arc<Log>,
    store: Arc<Store>,
    /// In the order they joined (a group's active member is chosen by it).
    consumers: Mutex<Vec<Arc<StreamConsumer>>>,
    /// Its index among a super stream's partitions (0 for a lone stream).
    partition: AtomicU32,
}

impl StreamQueue {
    pub fn new(log: Arc<Log>, store: Arc<Store>) -> StreamQueue {
        StreamQueue {
            log,
            store,
            consumers: Mutex::new(Vec::new()),
            partition: AtomicU32::new(0),
        }
    }

    /// Erase every record that carries `header`, where it sits in the
    /// log; returns how many. Consumers drop what they had read ahead, so
    /// none is delivered after this returns.
    pub fn erase(&self, header: &message::HeaderMatch) -> crate::store::StoreResult<u64> {
        let erased = self.log.erase(&|m| header.matches(&m.properties))?;
        if !erased.is_empty() {
            for c in self.consumers.lock().iter() {
                let mut st = c.state.lock();
                let at = st.cursor.position();
                st.cursor.seek(at);
            }
        }
        Ok(erased.len() as u64)
    }

    pub fn set_retention(&self, r: Retention) {
        self.log.set_retention(r);
    }

    /// Messages in the stream.
    pub fn len(&self) -> u64 {
        self.log.committed().saturating_sub(self.log.first_offset())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.lock().len()
    }

    /// Deliveries not acknowledged yet, over every consumer.
    pub fn unacked(&self) -> u64 {
        self.consumers
            .lock()
            .iter()
            .map(|c| c.state.lock().outstanding.len() as u64)
            .sum()
    }

    /// Append a published message. Its properties gain `x-stream-offset`
    /// (a long) now, so each delivery is the stored bytes as they are.
    pub fn publish(&self, message: &Arc<Message>) {
        let props = message::parse(&message.properties).unwrap_or_default();
        let filter =
            props
                .headers()
                .as_ref()
                .and_then(|h| match h.inner().get("x-stream-filter-value") {
                    Some(AMQPValue::LongString(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
                    Some(AMQPValue::ShortString(s)) => {
                        Some(Bytes::copy_from_slice(s.as_str().as_bytes()))
                    }
                    _ => None,
                });
        self.store
            .append_to_log(&self.log, now_ms(), |offset, _timestamp| {
                let properties = with_offset(&props, offset);
                let mut m = Message::clone(message);
                m.properties = properties;
                Entry {
                    message: Arc::new(m),
                    filter,
                }
            });
    }

    /// Register a consumer and start its task. RabbitMQ's refusals: a
    /// stream consumer needs a prefetch and manual acks.
    pub fn consume(
        &self,
        queue: &Arc<Queue>,
        consumer: Consumer,
        announce: impl FnOnce(),
    ) -> AmqpResult<()> {
        let rs = queue.described();
        // RabbitMQ's checks, in its order and words.
        if consumer.prefetch == 0 {
            return Err(AmqpError::precondition_failed(format!(
                "consumer prefetch count is not set for '{rs}'"
            )));
        }
        if consumer.no_ack {
            return Err(AmqpError::not_implemented(format!(
                "automatic acknowledgement not supported by stream queues {rs}"
            )));
        }
        if consumer.arguments.inner().contains_key("x-priority") {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'x-priority' for {rs} of queue type rabbit_stream_queue"
            )));
        }
        let args = StreamConsumerArgs::parse(&consumer.arguments, now_ms(), &rs)?;
        let key = match &args.group {
            Some(g) => Some(group::tracking_key(g)),
            None => args.track.then(|| consumer.tag.to_string()),
        };
        let tracked = key.and_then(|k| self.log.tracked(&k));
        let start = match tracked {
            Some(offset) => offset,
            None => self.start_offset(args.start),
        };
        let c = Arc::new(StreamConsumer {
            state: Mutex::new(ConsumerState {
                cursor: Cursor::new(self.log.clone(), start, args.filter),
                credit: u32::from(consumer.prefetch),
                outstanding: BTreeSet::new(),
            }),
            consumer,
            wake: Notify::new(),
            cancelled: AtomicBool::new(false),
            track: args.track,
            active: AtomicBool::new(args.group.is_none()),
            group: args.group,
        });
        self.consumers.lock().push(c.clone());
        if let Some(g) = &c.group {
            self.rebalance(g);
        }
        // consume-ok goes out before the task can deliver anything.
        announce();
        pump::start(queue.clone(), c);
        Ok(())
    }

    fn start_offset(&self, start: StartAt) -> u64 {
        match start {
            StartAt::First => self.log.first_offset(),
            StartAt::Next => self.log.next_offset(),
            StartAt::Last => {
                let committed = self.log.committed();
                self.log.last_chunk_start().unwrap_or(committed)
            }
            StartAt::Offset(n) => n.max(self.log.first_offset()),
            StartAt::Timestamp(ms) => offset_at(&self.log, ms),
        }
    }

    fn find(&self, id: ConsumerId) -> Option<Arc<StreamConsumer>> {
        self.consumers
            .lock()
            .iter()
            .find(|c| c.consumer.id == id)
            .cloned()
    }

    /// Stop a consumer; false if there was none.
    pub fn cancel(&self, id: ConsumerId) -> bool {
        let mut consumers = self.consumers.lock();
        let Some(i) = consumers.iter().position(|c| c.consumer.id == id) else {
            return false;
        };
        let c = consumers.remove(i);
        drop(consumers);
        c.cancelled.store(true, Ordering::Release);
        c.wake.notify_one();
        if let Some(g) = &c.group {
            self.rebalance(g);
        }
        true
    }

    /// Deliveries came back: acknowledged or rejected (`processed`), or
    /// returned unprocessed (a channel closing, a nack with requeue: a
    /// stream does not deliver them again, but a tracked offset stays
    /// before them). Either way the consumer gets its credit back.
    pub fn settle(
        &self,
        consumer: Option<ConsumerId>,
        messages: &[QueuedMessage],
        processed: bool,
    ) {
        let Some(c) = consumer.and_then(|id| self.find(id)) else {
            return;
        };
        let (resume, wake) = {
            let mut st = c.state.lock();
            let before = st.credit;
            st.credit = st.credit.saturating_add(messages.len() as u32);
            // A task out of credit sleeps: wake it once a quarter of the
            // prefetch is back, not for every single ack, so it delivers in
            // batches. Less than that is picked up by the task's own
            // timeout (`pump`): a consumer that holds the rest unacked
            // still gets what it has room for.
            let enough = c.batch_credit();
            let wake = before < enough && st.credit >= enough;
            if processed {
                for m in messages {
                    st.outstanding.remove(&m.seq);
                }
            }
            let resume = st
                .outstanding
                .first()
                .copied()
                .unwrap_or_else(|| st.cursor.position());
            (resume, wake)
        };
        if let Some(key) = c.tracking_key() {
            self.store.track_offset(&self.log, &key, resume);
        }
        if wake {
            c.wake.notify_one();
        }
    }

    /// Wake every consumer (credit or room came back, the stream changed).
    pub fn wake_all(&self) {
        for c in self.consumers.lock().iter() {
            c.wake.notify_one();
        }
    }

    /// The stream is being deleted: stop every consumer and hand them back
    /// (their clients are told by the caller).
    pub fn take_consumers(&self) -> Vec<Arc<StreamConsumer>> {
        let all = std::mem::take(&mut *self.consumers.lock());
        for c in &all {
            c.cancelled.store(true, Ordering::Release);
            c.wake.notify_one();
        }
        all
    }

    pub fn info(&self) -> StreamInfo {
        let committed = self.log.committed();
        let (bytes, segments) = self.log.size();
        let consumers = self
            .consumers
            .lock()
            .iter()
            .map(|c| {
                let offset = c.state.lock().cursor.position();
                StreamConsumerInfo {
                    id: c.consumer.id,
                    tag: c.consumer.tag.to_string(),
                    offset,
                    lag: committed.saturating_sub(offset),
                    active: c.is_active(),
                }
            })
            .collect();
        StreamInfo {
            first_offset: self.log.first_offset(),
            committed_offset: committed,
            segments,
            bytes,
            consumers,
        }
    }

    /// Consumers as the queue's views list them.
    pub fn consumers(&self) -> Vec<Arc<StreamConsumer>> {
        self.consumers.lock().clone()
    }
}

/// A stream's retention: a policy's value wins over the argument, as in
/// RabbitMQ 3.12 and later; an operator policy's `max-age` caps the age.
pub fn retention(args: &QueueArgs, policies: &AppliedPolicies<'_>) -> Retention {
    let p = policies.policy.map(|(_, t)| t);
    let operator_age = policies.operator.and_then(|(_, t)| t.max_age);
    let default = Retention::default();
    Retention {
        max_bytes: p
            .and_then(|t| t.max_length_bytes)
            .or(args.tunables.max_length_bytes),
        max_age_ms: crate::queue::args::lower(
            p.and_then(|t| t.max_age).or(args.stream.max_age_ms),
            operator_age,
        ),
        max_segment_bytes: p
            .and_then(|t| t.stream_max_segment_size)
            .or(args.stream.max_segment_bytes)
            .unwrap_or(default.max_segment_bytes),
    }
}

/// Properties with `x-stream-offset` set in their headers.
fn with_offset(props: &BasicProperties, offset: u64) -> Bytes {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        "x-stream-offset".into(),
        AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX)),
    );
    message::encode(&props.clone().with_headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::args::Tunables;

    #[test]
    fn an_operator_policy_caps_a_streams_max_age() {
        let args = QueueArgs::default();
        let mine = Tunables {
            max_age: Some(10_000),
            ..Default::default()
        };
        let cap = Tunables {
            max_age: Some(2_000),
            ..Default::default()
        };
        let both = AppliedPolicies {
            policy: Some(("mine", &mine)),
            operator: Some(("cap", &cap)),
        };
        assert_eq!(retention(&args, &both).max_age_ms, Some(2_000));
        let only_cap = AppliedPolicies {
            policy: None,
            operator: Some(("cap", &cap)),
        };
        assert_eq!(retention(&args, &only_cap).max_age_ms, Some(2_000));
        let only_mine = AppliedPolicies {
            policy: Some(("mine", &mine)),
            operator: None,
        };
        assert_eq!(retention(&args, &only_mine).max_age_ms, Some(10_000));
    }
}
