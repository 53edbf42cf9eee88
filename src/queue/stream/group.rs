//! Consumer groups: of the consumers of a stream that name the same
//! `x-stream-consumer-group`, one at a time — the active one — is given
//! messages; the others wait. The group's position is tracked on the
//! broker (under the group's name, written with the group commit), so
//! whichever member becomes active next starts at the first offset the
//! previous one had not acknowledged: at-least-once, with no gap.
//!
//! On a partition of a super stream the active member is the one at
//! position `partition index mod members` in the order they joined — the
//! rule RabbitMQ's stream protocol uses — so consumers that each subscribe
//! to every partition of a super stream share the partitions evenly, and a
//! member that leaves (a cancel, a closed channel or connection) has its
//! partitions taken over at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{StreamConsumer, StreamQueue};

/// The key a group's position is tracked under, apart from consumer tags
/// (a byte no AMQP client puts at the start of a tag).
pub(super) fn tracking_key(group: &str) -> String {
    format!("\u{1}group:{group}")
}

impl StreamQueue {
    /// This stream is partition `index` of a super stream.
    pub fn set_partition(&self, index: u32) {
        if self.partition.swap(index, Ordering::AcqRel) == index {
            return;
        }
        let mut groups: Vec<String> = self
            .consumers
            .lock()
            .iter()
            .filter_map(|c| c.group.clone())
            .collect();
        groups.sort();
        groups.dedup();
        for g in groups {
            self.rebalance(&g);
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition.load(Ordering::Acquire)
    }

    /// Choose the group's active member after one joined or left; a member
    /// that becomes active resumes from the group's tracked position.
    pub(super) fn rebalance(&self, group: &str) {
        let consumers = self.consumers.lock();
        let members: Vec<&Arc<StreamConsumer>> = consumers
            .iter()
            .filter(|c| c.group.as_deref() == Some(group))
            .collect();
        if members.is_empty() {
            return;
        }
        let chosen = self.partition() as usize % members.len();
        for (i, c) in members.iter().enumerate() {
            let active = i == chosen;
            if c.active.swap(active, Ordering::AcqRel) == active || !active {
                continue;
            }
            if let Some(at) = self.log.tracked(&tracking_key(group)) {
                c.state.lock().cursor.seek(at);
            }
            c.wake.notify_one();
        }
    }
}
