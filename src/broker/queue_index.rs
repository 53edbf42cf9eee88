//! A vhost's queues by name: a hash map for the lookups on the message
//! path, and the names in order for operators' listings, which page
//! through them without touching (or locking) the queues they skip.
//!
//! Both change together, only here, so they never disagree; creating and
//! deleting a queue is also where its churn is counted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use amq_protocol::types::ShortString;

use crate::metrics::{Churn, ChurnEvent};
use crate::queue::Queue;

#[derive(Debug)]
pub struct QueueIndex {
    by_name: HashMap<ShortString, Arc<Queue>>,
    names: BTreeSet<ShortString>,
    churn: Arc<Churn>,
}

impl QueueIndex {
    pub fn new(churn: Arc<Churn>) -> QueueIndex {
        QueueIndex {
            by_name: HashMap::new(),
            names: BTreeSet::new(),
            churn,
        }
    }

    #[inline]
    pub fn get(&self, name: &str) -> Option<&Arc<Queue>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Queue>> {
        self.by_name.values()
    }

    /// A queue declared now.
    pub fn create(&mut self, queue: Arc<Queue>) {
        self.churn.count(ChurnEvent::QueueCreated);
        self.restore(queue);
    }

    /// A queue that existed before this boot.
    pub fn restore(&mut self, queue: Arc<Queue>) {
        self.names.insert(queue.config.name.clone());
        self.by_name.insert(queue.config.name.clone(), queue);
    }

    /// Remove `queue` if it is still the one under its name.
    pub fn remove(&mut self, queue: &Arc<Queue>) -> bool {
        let current = self.by_name.get(queue.name());
        if !current.is_some_and(|q| Arc::ptr_eq(q, queue)) {
            return false;
        }
        self.by_name.remove(queue.name());
        self.names.remove(queue.name());
        self.churn.count(ChurnEvent::QueueDeleted);
        true
    }

    /// The queues in name order.
    pub fn sorted(&self) -> Vec<Arc<Queue>> {
        self.names
            .iter()
            .filter_map(|n| self.by_name.get(n).cloned())
            .collect()
    }
}
