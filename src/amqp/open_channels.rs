//! A connection's open channels as the broker may inspect them: what they
//! hold in memory for messages (the output buffer, each channel's
//! deliveries awaiting acks and open transaction) and which of them have a
//! delivery unacknowledged past its consumer timeout.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::deliveries::Deliveries;
use super::outbox::Outbox;
use crate::broker::connections::{ConnectionProbe, LateAck};

#[derive(Debug)]
pub struct OpenChannels {
    outbox: Arc<Outbox>,
    /// The channels opened; closed ones hold nothing and drop out.
    channels: Mutex<Vec<Weak<Deliveries>>>,
}

impl OpenChannels {
    pub fn new(outbox: Arc<Outbox>) -> Arc<OpenChannels> {
        Arc::new(OpenChannels {
            outbox,
            channels: Mutex::new(Vec::new()),
        })
    }

    pub fn add(&self, channel: &Arc<Deliveries>) {
        let mut channels = self.channels.lock();
        channels.retain(|c| c.strong_count() > 0);
        channels.push(Arc::downgrade(channel));
    }

    fn live(&self) -> Vec<Arc<Deliveries>> {
        self.channels
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

impl ConnectionProbe for OpenChannels {
    fn held_bytes(&self) -> u64 {
        let channels: u64 = self.live().iter().map(|d| d.held_bytes()).sum();
        self.outbox.buffered() as u64 + channels
    }

    fn late_acks(&self, now_ms: u64) -> Vec<LateAck> {
        self.live()
            .iter()
            .filter_map(|d| {
                d.late(now_ms).map(|timeout_ms| LateAck {
                    channel: d.channel,
                    timeout_ms,
                })
            })
            .collect()
    }
}
