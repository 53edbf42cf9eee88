//! A message as one queue holds it, and the words for what happens to it.

use std::sync::Arc;

use crate::message::Message;
use crate::store::{DeliveryState, Slot, Stored};

/// A message in one queue: ready, delayed, or delivered and not yet
/// acknowledged (then its consuming channel's ledger holds it).
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    /// Position in this queue; requeued messages go back in `seq` order.
    pub seq: u64,
    pub message: Arc<Message>,
    /// Priority level (0 in a queue without priorities).
    pub level: u8,
    pub redelivered: bool,
    /// A tombstone left in the ready list (see `ready`).
    pub(super) gone: bool,
    /// Where the store has it, if anywhere.
    pub stored: Stored,
    /// When it expires (ms since the epoch), 0 for never.
    pub expires_at: u64,
    /// Returns so far, and when it may be delivered again.
    pub delivery: DeliveryState,
}

impl QueuedMessage {
    /// A message that has never been delivered.
    pub fn new(
        seq: u64,
        level: u8,
        message: Arc<Message>,
        stored: Stored,
        expires_at: u64,
    ) -> Self {
        QueuedMessage {
            seq,
            message,
            level,
            redelivered: false,
            gone: false,
            stored,
            expires_at,
            delivery: DeliveryState::default(),
        }
    }

    /// Its address in the store, for the queue with store prefix `uid`.
    pub fn slot(&self, uid: u64) -> Slot {
        Slot {
            uid,
            level: self.level,
            seq: self.seq,
        }
    }
}

/// Why a message was dead-lettered, as `x-death` words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Why delivered messages come back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// The consumer rejected or nacked them: a failed delivery, counted in
    /// `x-delivery-count` and against the delivery limit.
    Failed,
    /// Their channel closed, or the consumer asked for redelivery
    /// (`basic.recover`).
    Returned,
}
