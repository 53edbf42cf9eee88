//! The part of a channel that queues deliver through.
//!
//! [`Deliveries`] is shared between a channel (owned by its connection's
//! reader task) and the queues its consumers read from, which deliver from
//! whatever task enqueued the message. It assigns delivery tags, keeps the
//! ledger of unacknowledged deliveries, knows the channel's consumers, and
//! encodes `basic.deliver` straight into the connection's outbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;
use parking_lot::Mutex;

use super::channel_status::{ChannelEvent, ChannelStatus};
use super::codec;
use super::outbox::Outbox;
use crate::broker::Broker;
use crate::broker::VHost;
use crate::broker::events::{INTERNAL_USER, channel_pid};
use crate::broker::firehose::Tracer;
use crate::metrics::MessageEvent;
use crate::queue::{ConnectionId, Consumer, ConsumerId, DeliveryTarget, Queue, QueuedMessage};
use crate::telemetry::{self, spans};

/// A delivery awaiting acknowledgement.
#[derive(Debug)]
pub struct Unacked {
    pub queue: Arc<Queue>,
    /// `None` for `basic.get`.
    pub consumer: Option<ConsumerId>,
    pub message: QueuedMessage,
    /// When it times out, if a consumer timeout applies.
    pub deadline: Option<AckDeadline>,
}

/// When an unacknowledged delivery times out, on the broker's
/// [`AckClock`](crate::broker::connections::AckClock).
#[derive(Clone, Copy, Debug)]
pub struct AckDeadline {
    pub at_ms: u64,
    pub timeout_ms: u64,
}

/// A consumer as its channel knows it.
#[derive(Debug, Clone)]
pub struct ConsumerLink {
    pub id: ConsumerId,
    pub queue: Arc<Queue>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    next_tag: u64,
    /// Deliveries awaiting a settle, by tag.
    unacked: BTreeMap<u64, Unacked>,
    /// Body bytes of `unacked` (for the memory alarm).
    unacked_bytes: u64,
    /// No delivery in `unacked` times out before this (settled ones may
    /// have set it: it is recomputed when it passes).
    earliest_deadline: Option<u64>,
    pub consumers: HashMap<ShortString, ConsumerLink>,
    /// While this channel deletes a queue, the `basic.cancel` of its own
    /// consumers on it wait here to follow the `delete-ok`.
    held_cancels: Option<Vec<ShortString>>,
}

fn size(u: &Unacked) -> u64 {
    u.message.message.body_size() as u64
}

impl Ledger {
    pub fn next_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn insert(&mut self, tag: u64, u: Unacked) {
        self.unacked_bytes += size(&u);
        if let Some(d) = u.deadline {
            self.earliest_deadline =
                Some(self.earliest_deadline.map_or(d.at_ms, |e| e.min(d.at_ms)));
        }
        self.unacked.insert(tag, u);
    }

    fn taken(&mut self, taken: BTreeMap<u64, Unacked>) -> Vec<(u64, Unacked)> {
        let bytes: u64 = taken.values().map(size).sum();
        self.unacked_bytes = self.unacked_bytes.saturating_sub(bytes);
        taken.into_iter().collect()
    }

    /// Every outstanding delivery, in tag order.
    pub fn take_all(&mut self) -> Vec<(u64, Unacked)> {
        let all = std::mem::take(&mut self.unacked);
        self.taken(all)
    }

    /// Every outstanding delivery up to and including `tag`.
    pub fn take_through(&mut self, tag: u64) -> Vec<(u64, Unacked)> {
        let rest = self.unacked.split_off(&(tag.saturating_add(1)));
        let through = std::mem::replace(&mut self.unacked, rest);
        self.taken(through)
    }

    pub fn take(&mut self, tag: u64) -> Option<Unacked> {
        let u = self.unacked.remove(&tag)?;
        self.unacked_bytes = self.unacked_bytes.saturating_sub(size(&u));
        Some(u)
    }

    pub fn contains(&self, tag: u64) -> bool {
        self.unacked.contains_key(&tag)
    }

    /// The stream (if any) of a delivery `tag` (and, with `multiple`, those
    /// before it) came from: streams take no nack, reject or recover.
    pub fn stream_among(&self, tag: u64, multiple: bool) -> Option<String> {
        let found = |u: &Unacked| u.queue.stream.is_some().then(|| u.queue.described());
        if multiple {
            let through = if tag == 0 { u64::MAX } else { tag };
            self.unacked.range(..=through).find_map(|(_, u)| found(u))
        } else {
            self.unacked.get(&tag).and_then(found)
        }
    }

