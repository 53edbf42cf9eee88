//! A consumer as its queue sees it, and the channel it delivers through.

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
        Consumer {
            id,
            tag,
            no_ack,
            exclusive,
            prefetch,
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
