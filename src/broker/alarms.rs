//! Resource alarms, as RabbitMQ's: memory and disk.
//!
//! The memory alarm compares what Warren holds in memory for messages —
//! ready messages of every queue, deliveries awaiting acks, transactions,
//! connections' output buffers, messages waiting to be written — with the
//! high watermark (a fraction of the memory available to the process, or a
//! size). The disk alarm compares the free space of the data directory's
//! file system with `disk_free_limit`, and is also on while the store
//! cannot write. Both are checked by [`watch_resources`] (memory every
//! 100 ms, disk every second), raised and cleared there.
//!
//! While any alarm is on, connections that publish are sent
//! `connection.blocked` with RabbitMQ's reason (`low on memory`, `low on
//! disk`) and are not read; consumers carry on, so memory can come down;
//! `connection.unblocked` follows when every alarm is clear.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Broker;
use super::events::{self, Events};
use crate::config::MemoryWatermark;

/// What an alarm is about, as RabbitMQ names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Memory,
    Disk,
}

impl Resource {
    /// The `resource` of RabbitMQ's health-check body.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        }
    }

    /// The reason `connection.blocked` carries.
    pub fn blocked_reason(self) -> &'static str {
        match self {
            Resource::Memory => "low on memory",
            Resource::Disk => "low on disk",
        }
    }
}

/// The alarms in effect.
#[derive(Debug)]
pub struct Alarms {
    active: Mutex<BTreeSet<Resource>>,
    /// Where alarms are announced (`alarm.set`, `alarm.cleared`).
    events: Arc<Events>,
    /// The reason connections are blocked for, while any alarm is on.
    reason: watch::Sender<Option<&'static str>>,
}

impl Alarms {
    pub fn new(events: Arc<Events>) -> Alarms {
        Alarms {
            active: Mutex::new(BTreeSet::new()),
            events,
            reason: watch::Sender::new(None),
        }
    }

    /// Raise (`on`) or clear an alarm; true if that changed anything.
    pub fn set(&self, resource: Resource, on: bool) -> bool {
        let mut active = self.active.lock();
        let changed = if on {
            active.insert(resource)
        } else {
            active.remove(&resource)
        };
        if changed {
            if on {
                tracing::warn!(
                    "{} resource limit alarm set. Publishers will be blocked until this alarm clears",
                    resource.as_str()
                );
            } else {
                tracing::info!("{} resource limit alarm cleared", resource.as_str());
            }
            let kind = if on { "alarm.set" } else { "alarm.cleared" };
            self.events.emit(kind, || {
                vec![
                    ("source", events::text(resource.as_str())),
                    ("node", events::text(self.events.node())),
                ]
            });
            let reason = active.iter().next().map(|r| r.blocked_reason());
            self.reason.send_replace(reason);
        }
        changed
    }

    pub fn active(&self) -> Vec<Resource> {
        self.active.lock().iter().copied().collect()
    }

    pub fn is_on(&self, resource: Resource) -> bool {
        self.active.lock().contains(&resource)
    }

    /// The blocked reason, `None` while every alarm is clear.
    pub fn subscribe(&self) -> watch::Receiver<Option<&'static str>> {
        self.reason.subscribe()
    }
}

/// The memory available to this process: its cgroup's limit if it has one,
/// else physical RAM (`None` if neither can be read).
pub fn available_memory() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match (cgroup, ram) {
        (Some(c), Some(r)) => Some(c.min(r)),
        (c, r) => c.or(r),
    }
}

/// The watermark in bytes.
pub fn memory_limit(watermark: MemoryWatermark) -> u64 {
    match watermark {
        MemoryWatermark::Bytes(b) => b,
        MemoryWatermark::Fraction(f) => {
            // As RabbitMQ without a readable total: assume 1 GiB.
            let total = available_memory().unwrap_or(1 << 30);
            (total as f64 * f) as u64
        }
    }
}

/// Free bytes on the file system holding `path`.
pub fn free_disk(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Check memory and disk until `shutdown`, raising and clearing alarms.
pub async fn watch_resources(
    broker: Arc<Broker>,
    data_dir: Option<PathBuf>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let used = broker.memory_used();
        broker
            .alarms
            .set(Resource::Memory, used > broker.memory_limit);
        broker
            .metrics
            .gauge("rabbitmq_alarms_memory_used_watermark")
            .set(f64::from(u8::from(broker.alarms.is_on(Resource::Memory))));
        if n.is_multiple_of(10) {
            // Without a data directory nothing is written: the working
            // directory's disk is still reported, but raises no alarm.
            let dir = data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let free = tokio::task::spawn_blocking(move || free_disk(&dir))
                .await
                .ok()
                .flatten();
            broker
                .disk_free
                .store(free.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            let low = data_dir.is_some() && free.is_some_and(|f| f < broker.disk_free_limit);
            // Failures no write reports: a stalled write, removed files.
            let store = broker.clone();
            let _ = tokio::task::spawn_blocking(move || store.store.check()).await;
            broker
                .alarms
                .set(Resource::Disk, low || broker.store.has_failed());
            if let Some(free) = free {
                broker
                    .metrics
                    .gauge("rabbitmq_disk_space_available_bytes")
                    .set(free as f64);
            }
            broker
                .metrics
                .gauge("rabbitmq_alarms_free_disk_space_watermark")
                .set(f64::from(u8::from(broker.alarms.is_on(Resource::Disk))));
        }
        n += 1;
    }
}
