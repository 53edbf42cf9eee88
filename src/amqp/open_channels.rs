//! A connection's open channels as the broker may inspect them: what they
//! hold in memory for messages (the output buffer, each channel's
//! deliveries awaiting acks and open transaction) and which of them have a
//! delivery unacknowledged past its consumer timeout.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::channel_status::CHANNEL_EVENTS;
use super::deliveries::Deliveries;
use super::outbox::Outbox;
use crate::broker::connections::{ChannelInfo, ConnectionProbe, LateAck};

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

    fn channels(&self) -> Vec<ChannelInfo> {
        let mut channels: Vec<ChannelInfo> = self.live().iter().map(|d| info(d)).collect();
        channels.sort_by_key(|c| c.number);
        channels
    }

    fn sample(&self, now: Instant) {
        self.outbox.traffic.sample(now);
        for d in self.live() {
            d.status.events.sample(now);
        }
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

fn info(d: &Deliveries) -> ChannelInfo {
    let status = &d.status;
    let (consumer_count, messages_unacknowledged) = {
        let ledger = d.ledger.lock();
        (ledger.consumers.len(), ledger.len())
    };
    let tracker = status.confirms.get().and_then(Weak::upgrade);
    let (counts, rates) = status.events.snapshot();
    ChannelInfo {
        number: d.channel,
        prefetch_count: status.prefetch_count.load(Ordering::Relaxed),
        global_prefetch_count: d.global_prefetch(),
        confirm: tracker.is_some(),
        transactional: status.transactional.load(Ordering::Relaxed),
        consumer_count,
        messages_unacknowledged,
        messages_unconfirmed: tracker.map_or(0, |t| t.unconfirmed()),
        messages_uncommitted: status.uncommitted.load(Ordering::Relaxed),
        acks_uncommitted: status.acks_uncommitted.load(Ordering::Relaxed),
        flow_stopped: !d.flow_active(),
        stats: CHANNEL_EVENTS
            .iter()
            .zip(counts.iter().zip(rates.iter()))
            .map(|(name, (n, r))| (*name, *n, *r))
            .collect(),
    }
}
