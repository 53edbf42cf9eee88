//! The broker's shared state: vhosts, users, live connections, alarms and
//! metrics. Protocol code (`amqp/`) and the admin API (`admin/`) both work
//! through it; it knows nothing of sockets or frames.

pub mod auth;
pub mod bindings;
pub mod vhost;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::ConnectionId;
use auth::{Permission, User, Users};
pub use vhost::VHost;

/// The RabbitMQ release whose behaviour Warren follows; reported as the
/// `version` server property and in the management API, where tools parse it.
pub const RABBITMQ_VERSION: &str = "4.3.0";

/// A live client connection, as operators and the shutdown path see it.
#[derive(Debug)]
pub struct ClientConnection {
    pub id: ConnectionId,
    pub peer: SocketAddr,
    pub user: String,
    pub vhost: String,
    pub connected_at: SystemTime,
    /// Cancelled to close the connection with 320 CONNECTION_FORCED.
    pub close: CancellationToken,
}

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub users: Users,
    pub metrics: Metrics,
    pub node_name: String,
    pub cluster_name: String,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    connections: Mutex<HashMap<ConnectionId, Arc<ClientConnection>>>,
    next_id: AtomicU64,
    /// Set while a resource alarm blocks publishers; carries the reason sent
    /// in `connection.blocked`.
    alarm: watch::Sender<Option<String>>,
}

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        let host = hostname();
        let node_name = format!("warren@{host}");
        let metrics = Metrics::new(&node_name, &node_name, RABBITMQ_VERSION);
        let broker = Broker {
            users: Users::default(),
            metrics,
            cluster_name: node_name.clone(),
            node_name,
            vhosts: RwLock::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            alarm: watch::Sender::new(None),
            config,
        };
        broker.seed_defaults();
        Arc::new(broker)
    }

    /// First boot: the default vhost and the default user with full
    /// permissions on it, tagged administrator (RabbitMQ's image contract).
    fn seed_defaults(&self) {
        let auth = &self.config.auth;
        self.add_vhost(&auth.default_vhost);
        self.users.put_user(User::new(
            &auth.default_user,
            &auth.default_pass,
            vec!["administrator".into()],
        ));
        self.users
            .set_permission(&auth.default_user, &auth.default_vhost, Permission::full());
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(VHost::new(name)))
            .clone()
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    /// A broker-wide unique id (connections, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register_connection(&self, conn: Arc<ClientConnection>) {
        self.connections.lock().insert(conn.id, conn);
        self.metrics.connections.increment(1.0);
        self.metrics.connections_opened.increment(1);
    }

    pub fn unregister_connection(&self, id: ConnectionId) {
        if self.connections.lock().remove(&id).is_some() {
            self.metrics.connections.decrement(1.0);
            self.metrics.connections_closed.increment(1);
        }
    }

    pub fn connections(&self) -> Vec<Arc<ClientConnection>> {
        self.connections.lock().values().cloned().collect()
    }

    /// Raise or clear a resource alarm. While raised, publishing
    /// connections are blocked and told so with `connection.blocked`.
    pub fn set_alarm(&self, reason: Option<String>) {
        self.alarm.send_replace(reason);
    }

    pub fn alarm(&self) -> Option<String> {
        self.alarm.borrow().clone()
    }

    pub fn subscribe_alarm(&self) -> watch::Receiver<Option<String>> {
        self.alarm.subscribe()
    }

    /// Whether `user` may log in from `peer` (RabbitMQ's `loopback_users`).
    pub fn allowed_from(&self, user: &str, peer: &SocketAddr) -> bool {
        peer.ip().is_loopback() || !self.config.auth.loopback_users.iter().any(|u| u == user)
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
