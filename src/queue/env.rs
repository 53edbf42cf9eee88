//! What every queue of a broker shares: the store, and the memory budget
//! that decides when queues keep new messages only on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::Store;

#[derive(Debug)]
pub struct QueueEnv {
    pub store: Arc<Store>,
    pub budget: Arc<MemoryBudget>,
    /// Ready messages a queue keeps in memory before keeping new ones only
    /// in the store.
    pub window: usize,
    /// How many messages one read from the store brings back.
    pub page_batch: usize,
}

impl QueueEnv {
    pub fn new(store: Arc<Store>, budget_bytes: u64, window: usize) -> Arc<QueueEnv> {
        Arc::new(QueueEnv {
            store,
            budget: Arc::new(MemoryBudget::new(budget_bytes)),
            window: window.max(1),
            page_batch: (window / 4).clamp(1, 1024),
        })
    }

    /// In memory, unbounded: for unit tests of queue logic.
    pub fn for_tests() -> Arc<QueueEnv> {
        QueueEnv::new(Arc::new(Store::ephemeral()), u64::MAX, usize::MAX)
    }

    /// Whether queues may keep messages only in the store.
    pub fn can_page(&self) -> bool {
        self.store.is_durable()
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

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }
}