    /// Deliveries taken out come back (a rolled-back transaction's acks).
    pub fn restore(&mut self, taken: Vec<(u64, Unacked)>) {
        for (tag, u) in taken {
            self.insert(tag, u);
        }
    }

    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Body bytes of the outstanding deliveries.
    pub fn bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// The timeout of a delivery unacknowledged past its deadline, if any.
    pub fn late(&mut self, now_ms: u64) -> Option<u64> {
        if self.earliest_deadline? > now_ms {
            return None;
        }
        let mut earliest = None;
        for d in self.unacked.values().filter_map(|u| u.deadline) {
            if d.at_ms <= now_ms {
                return Some(d.timeout_ms);
            }
            earliest = Some(earliest.map_or(d.at_ms, |e: u64| e.min(d.at_ms)));
        }
        self.earliest_deadline = earliest;
        None
    }
}

#[derive(Debug)]
pub struct Deliveries {
    pub channel: u16,
    connection: ConnectionId,
    /// What operators see of the channel.
    pub status: ChannelStatus,
    pub outbox: Arc<Outbox>,
    frame_max: u32,
    broker: Arc<Broker>,
    /// The channel's vhost (is it traced?).
    vhost: Arc<VHost>,
    /// The client understands server-sent `basic.cancel`.
    cancel_notify: bool,
    /// False once the channel is closing: nothing more is delivered.
    open: AtomicBool,
    /// `channel.flow` state.
    flow_active: AtomicBool,
    /// `basic.qos` with global=true: unacked deliveries across the channel.
    global_prefetch: AtomicU32,
    /// Body bytes of the channel's open transaction (publishes and the
    /// deliveries whose settles it holds), kept by the channel.
    pub tx_bytes: AtomicU64,
    /// A consumer without prefetch reached the unacked limit: acks poke the
    /// queues again.
    capped: AtomicBool,
    pub ledger: Mutex<Ledger>,
}

impl Deliveries {
    pub fn new(
        channel: u16,
        connection: ConnectionId,
        outbox: Arc<Outbox>,
        frame_max: u32,
        broker: Arc<Broker>,
        vhost: Arc<VHost>,
        cancel_notify: bool,
    ) -> Arc<Deliveries> {
        Arc::new(Deliveries {
            channel,
            connection,
            status: ChannelStatus::default(),
            outbox,
            frame_max,
            broker,
            vhost,
            cancel_notify,
            open: AtomicBool::new(true),
            flow_active: AtomicBool::new(true),
            global_prefetch: AtomicU32::new(0),
            tx_bytes: AtomicU64::new(0),
            capped: AtomicBool::new(false),
            ledger: Mutex::new(Ledger::default()),
        })
    }

    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    pub fn set_flow(&self, active: bool) {
        self.flow_active.store(active, Ordering::Release);
    }

    pub fn global_prefetch(&self) -> u32 {
        self.global_prefetch.load(Ordering::Relaxed)
    }

    pub fn flow_active(&self) -> bool {
        self.flow_active.load(Ordering::Relaxed)
    }

    pub fn set_global_prefetch(&self, count: u16) {
        self.global_prefetch.store(count.into(), Ordering::Release);
    }

    pub fn has_global_prefetch(&self) -> bool {
        self.global_prefetch.load(Ordering::Acquire) != 0
    }

    /// Whether deliveries paused at the unacked limit since the last ask.
    pub fn take_capped(&self) -> bool {
        self.capped.swap(false, Ordering::AcqRel)
    }

    /// Body bytes of unacknowledged deliveries and of the open transaction.
    pub fn held_bytes(&self) -> u64 {
        self.ledger.lock().bytes() + self.tx_bytes.load(Ordering::Relaxed)
    }

    /// Queues this channel consumes from, to poke when capacity returns.
    pub fn consumed_queues(&self) -> Vec<Arc<Queue>> {
        let ledger = self.ledger.lock();
        let mut queues: Vec<Arc<Queue>> =
            ledger.consumers.values().map(|c| c.queue.clone()).collect();
        queues.sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
        queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        queues
    }

