//! How each shovel and federation link is doing, for the management API
//! (`/api/shovels`, `/api/federation-links`), Prometheus and the event
//! exchange. The links (the `links` module) write here; operators read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

/// Which link.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKey {
    Shovel {
        vhost: String,
        name: String,
    },
    /// A federated exchange's link to one upstream.
    Exchange {
        vhost: String,
        exchange: String,
        upstream: String,
    },
    /// A federated queue's link to one upstream.
    Queue {
        vhost: String,
        queue: String,
        upstream: String,
    },
}

impl LinkKey {
    pub fn vhost(&self) -> &str {
        match self {
            LinkKey::Shovel { vhost, .. }
            | LinkKey::Exchange { vhost, .. }
            | LinkKey::Queue { vhost, .. } => vhost,
        }
    }

    pub fn is_shovel(&self) -> bool {
        matches!(self, LinkKey::Shovel { .. })
    }
}

/// A link's state, in RabbitMQ's words: shovels are `starting`, `running`
/// or `terminated`; federation links `starting`, `running` or `error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub state: &'static str,
    /// Why it is not running.
    pub reason: Option<String>,
    pub since: SystemTime,
}

/// One link's status and counters.
#[derive(Debug)]
pub struct LinkStatus {
    pub key: LinkKey,
    state: Mutex<LinkState>,
    /// The URIs it is connected to (or trying), without passwords:
    /// (source or upstream, destination).
    uris: Mutex<(String, String)>,
    /// The upstream's exchange or queue (federation).
    pub upstream_name: String,
    /// Messages moved.
    pub forwarded: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
}

impl LinkStatus {
    pub fn state(&self) -> LinkState {
        self.state.lock().clone()
    }

    pub fn uris(&self) -> (String, String) {
        self.uris.lock().clone()
    }

    pub fn set_uris(&self, from: String, to: String) {
        *self.uris.lock() = (from, to);
    }

    /// Enter `state`; returns whether it changed.
    pub fn set_state(&self, state: &'static str, reason: Option<String>) -> bool {
        let mut s = self.state.lock();
        if s.state == state && s.reason == reason {
            return false;
        }
        *s = LinkState {
            state,
            reason,
            since: SystemTime::now(),
        };
        true
    }

    pub fn count_forwarded(&self, n: u64) {
        self.forwarded.fetch_add(n, Ordering::Relaxed);
    }
}

/// Every link's status, and restart requests.
#[derive(Debug, Default)]
pub struct LinkRegistry {
    links: RwLock<BTreeMap<LinkKey, Arc<LinkStatus>>>,
    restarts: Mutex<BTreeSet<LinkKey>>,
    /// Someone asked for a restart.
    pub restart_requested: tokio::sync::Notify,
}

impl LinkRegistry {
    /// Register a link starting (or find the one already there).
    pub fn register(&self, key: LinkKey, upstream_name: String) -> Arc<LinkStatus> {
        self.links
            .write()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(LinkStatus {
                    key,
                    state: Mutex::new(LinkState {
                        state: "starting",
                        reason: None,
                        since: SystemTime::now(),
                    }),
                    uris: Mutex::new(Default::default()),
                    upstream_name,
                    forwarded: AtomicU64::new(0),
                    reconnects: AtomicU64::new(0),
                })
            })
            .clone()
    }

    pub fn remove(&self, key: &LinkKey) {
        self.links.write().remove(key);
    }

    pub fn all(&self) -> Vec<Arc<LinkStatus>> {
        self.links.read().values().cloned().collect()
    }

    pub fn get(&self, key: &LinkKey) -> Option<Arc<LinkStatus>> {
        self.links.read().get(key).cloned()
    }

    /// Ask for a link to be restarted; false if there is no such link.
    pub fn request_restart(&self, key: &LinkKey) -> bool {
        if !self.links.read().contains_key(key) {
            return false;
        }
        self.restarts.lock().insert(key.clone());
        self.restart_requested.notify_one();
        true
    }

    /// The restarts asked for since the last call.
    pub fn take_restarts(&self) -> BTreeSet<LinkKey> {
        std::mem::take(&mut *self.restarts.lock())
    }
}
