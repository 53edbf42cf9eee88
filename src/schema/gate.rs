//! The schema rule of one queue or exchange, read on every publish:
//! one atomic load when there is none, a shared read lock when there is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use super::Rule;

#[derive(Debug, Default)]
pub struct Gate {
    rule: RwLock<Option<Arc<Rule>>>,
    set: AtomicBool,
}

impl Gate {
    pub fn new(rule: Option<Arc<Rule>>) -> Gate {
        Gate {
            set: AtomicBool::new(rule.is_some()),
            rule: RwLock::new(rule),
        }
    }

    pub fn rule(&self) -> Option<Arc<Rule>> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.rule.read().clone()
    }

    pub fn replace(&self, rule: Option<Arc<Rule>>) {
        let mut slot = self.rule.write();
        self.set.store(rule.is_some(), Ordering::Release);
        *slot = rule;
    }
}
