//! What every queue of a broker shares: the store, the memory budget that
//! decides when queues keep new messages only on disk, the clock, the
//! timer, and the owner that routes dead letters and deletes expired queues.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use super::args::DeadLetterTarget;
use super::expiry::now_ms;
use super::{Deadlines, Queue, Reason};
use crate::message::Message;
use crate::metrics::Churn;
use crate::store::Store;

/// What a queue needs from the broker around it. Called with no queue lock
/// held.
pub trait QueueOwner: Send + Sync + std::fmt::Debug {
    /// Dead-letter messages that died in `queue`, through `target`.
    fn dead_letter(
        &self,
        queue: &Queue,
        target: &DeadLetterTarget,
        dead: Vec<(Arc<Message>, Reason)>,
    );

    /// A queue's `x-expires` ran out while it was unused: delete it.
    fn expire(&self, queue: &Arc<Queue>);

    /// Whether `message` matches the schema `queue` is bound to; a refused
    /// one has been counted, announced and sent on to the rule's
    /// invalid-message exchange.
    fn admit_schema(
        &self,
        queue: &Queue,
        rule: &crate::schema::Rule,
        message: &Arc<Message>,
    ) -> bool;
}

#[derive(Debug)]
pub struct QueueEnv {
    pub store: Arc<Store>,
    pub budget: Arc<MemoryBudget>,
    pub deadlines: Arc<Deadlines>,
    pub clock: Clock,
    owner: OnceLock<Weak<dyn QueueOwner>>,
    /// Ready messages a queue keeps in memory before keeping new ones only
    /// in the store.
    pub window: usize,
    /// How many messages one read from the store brings back.
    pub page_batch: usize,
    /// A queue with consumers and more ready messages than this holds its
    /// publishers back (flow control) until it is down to half.
    pub flow_messages: usize,
    /// Queues created and deleted (and connections, channels) for
    /// operators.
    pub churn: Arc<Churn>,
}

/// How big queues may grow before they page or hold publishers back.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Bytes of ready message bodies all queues keep in memory.
    pub memory_budget_bytes: u64,
    /// Ready messages one queue keeps in memory.
    pub window: usize,
    /// See [`QueueEnv::flow_messages`]; 0 turns flow control off.
    pub flow_messages: usize,
}

impl QueueLimits {
    /// Nothing bounded: for unit tests of queue logic.
    pub fn unbounded() -> QueueLimits {
        QueueLimits {
            memory_budget_bytes: u64::MAX,
            window: usize::MAX,
            flow_messages: 0,
        }
    }
}

impl QueueEnv {
    pub fn new(store: Arc<Store>, limits: QueueLimits) -> Arc<QueueEnv> {
        QueueEnv::with_clock(store, limits, Clock::System)
    }

    /// Queues that read the time from `clock` (tests move a manual one).
    pub fn with_clock(store: Arc<Store>, limits: QueueLimits, clock: Clock) -> Arc<QueueEnv> {
        Arc::new(QueueEnv {
            store,
            budget: Arc::new(MemoryBudget::new(limits.memory_budget_bytes)),
            deadlines: Arc::default(),
            clock,
            owner: OnceLock::new(),
            window: limits.window.max(1),
            page_batch: (limits.window / 4).clamp(1, 1024),
            flow_messages: limits.flow_messages,
            churn: Arc::default(),
        })
    }

    /// In memory, unbounded: for unit tests of queue logic.
    pub fn for_tests() -> Arc<QueueEnv> {
        QueueEnv::new(Arc::new(Store::ephemeral()), QueueLimits::unbounded())
    }

    /// Set once, by the broker that owns the queues.
    pub fn set_owner(&self, owner: Weak<dyn QueueOwner>) {
        let _ = self.owner.set(owner);
    }

    pub fn owner(&self) -> Option<Arc<dyn QueueOwner>> {
        self.owner.get().and_then(Weak::upgrade)
    }

    /// Whether queues may keep messages only in the store.
    pub fn can_page(&self) -> bool {
        self.store.is_durable()
    }
}

/// Where queues read the time (ms since the Unix epoch).
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// Time moves only when a test moves it.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A reading already taken on the system clock (`system_ms`), if this
    /// is the system clock; else 0 (not read).
    pub fn known(&self, system_ms: u64) -> u64 {
        match self {
            Clock::System => system_ms,
            Clock::Manual(_) => 0,
        }
    }

    pub fn now(&self) -> u64 {
        match self {
            Clock::System => now_ms(),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// Bytes of ready message bodies held in memory, across all queues.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicI64,
    limit: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(u64::MAX)
    }
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            used: AtomicI64::new(0),
            limit,
        }
    }

    pub fn add(&self, bytes: u64) {
        self.used.fetch_add(bytes as i64, Ordering::Relaxed);
    }

    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes as i64, Ordering::Relaxed);
    }

    /// Account a queue whose memory went from `before` to `after` bytes.
    pub fn adjust(&self, before: u64, after: u64) {
        if after != before {
            self.used
                .fetch_add(after as i64 - before as i64, Ordering::Relaxed);
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }
}
