//! Live client connections as the broker sees them, and the consumer
//! timeout that watches their unacknowledged deliveries.
//!
//! The broker keeps a [`ClientConnection`] per open AMQP connection for
//! operators (the management API lists them, closes them) and for the
//! checks that span connections: what they hold in memory (the memory
//! alarm) and deliveries left unacknowledged past their consumer timeout.
//! It reaches into a connection only through its [`ConnectionProbe`], so
//! the broker knows nothing of channels or frames.
//!
//! The consumer timeout (`limits.consumer_timeout_ms`, the
//! `x-consumer-timeout` queue and consumer arguments, the
//! `consumer-timeout` policy key) is checked once a second by
//! [`watch_ack_deadlines`], as RabbitMQ checks on its channel tick; the
//! connection then closes each late channel with 406, which requeues what
//! it held.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use amq_protocol::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::metrics::rates::EventCounts;
use crate::queue::ConnectionId;

/// Bytes and socket operations of one connection, with rates: indexed by
/// [`RECV_OCT`], [`RECV_CNT`], [`SEND_OCT`], [`SEND_CNT`].
pub type Traffic = EventCounts<4>;
pub const RECV_OCT: usize = 0;
pub const RECV_CNT: usize = 1;
pub const SEND_OCT: usize = 2;
pub const SEND_CNT: usize = 3;

/// What was agreed when the connection opened, for operators.
#[derive(Clone, Debug)]
pub struct ConnectionDetails {
    /// RabbitMQ's connection name: `"peer:port -> local:port"`.
    pub name: String,
    pub local: SocketAddr,
    pub client_properties: FieldTable,
    pub auth_mechanism: String,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// TLS protocol and cipher suite, over AMQPS.
    pub tls: Option<(String, String)>,
}

impl ConnectionDetails {
    pub fn name_of(peer: SocketAddr, local: SocketAddr) -> String {
        format!(
            "{}:{} -> {}:{}",
            peer.ip().to_canonical(),
            peer.port(),
            local.ip().to_canonical(),
            local.port()
        )
    }
}

/// One channel as operators see it.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    pub number: u16,
    /// `basic.qos` prefetch for new consumers (per consumer).
    pub prefetch_count: u16,
    /// `basic.qos` with global=true.
    pub global_prefetch_count: u32,
    pub confirm: bool,
    pub transactional: bool,
    pub consumer_count: usize,
    pub messages_unacknowledged: usize,
    pub messages_unconfirmed: u64,
    pub messages_uncommitted: u64,
    pub acks_uncommitted: u64,
    /// `channel.flow` stopped deliveries to it.
    pub flow_stopped: bool,
    /// Counts and rates by RabbitMQ's `message_stats` names.
    pub stats: Vec<(&'static str, u64, f64)>,
}

/// A live client connection, as operators and the shutdown path see it.
#[derive(Debug)]
pub struct ClientConnection {
    pub id: ConnectionId,
    pub peer: SocketAddr,
    pub user: String,
    pub vhost: String,
    pub connected_at: SystemTime,
    /// Over AMQPS.
    pub tls: bool,
    /// Cancelled to close the connection with 320 CONNECTION_FORCED.
    pub close: CancellationToken,
    /// Why, when the broker closes it (sent as the reply text).
    pub close_reason: Mutex<Option<String>>,
    /// Flow control is holding it back (RabbitMQ's connection state
    /// `flow`).
    pub flow: AtomicBool,
    /// What its channels hold.
    pub probe: Arc<dyn ConnectionProbe>,
    /// Channels whose deliveries timed out, for the connection to close.
    pub late_acks: LateAcks,
    pub details: ConnectionDetails,
    pub traffic: Arc<Traffic>,
}

impl ClientConnection {
    /// Close the connection with 320 CONNECTION_FORCED and `reason`.
    pub fn force_close(&self, reason: &str) {
        *self.close_reason.lock() = Some(reason.to_string());
        self.close.cancel();
    }
}

/// What the broker may ask of a live connection's channels.
pub trait ConnectionProbe: Send + Sync + std::fmt::Debug {
    /// Memory held for messages: the output buffer, the channels'
    /// unacknowledged deliveries and open transactions.
    fn held_bytes(&self) -> u64;
    /// Channels with a delivery unacknowledged past its deadline
    /// (`now_ms` on the [`AckClock`]).
    fn late_acks(&self, now_ms: u64) -> Vec<LateAck>;
    /// The open channels, for operators.
    fn channels(&self) -> Vec<ChannelInfo>;
    /// The stats sampler's look at the channels' counts.
    fn sample(&self, now: Instant);
}

/// A channel with a delivery unacknowledged past its consumer timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateAck {
    pub channel: u16,
    /// The timeout that applied, for the error text.
    pub timeout_ms: u64,
}

impl LateAck {
    /// RabbitMQ's text for the channel's 406.
    pub fn reason(&self) -> String {
        format!(
            "delivery acknowledgement on channel {} timed out. Timeout value used: {} ms. \
             This timeout value can be configured, see consumers doc guide to learn more",
            self.channel, self.timeout_ms
        )
    }
}

/// Late channels handed from the checker to the connection's task.
#[derive(Debug, Default)]
pub struct LateAcks {
    due: Mutex<Vec<LateAck>>,
    notify: Notify,
}

impl LateAcks {
    fn push(&self, late: Vec<LateAck>) {
        self.due.lock().extend(late);
        self.notify.notify_one();
    }

    /// Wait until some channel is late; the ones found since the last call.
    pub async fn next(&self) -> Vec<LateAck> {
        loop {
            let due = std::mem::take(&mut *self.due.lock());
            if !due.is_empty() {
                return due;
            }
            self.notify.notified().await;
        }
    }
}

/// A millisecond clock for delivery deadlines, advanced by
/// [`watch_ack_deadlines`] so a delivery costs an atomic load rather than a
/// clock read. Reads 0 until the checker runs.
#[derive(Debug)]
pub struct AckClock {
    start: Instant,
    now_ms: AtomicU64,
}

impl Default for AckClock {
    fn default() -> Self {
        AckClock {
            start: Instant::now(),
            now_ms: AtomicU64::new(0),
        }
    }
}

impl AckClock {
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    fn advance(&self) -> u64 {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.now_ms.store(now, Ordering::Relaxed);
        now
    }

    /// The deadline of a delivery made now with `timeout_ms`.
    pub fn deadline(&self, timeout_ms: u64) -> u64 {
        self.now_ms().saturating_add(timeout_ms)
    }
}

/// How often deadlines are checked: a timeout fires within this much of
/// its value.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the clock advances.
const CLOCK_TICK: Duration = Duration::from_millis(100);

/// Advance the [`AckClock`] and hand every connection its late channels,
/// until `shutdown`.
pub async fn watch_ack_deadlines(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CLOCK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = (CHECK_EVERY.as_millis() / CLOCK_TICK.as_millis()) as u64;
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = broker.ack_clock.advance();
        n += 1;
        if !n.is_multiple_of(every) {
            continue;
        }
        for conn in broker.connections() {
            let late = conn.probe.late_acks(now);
            if !late.is_empty() {
                conn.late_acks.push(late);
            }
        }
    }
}
