//! What operators see of a channel while its connection's task owns it:
//! the modes the client switched on and the channel's message counts.
//!
//! The channel itself lives on its connection's reader task; this part is
//! shared (inside [`Deliveries`](super::deliveries::Deliveries)) so the
//! management API can read it from elsewhere. Everything is a relaxed
//! atomic written by the channel's own paths.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64};
use std::sync::{OnceLock, Weak};

use super::confirms::ConfirmTracker;

use crate::metrics::rates::EventCounts;

/// What a channel counts, in the order of [`CHANNEL_EVENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ChannelEvent {
    Publish,
    Confirm,
    ReturnUnroutable,
    DropUnroutable,
    Deliver,
    DeliverNoAck,
    Get,
    GetNoAck,
    GetEmpty,
    Ack,
    Redeliver,
}

/// RabbitMQ's `message_stats` names for the counts.
pub const CHANNEL_EVENTS: [&str; 11] = [
    "publish",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "ack",
    "redeliver",
];

#[derive(Debug, Default)]
pub struct ChannelStatus {
    pub events: EventCounts<11>,
    /// `basic.qos` prefetch (per consumer) for new consumers.
    pub prefetch_count: AtomicU16,
    /// Set by `confirm.select` (weak: the tracker counts into this
    /// status, and the channel owns it).
    pub confirms: OnceLock<Weak<ConfirmTracker>>,
    pub transactional: AtomicBool,
    /// Publishes and acks held by the open transaction.
    pub uncommitted: AtomicU64,
    pub acks_uncommitted: AtomicU64,
}

impl ChannelStatus {
    /// The transaction was committed or rolled back.
    pub fn clear_uncommitted(&self) {
        self.uncommitted
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.acks_uncommitted
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    #[inline]
    pub fn count(&self, event: ChannelEvent, n: u64) {
        self.events.add(event as usize, n);
    }
}