    /// A firehose copy of a delivery, while the vhost traces.
    fn trace(&self, queue: &Queue, message: &QueuedMessage) {
        if !self.vhost.is_tracing() {
            return;
        }
        let Some(conn) = self.broker.connection(self.connection) else {
            return;
        };
        let by = Tracer {
            connection: &conn.details.name,
            channel: self.channel,
            user: &conn.user,
        };
        self.broker.events.trace_deliver(
            &self.vhost.name,
            queue.config.name.as_str(),
            &message.message,
            message.redelivered,
            by,
        );
    }

    /// A span for the delivery of a traced message.
    fn record_span(
        &self,
        queue: &Queue,
        message: &QueuedMessage,
        tag: u64,
        consumer: Option<&str>,
    ) {
        let m = &message.message;
        spans::deliver(
            &m.properties,
            &spans::Delivery {
                operation: if consumer.is_some() { "deliver" } else { "get" },
                queue: queue.name(),
                routing_key: m.routing_key.as_str(),
                delivery_tag: tag,
                consumer_tag: consumer,
                redelivered: message.redelivered,
                received_ms: m.received_ms,
                body_size: m.body.len(),
            },
        );
    }

    /// Encode a message as `basic.get-ok` and record it (unless no-ack).
    pub fn deliver_get(&self, queue: &Arc<Queue>, message: QueuedMessage, no_ack: bool, left: u32) {
        self.trace(queue, &message);
        let mut ledger = self.ledger.lock();
        let tag = ledger.next_tag();
        if telemetry::enabled() {
            self.record_span(queue, &message, tag, None);
        }
        let m = &message.message;
        self.outbox.append(|buf| {
            codec::encode_get_ok(
                buf,
                self.channel,
                tag,
                message.redelivered,
                m.exchange.as_str(),
                m.routing_key.as_str(),
                left,
            );
            codec::encode_content(buf, self.channel, &m.properties, &m.body, self.frame_max);
        });
        self.count(false, no_ack, message.redelivered);
        if !no_ack {
            let delivery = Unacked {
                queue: queue.clone(),
                consumer: None,
                message,
                deadline: self.deadline(queue.consumer_timeout()),
            };
            ledger.insert(tag, delivery);
        }
    }

    /// A mandatory message that routed nowhere, later than its publish (a
    /// delayed message): `basic.return` it, unless the channel closed.
    pub fn return_unroutable(&self, m: &crate::message::Message) {
        if !self.open.load(Ordering::Acquire) {
            return;
        }
        self.count_return();
        self.outbox.send(|buf| self.encode_return(buf, m));
    }

    /// Count a `basic.return` of an unroutable message.
    pub fn count_return(&self) {
        self.broker
            .metrics
            .count(MessageEvent::UnroutableReturned, 1);
        self.status.count(ChannelEvent::ReturnUnroutable, 1);
    }

    /// `basic.return` 312 NO_ROUTE with the message.
    pub fn encode_return(&self, buf: &mut bytes::BytesMut, m: &crate::message::Message) {
        codec::encode_return(
            buf,
            self.channel,
            312,
            "NO_ROUTE",
            m.exchange.as_str(),
            m.routing_key.as_str(),
        );
        codec::encode_content(buf, self.channel, &m.properties, &m.body, self.frame_max);
    }

    /// The deadline of a delivery made now: the consumer's or the queue's
    /// timeout, else the server's (`limits.consumer_timeout_ms`, 0: none).
    fn deadline(&self, timeout_ms: Option<u64>) -> Option<AckDeadline> {
        let timeout_ms = timeout_ms.unwrap_or(self.broker.config.limits.consumer_timeout_ms);
        (timeout_ms != 0).then(|| AckDeadline {
            at_ms: self.broker.ack_clock.deadline(timeout_ms),
            timeout_ms,
        })
    }

    /// The timeout of a delivery left unacknowledged past its deadline.
    pub fn late(&self, now_ms: u64) -> Option<u64> {
        self.ledger.lock().late(now_ms)
    }

