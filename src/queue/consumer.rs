//! A queue's consumers and the rule that picks who gets the next message.
//!
//! Consumers are kept sorted by priority (`x-priority`), highest first, and
//! in registration order within one priority. A message goes to the highest
//! priority group that has a consumer able to take it, round-robin within
//! the group — lower priorities only get messages while every higher one
//! is blocked (prefetch full, flow off, congested), as in RabbitMQ.
//!
//! With `x-single-active-consumer` only one consumer receives messages; when
//! it goes, the highest-priority, longest-waiting consumer takes over.

use std::sync::Arc;

use amq_protocol::types::{FieldTable, ShortString};

use super::dispatch::DeliveryTarget;

/// Broker-wide unique consumer identity (tags are only unique per channel).
pub type ConsumerId = u64;

/// One consumer of a queue. `C` is the handle of the channel it delivers
/// through; the queue's bookkeeping keeps it but never calls it.
#[derive(Debug)]
pub struct Consumer<C = Arc<dyn DeliveryTarget>> {
    pub id: ConsumerId,
    pub tag: ShortString,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos` with global=false); 0 is unlimited.
    pub prefetch: u16,
    /// `x-priority`: higher goes first.
    pub priority: i32,
    /// `x-consumer-timeout`: ms a delivery may stay unacknowledged, over
    /// the queue's and the server's.
    pub timeout_ms: Option<u64>,
    pub arguments: FieldTable,
    pub channel: C,
    /// Deliveries to this consumer not yet acknowledged.
    pub(super) unacked: u32,
    /// When it last acknowledged (or rejected) a delivery, ms since the
    /// epoch; 0 if it never did.
    pub(super) last_settled_ms: u64,
}

impl Consumer {
    /// A consumer delivering through an AMQP channel.
    pub fn new(
        id: ConsumerId,
        tag: ShortString,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        arguments: FieldTable,
        channel: Arc<dyn DeliveryTarget>,
    ) -> Consumer {
        Consumer::with_channel(id, tag, no_ack, exclusive, prefetch, arguments, channel)
    }
}

impl<C> Consumer<C> {
    /// Everything about it but where it delivers (what an event tells).
    pub fn describe(&self) -> Consumer<()> {
        Consumer {
            id: self.id,
            tag: self.tag.clone(),
            no_ack: self.no_ack,
            exclusive: self.exclusive,
            prefetch: self.prefetch,
            priority: self.priority,
            timeout_ms: self.timeout_ms,
            arguments: self.arguments.clone(),
            channel: (),
            unacked: self.unacked,
            last_settled_ms: self.last_settled_ms,
        }
    }

    pub fn with_channel(
        id: ConsumerId,
        tag: ShortString,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        arguments: FieldTable,
        channel: C,
    ) -> Consumer<C> {
        let priority = arguments
            .inner()
            .get("x-priority")
            .and_then(crate::fields::int_value)
            .map_or(0, |p| p.clamp(i32::MIN.into(), i32::MAX.into()) as i32);
        let timeout_ms = arguments
            .inner()
            .get("x-consumer-timeout")
            .and_then(crate::fields::int_value)
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0);
        Consumer {
            id,
            tag,
            no_ack,
            exclusive,
            prefetch,
            priority,
            timeout_ms,
            arguments,
            channel,
            unacked: 0,
            last_settled_ms: 0,
        }
    }

    /// Whether its prefetch allows one more delivery.
    fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }

    /// Deliveries not yet acknowledged.
    pub fn unacked(&self) -> u32 {
        self.unacked
    }
}

#[derive(Debug)]
pub(super) struct Consumers<C> {
    /// Sorted by priority, highest first; registration order within one.
    list: Vec<Consumer<C>>,
    /// Index just past the last consumer served (round-robin position).
    cursor: usize,
    single_active: bool,
    /// With single active consumer: the one that receives messages.
    active: Option<ConsumerId>,
}

impl<C> Consumers<C> {
    pub fn new(single_active: bool) -> Consumers<C> {
        Consumers {
            list: Vec::new(),
            cursor: 0,
            single_active,
            active: None,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Consumer<C>> {
        self.list.get(index)
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut Consumer<C>> {
        self.list.get_mut(index)
    }

    pub fn find_mut(&mut self, id: ConsumerId) -> Option<&mut Consumer<C>> {
        self.list.iter_mut().find(|c| c.id == id)
    }

    pub fn has_exclusive(&self) -> bool {
        self.list.iter().any(|c| c.exclusive)
    }

    /// Whether `id` receives messages (always, unless single active
    /// consumer is on and another consumer is the active one).
    pub fn is_active(&self, id: ConsumerId) -> bool {
        !self.single_active || self.active == Some(id)
    }

    pub fn add(&mut self, consumer: Consumer<C>) {
        let pos = self
            .list
            .partition_point(|c| c.priority >= consumer.priority);
        if pos < self.cursor {
            self.cursor += 1;
        }
        if self.single_active && self.active.is_none() {
            self.active = Some(consumer.id);
        }
        self.list.insert(pos, consumer);
    }

    pub fn remove(&mut self, id: ConsumerId) -> Option<Consumer<C>> {
        let pos = self.list.iter().position(|c| c.id == id)?;
        let removed = self.list.remove(pos);
        if self.cursor > pos {
            self.cursor -= 1;
        }
        if self.active == Some(id) {
            // The highest priority, longest waiting consumer takes over.
            self.active = self.list.first().map(|c| c.id);
        }
        Some(removed)
    }

    pub fn take_all(&mut self) -> Vec<Consumer<C>> {
        self.cursor = 0;
        self.active = None;
        std::mem::take(&mut self.list)
    }

    /// The consumer the next message goes to, if any can take one now:
    /// its index, and the round-robin position to [`commit`](Self::commit)
    /// once it has been given a message. `ready` says whether a consumer's
    /// channel can take a delivery now (flow, congestion).
    pub fn pick(&self, ready: &mut impl FnMut(&Consumer<C>) -> bool) -> Option<(usize, usize)> {
        if self.single_active {
            let i = self.list.iter().position(|c| Some(c.id) == self.active)?;
            let c = &self.list[i];
            return (c.has_credit() && ready(c)).then_some((i, self.cursor));
        }
        let n = self.list.len();
        let mut start = 0;
        while start < n {
            let priority = self.list[start].priority;
            let end = start
                + self.list[start..]
                    .iter()
                    .take_while(|c| c.priority == priority)
                    .count();
            let len = end - start;
            let offset = if (start..end).contains(&self.cursor) {
                self.cursor - start
            } else {
                0
            };
            for k in 0..len {
                let i = start + (offset + k) % len;
                let c = &self.list[i];
                if c.has_credit() && ready(c) {
                    return Some((i, start + (i - start + 1) % len));
                }
            }
            start = end;
        }
        None
    }

    /// Move the round-robin position on, past the consumer just served.
    pub fn commit(&mut self, cursor: usize) {
        self.cursor = cursor;
    }

    pub fn iter(&self) -> impl Iterator<Item = &Consumer<C>> {
        self.list.iter()
    }
}
