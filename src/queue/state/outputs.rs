//! What the queue core hands back to its caller, and the time it is given.

use std::cell::Cell;
use std::sync::Arc;

use super::super::consumer::Consumer;
use super::super::queued::{QueuedMessage, Reason};
use crate::message::Message;
use crate::store::Stored;

/// The current time (ms since the epoch) for one operation: read from the
/// caller's clock at most once, and only if the operation looks at it —
/// most publishes and deliveries never do.
pub struct Now<'a> {
    clock: &'a dyn Fn() -> u64,
    value: Cell<u64>,
}

impl<'a> Now<'a> {
    pub fn new(clock: &'a dyn Fn() -> u64) -> Now<'a> {
        Now {
            clock,
            value: Cell::new(0),
        }
    }

    /// A reading already taken (`value`; 0 if none was).
    pub fn starting_at(value: u64, clock: &'a dyn Fn() -> u64) -> Now<'a> {
        Now {
            clock,
            value: Cell::new(value),
        }
    }

    pub fn get(&self) -> u64 {
        let v = self.value.get();
        if v != 0 {
            return v;
        }
        let v = (self.clock)().max(1);
        self.value.set(v);
        v
    }
}

/// Read up to `count` stored messages of `level` with sequence numbers from
/// `from` on, and hand them to [`QueueCore::paged_in`](super::QueueCore::paged_in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub level: u8,
    pub from: u64,
    pub count: usize,
}

/// A read of the store begun with the queue unlocked.
#[derive(Clone, Copy, Debug)]
pub struct PageTicket {
    /// Handed back with the result: a read from before the stored regions
    /// were dropped (purge, delete) is discarded.
    pub generation: u64,
    /// Only messages numbered below this were there when the read began;
    /// those that arrive meanwhile are left for the next read.
    pub before: u64,
}

/// Where a level's stored region started when a count of it in the
/// background began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredFrom {
    pub level: u8,
    pub from: u64,
    /// The level's messages ever kept in the store, then.
    pub pushed: u64,
}

/// What dispatching does next.
#[derive(Debug)]
pub enum Next {
    /// Hand `message` to the consumer at index `consumer`.
    Deliver {
        consumer: usize,
        message: QueuedMessage,
    },
    /// Read a page from the store, then dispatch again.
    Page(PageRequest),
    /// Nothing more can be delivered now.
    Idle,
}

/// What `basic.get` finds.
#[derive(Debug)]
pub enum Got {
    Message { message: QueuedMessage, left: u32 },
    Page(PageRequest),
    Empty,
}

/// Whether a queue takes a published message.
#[derive(Debug)]
pub enum Admit {
    /// It does, at this position; the caller stores it if it must, then
    /// [`QueueCore::enqueue`](super::QueueCore::enqueue)s it.
    Accepted(Admission),
    /// The queue is full and refuses it (`reject-publish`).
    Rejected,
    /// The queue has been deleted.
    Gone,
}

#[derive(Clone, Copy, Debug)]
pub struct Admission {
    pub seq: u64,
    pub level: u8,
    /// 0 for never.
    pub expires_at: u64,
}

/// A store record to change, in the order the queue decided it.
#[derive(Debug)]
pub enum StoreOp {
    /// The message left the queue for good. `marked`: it may have a
    /// delivery-state record too.
    Remove {
        level: u8,
        seq: u64,
        stored: Stored,
        marked: bool,
    },
    /// A stored message came back from a consumer: keep its delivery state
    /// (flagged redelivered, counted, delayed) across a restart.
    Mark {
        level: u8,
        seq: u64,
        state: crate::store::DeliveryState,
    },
}

/// What the caller must carry out after an operation.
#[derive(Debug, Default)]
pub struct Effects {
    pub store: Vec<StoreOp>,
    /// Messages that died, with why: to be dead-lettered (only collected if
    /// the queue has a dead-letter exchange).
    pub dead: Vec<(Arc<Message>, Reason)>,
}

/// Why a consumer was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumeRefused {
    Deleted,
    /// Another consumer has exclusive use, or this one wants it and the
    /// queue has consumers.
    Exclusive,
}

/// Why `queue.delete` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteRefused {
    NotEmpty,
    InUse,
}

/// What a purge took: messages held in memory, and stored ranges
/// `(level, from, to)` for the caller to remove.
#[derive(Debug)]
pub struct Purged {
    pub count: u32,
    pub messages: Vec<QueuedMessage>,
    pub ranges: Vec<(u8, u64, u64)>,
}

/// What a delete took.
#[derive(Debug)]
pub struct Deleted<C> {
    /// Ready messages dropped.
    pub count: u32,
    /// The ones that were in memory, to be freed by the caller.
    pub messages: Vec<QueuedMessage>,
    /// The consumers, whose clients are to be told.
    pub consumers: Vec<Consumer<C>>,
}

pub(super) enum Head {
    Message(QueuedMessage),
    Page(PageRequest),
    Empty,
}