    /// Count a delivery to a consumer or for `basic.get`.
    fn count(&self, consumer: bool, no_ack: bool, redelivered: bool) {
        use MessageEvent::*;
        let metrics = &self.broker.metrics;
        metrics.count(Delivered, 1);
        if redelivered {
            metrics.count(Redelivered, 1);
            self.status.count(ChannelEvent::Redeliver, 1);
        }
        let (event, channel_event) = match (consumer, no_ack) {
            (true, true) => (DeliveredConsumeAutoAck, ChannelEvent::DeliverNoAck),
            (true, false) => (DeliveredConsumeManualAck, ChannelEvent::Deliver),
            (false, true) => (DeliveredGetAutoAck, ChannelEvent::GetNoAck),
            (false, false) => (DeliveredGetManualAck, ChannelEvent::Get),
        };
        metrics.count(event, 1);
        self.status.count(channel_event, 1);
    }
}

impl DeliveryTarget for Deliveries {
    fn ready(&self, queue: &Arc<Queue>, consumer: &Consumer) -> bool {
        if !self.open.load(Ordering::Acquire) || !self.flow_active.load(Ordering::Acquire) {
            return false;
        }
        if !consumer.no_ack {
            let global = self.global_prefetch.load(Ordering::Acquire) as usize;
            // Without a prefetch limit a consumer could pin a whole queue in
            // memory: deliveries pause at the channel's unacked limit.
            let cap = if consumer.prefetch == 0 {
                self.broker.config.limits.max_unacked_per_channel
            } else {
                0
            };
            if global != 0 || cap != 0 {
                let held = self.ledger.lock().len();
                if global != 0 && held >= global {
                    return false;
                }
                if cap != 0 && held >= cap {
                    self.capped.store(true, Ordering::Release);
                    return false;
                }
            }
        }
        self.outbox.has_room_for(queue)
    }

    fn deliver(&self, queue: &Arc<Queue>, consumer: &Consumer, message: QueuedMessage) {
        self.trace(queue, &message);
        let mut ledger = self.ledger.lock();
        let tag = ledger.next_tag();
        if telemetry::enabled() {
            self.record_span(queue, &message, tag, Some(consumer.tag.as_str()));
        }
        let m = &message.message;
        self.outbox.send(|buf| {
            codec::encode_deliver(
                buf,
                self.channel,
                consumer.tag.as_str(),
                tag,
                message.redelivered,
                m.exchange.as_str(),
                m.routing_key.as_str(),
            );
            codec::encode_content(buf, self.channel, &m.properties, &m.body, self.frame_max);
        });
        self.count(true, consumer.no_ack, message.redelivered);
        if !consumer.no_ack {
            let delivery = Unacked {
                queue: queue.clone(),
                consumer: Some(consumer.id),
                message,
                deadline: self.deadline(consumer.timeout_ms.or_else(|| queue.consumer_timeout())),
            };
            ledger.insert(tag, delivery);
        }
    }

    fn owner(&self) -> (ConnectionId, u16) {
        (self.connection, self.channel)
    }

    fn cancelled(&self, queue: &Arc<Queue>, consumer: &Consumer) {
        let mut ledger = self.ledger.lock();
        if ledger.consumers.remove(&consumer.tag).is_none() {
            return;
        }
        self.broker.metrics.consumers.decrement(1.0);
        let pid = channel_pid(&self.broker.node_name, self.connection, self.channel);
        self.broker
            .events
            .consumer_deleted(queue, consumer.tag.as_str(), &pid, INTERNAL_USER);
        if self.cancel_notify && self.open.load(Ordering::Acquire) {
            if let Some(held) = ledger.held_cancels.as_mut() {
                held.push(consumer.tag.clone());
                return;
            }
            let cancel = cancel_method(consumer.tag.clone());
            self.outbox
                .send(|buf| codec::encode_method(buf, self.channel, &cancel));
        }
    }
}

impl Deliveries {
    /// Hold back the `basic.cancel` of this channel's consumers until
    /// [`Deliveries::take_held_cancels`]: a channel deleting a queue answers
    /// `delete-ok` before it cancels its own consumers, as RabbitMQ does.
    pub fn hold_cancels(&self) {
        self.ledger.lock().held_cancels = Some(Vec::new());
    }

    /// The cancels held since [`Deliveries::hold_cancels`], to send now.
    pub fn take_held_cancels(&self) -> Vec<AMQPClass> {
        let held = self.ledger.lock().held_cancels.take();
        held.into_iter().flatten().map(cancel_method).collect()
    }
}

fn cancel_method(consumer_tag: ShortString) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
        consumer_tag,
        nowait: true,
    }))
}
