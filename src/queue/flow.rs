//! Flow control: a queue whose consumers cannot keep up holds its
//! publishers back, as RabbitMQ's credit flow does.
//!
//! A queue with consumers enters flow once it holds more than
//! `flow_messages` ready messages, and leaves it once it is down to half (or
//! has no consumers left: then it is a buffer, and long queues page to
//! disk). While it is in flow, every connection that publishes to it stops
//! reading its socket after the read batch in hand, so TCP pushes back on
//! the publisher and the broker's time goes to delivering; the connection
//! waits on [`Queue::flow_released`]. Queues without consumers never enter
//! flow: a burst into them still queues.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Queue, Shell};

impl Queue {
    /// After a publish: enter flow if the backlog is past the limit.
    pub(super) fn enter_flow(&self, st: &Shell) -> bool {
        let limit = self.env.flow_messages;
        if limit == 0 {
            return false;
        }
        if self.in_flow.load(Ordering::Relaxed) {
            return true;
        }
        let over = st.core.consumer_count() > 0 && st.core.len() > limit;
        if over {
            self.in_flow.store(true, Ordering::Release);
        }
        over
    }

    /// Under the lock, after any change: leave flow once the backlog is
    /// down to half, or nobody consumes.
    pub(super) fn release_flow(&self, st: &Shell) {
        if !self.in_flow.load(Ordering::Relaxed) {
            return;
        }
        let low = self.env.flow_messages / 2;
        if st.core.consumer_count() == 0 || st.core.len() <= low || st.core.is_deleted() {
            self.in_flow.store(false, Ordering::Release);
            self.flow_released.notify_waiters();
        }
    }

    /// Whether the queue is holding its publishers back now.
    pub fn is_in_flow(&self) -> bool {
        self.in_flow.load(Ordering::Acquire)
    }

    /// Resolves once the queue has left flow.
    pub async fn flow_released(self: Arc<Self>) {
        loop {
            let released = self.flow_released.notified();
            if !self.is_in_flow() {
                return;
            }
            released.await;
        }
    }
}
