//! Churn: connections, channels and queues coming and going, as
//! RabbitMQ's overview (`churn_rates`) and its Prometheus churn families
//! count them.

use super::rates::EventCounts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ChurnEvent {
    ConnectionCreated,
    ConnectionClosed,
    ChannelCreated,
    ChannelClosed,
    QueueCreated,
    QueueDeclared,
    QueueDeleted,
}

/// The management API's names for the counts, in [`ChurnEvent`] order.
pub const CHURN_EVENTS: [&str; 7] = [
    "connection_created",
    "connection_closed",
    "channel_created",
    "channel_closed",
    "queue_created",
    "queue_declared",
    "queue_deleted",
];

/// The Prometheus counter each count is exported as, in [`ChurnEvent`]
/// order.
pub(super) const CHURN_FAMILIES: [&str; 7] = [
    "rabbitmq_connections_opened_total",
    "rabbitmq_connections_closed_total",
    "rabbitmq_channels_opened_total",
    "rabbitmq_channels_closed_total",
    "rabbitmq_queues_created_total",
    "rabbitmq_queues_declared_total",
    "rabbitmq_queues_deleted_total",
];

/// The broker's churn counts, shared by whoever creates and deletes.
#[derive(Debug, Default)]
pub struct Churn {
    pub counts: EventCounts<7>,
}

impl Churn {
    #[inline]
    pub fn count(&self, event: ChurnEvent) {
        self.counts.add(event as usize, 1);
    }
}
