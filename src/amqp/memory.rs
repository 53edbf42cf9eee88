//! What a connection holds in memory for messages, for the memory alarm:
//! its output buffer, and each channel's deliveries awaiting acks and
//! open transaction.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::deliveries::Deliveries;
use super::outbox::Outbox;
use crate::broker::alarms::HeldMemory;

#[derive(Debug)]
pub struct ConnectionMemory {
    outbox: Arc<Outbox>,
    /// The channels opened; closed ones hold nothing and drop out.
    channels: Mutex<Vec<Weak<Deliveries>>>,
}

impl ConnectionMemory {
    pub fn new(outbox: Arc<Outbox>) -> Arc<ConnectionMemory> {
        Arc::new(ConnectionMemory {
            outbox,
            channels: Mutex::new(Vec::new()),
        })
    }

    pub fn add(&self, channel: &Arc<Deliveries>) {
        let mut channels = self.channels.lock();
        channels.retain(|c| c.strong_count() > 0);
        channels.push(Arc::downgrade(channel));
    }
}

impl HeldMemory for ConnectionMemory {
    fn held_bytes(&self) -> u64 {
        let channels: u64 = self
            .channels
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|d| d.held_bytes())
            .sum();
        self.outbox.buffered() as u64 + channels
    }
}
