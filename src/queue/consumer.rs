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

use super::{Queue, QueuedMessage};

/// Broker-wide unique consumer identity (tags are only unique per channel).
pub type ConsumerId = u64;

/// The channel side of a consumer: where a queue hands its messages.
///
/// Implemented by the AMQP channel. Every method is called with the queue's
/// lock held, so implementations must not call back into a queue.
pub trait DeliveryTarget: Send + Sync + std::fmt::Debug {
    /// Whether the channel can take another delivery for `consumer` now. A
    /// channel that says no because its connection is congested remembers
    /// `queue` and calls [`Queue::dispatch`] once it has drained.
    fn ready(&self, queue: &Arc<Queue>, consumer: &Consumer) -> bool;

    /// Hand over one message for `consumer`.
    fn deliver(&self, queue: &Arc<Queue>, consumer: &Consumer, message: QueuedMessage);

    /// The queue is gone; the consumer no longer exists and its client must
    /// be told (`basic.cancel` from the server).
    fn cancelled(&self, queue: &Arc<Queue>, consumer: &Consumer);
}

#[derive(Debug)]
pub struct Consumer {
    pub id: ConsumerId,
    pub tag: ShortString,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos` with global=false); 0 is unlimited.
    pub prefetch: u16,
    /// `x-priority`: higher goes first.
    pub priority: i32,
    pub arguments: FieldTable,
    pub channel: Arc<dyn DeliveryTarget>,
    /// Deliveries to this consumer not yet acknowledged.
    pub(super) unacked: u32,
}

impl Consumer {
    pub fn new(
        id: ConsumerId,
        tag: ShortString,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        arguments: FieldTable,
        channel: Arc<dyn DeliveryTarget>,
    ) -> Consumer {
        let priority = arguments
            .inner()
            .get("x-priority")
            .and_then(crate::fields::int_value)
            .map_or(0, |p| p.clamp(i32::MIN.into(), i32::MAX.into()) as i32);
        Consumer {
            id,
            tag,
            no_ack,
            exclusive,
            prefetch,
            priority,
            arguments,
            channel,
            unacked: 0,
        }
    }

    pub(super) fn can_take(&self, queue: &Arc<Queue>) -> bool {
        let within_prefetch =
            self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch);
        within_prefetch && self.channel.ready(queue, self)
    }
}

#[derive(Debug, Default)]
pub(super) struct Consumers {
    /// Sorted by priority, highest first; registration order within one.
    list: Vec<Consumer>,
    /// Index just past the last consumer served (round-robin position).
    cursor: usize,
    single_active: bool,
    /// With single active consumer: the one that receives messages.
    active: Option<ConsumerId>,
}

impl Consumers {
    pub fn new(single_active: bool) -> Consumers {
        Consumers {
            single_active,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut Consumer> {
        self.list.get_mut(index)
    }

    pub fn find_mut(&mut self, id: ConsumerId) -> Option<&mut Consumer> {
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

    pub fn add(&mut self, consumer: Consumer) {
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

    pub fn remove(&mut self, id: ConsumerId) -> Option<Consumer> {
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

    pub fn take_all(&mut self) -> Vec<Consumer> {
        self.cursor = 0;
        self.active = None;
        std::mem::take(&mut self.list)
    }

    /// The consumer the next message goes to, if any can take one now.
    pub fn pick(&mut self, queue: &Arc<Queue>) -> Option<usize> {
        if self.single_active {
            let i = self.list.iter().position(|c| Some(c.id) == self.active)?;
            return self.list[i].can_take(queue).then_some(i);
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
                if self.list[i].can_take(queue) {
                    self.cursor = start + (i - start + 1) % len;
                    return Some(i);
                }
            }
            start = end;
        }
        None
    }
}
