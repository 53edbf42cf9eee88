//! Operators' switches on a queue (Warren's; RabbitMQ declined them):
//! pausing and resuming its deliveries, kept across restarts.

use super::VHost;
use super::vhost::Durability;
use crate::error::{AmqpError, AmqpResult};

impl VHost {
    /// Pause (or resume) deliveries from queue `name`. The state is kept in
    /// the queue's record, so a durable queue stays paused across
    /// restarts. Streams have no deliveries to pause (406).
    pub fn set_queue_paused(&self, name: &str, paused: bool) -> AmqpResult<Durability> {
        let q = self.find_queue(name).ok_or_else(|| {
            AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
        })?;
        if q.stream.is_some() {
            return Err(AmqpError::precondition_failed(format!(
                "stream queue '{name}' in vhost '{}' cannot be paused",
                self.name
            )));
        }
        // The record first: a paused queue that forgets it on restart
        // would deliver what the operator held back.
        let stored = self.store_queue_state(&q.config, paused)?;
        q.set_paused(paused);
        tracing::info!(queue = name, vhost = %self.name, "deliveries {}", if paused { "paused" } else { "resumed" });
        Ok(Durability::from(stored))
    }
}
