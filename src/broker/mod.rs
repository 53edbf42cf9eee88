//! The broker's shared state: vhosts, users, live connections, alarms,
//! metrics and the store. Protocol code (`amqp/`) and the admin API
//! (`admin/`) both work through it; it knows nothing of sockets or frames.
//!
//! At boot the broker either seeds a fresh data directory (default user and
//! vhost, as RabbitMQ's image does on first boot) or restores what the store
//! holds; at a clean shutdown it records queue lengths so the next boot
//! needs no counting.

pub mod auth;
pub mod bindings;
mod cascade;
pub mod dead_letter;
pub mod enqueue;
mod equivalence;
pub mod policies;
mod records;
mod restore;
mod topology;
pub mod vhost;
mod vhost_policies;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::queue::Reason;
use crate::queue::args::DeadLetterTarget;
use crate::queue::{ConnectionId, Queue, QueueEnv, QueueOwner};
use crate::store::{PermissionRecord, Store, StoreResult, UserRecord};
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
    pub store: Arc<Store>,
    queue_env: Arc<QueueEnv>,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    connections: Mutex<HashMap<ConnectionId, Arc<ClientConnection>>>,
    next_id: AtomicU64,
    /// Set while a resource alarm blocks publishers; carries the reason sent
    /// in `connection.blocked`.
    alarm: watch::Sender<Option<String>>,
}

impl Broker {
    /// A broker over `store`: seeded with the configured defaults if the
    /// store is new, restored from it otherwise.
    pub fn open(config: Config, store: Store) -> StoreResult<Arc<Broker>> {
        let host = hostname();
        let node_name = format!("warren@{host}");
        let metrics = Metrics::new(&node_name, &node_name, RABBITMQ_VERSION);
        let store = Arc::new(store);
        let queue_env = QueueEnv::new(
            store.clone(),
            config.storage.memory_budget_bytes,
            config.storage.queue_memory_messages,
        );
        let broker = Arc::new(Broker {
            users: Users::default(),
            metrics,
            cluster_name: node_name.clone(),
            node_name,
            store,
            queue_env,
            vhosts: RwLock::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            alarm: watch::Sender::new(None),
            config,
        });
        let owner: Arc<dyn QueueOwner> = broker.clone();
        broker.queue_env.set_owner(Arc::downgrade(&owner));
        if let Err(e) = broker.queue_env.deadlines.start() {
            // Without it nothing expires; the broker still serves.
            tracing::error!("cannot start the timer thread: {e}");
        }
        if broker.store.is_fresh() || !broker.store.is_durable() {
            broker.seed_defaults()?;
        } else {
            broker.restore()?;
        }
        // As RabbitMQ's disk alarm: once the store cannot write, publishers
        // are blocked (those in flight are nacked).
        let weak = Arc::downgrade(&broker);
        broker.store.on_failure(Box::new(move || {
            if let Some(b) = weak.upgrade() {
                tracing::error!("the store failed: raising the disk alarm, publishers are blocked");
                b.set_alarm(Some("disk".into()));
            }
        }));
        Ok(broker)
    }

    /// An in-memory broker for unit tests.
    pub fn ephemeral(config: Config) -> Arc<Broker> {
        match Broker::open(config, Store::ephemeral()) {
            Ok(b) => b,
            Err(e) => unreachable!("an ephemeral store cannot fail: {e}"),
        }
    }

    /// First boot: the default vhost and the default user with full
    /// permissions on it, tagged administrator (RabbitMQ's image contract).
    fn seed_defaults(&self) -> StoreResult<()> {
        let auth = &self.config.auth;
        self.add_vhost(&auth.default_vhost);
        let user = User::new(
            &auth.default_user,
            &auth.default_pass,
            vec!["administrator".into()],
        );
        self.store.put_vhost(&auth.default_vhost)?;
        self.store.put_user(&UserRecord {
            name: user.name.clone(),
            password_hash: user.password_hash.clone(),
            tags: user.tags.clone(),
        })?;
        self.store.put_permission(&PermissionRecord {
            user: user.name.clone(),
            vhost: auth.default_vhost.clone(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })?;
        self.users.put_user(user);
        self.users
            .set_permission(&auth.default_user, &auth.default_vhost, Permission::full());
        self.store.flush_now()
    }

    /// Later boots: everything comes from the store.
    fn restore(&self) -> StoreResult<()> {
        let defs = self.store.load_definitions()?;
        let counts = self.store.take_counts()?;
        for u in &defs.users {
            self.users.put_user(User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
            });
        }
        for p in &defs.permissions {
            match Permission::new(&p.configure, &p.write, &p.read) {
                Ok(perm) => self.users.set_permission(&p.user, &p.vhost, perm),
                Err(e) => {
                    tracing::warn!(user = %p.user, vhost = %p.vhost, "skipping a stored permission: {e}")
                }
            }
        }
        let mut uncounted: Vec<Arc<Queue>> = Vec::new();
        for name in &defs.vhosts {
            let vhost = self.add_vhost(name);
            uncounted.extend(vhost.restore(&defs, &counts));
        }
        tracing::info!(
            vhosts = defs.vhosts.len(),
            exchanges = defs.exchanges.len(),
            queues = defs.queues.len(),
            bindings = defs.bindings.len(),
            "restored definitions"
        );
        self.recover_in_background(uncounted);
        Ok(())
    }

    /// Work that would delay start-up: clearing transient messages paged
    /// out before a crash, and counting queues that were not shut down
    /// cleanly. The broker serves meanwhile; counts are estimates until done.
    fn recover_in_background(&self, uncounted: Vec<Arc<Queue>>) {
        let store = self.store.clone();
        let spawned = std::thread::Builder::new()
            .name("warren-recovery".into())
            .spawn(move || {
                if let Err(e) = store.clear_paged() {
                    tracing::error!("cannot clear paged-out transient messages: {e}");
                }
                for q in uncounted {
                    for (level, from) in q.stored_from() {
                        match store.count_entries(q.config.uid, level, from) {
                            Ok(n) => q.set_recovered_count(level, from, n),
                            Err(e) => {
                                tracing::error!(queue = %q.config.name, "cannot count messages: {e}")
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the recovery thread: {e}");
        }
    }

    /// Clean shutdown: record queue lengths, flush, stop the store.
    pub fn close(&self) {
        self.queue_env.deadlines.stop();
        let counts: Vec<(u64, u8, u64)> = self
            .vhosts()
            .iter()
            .flat_map(|v| v.queues())
            .filter(|q| q.config.survives_restart())
            .flat_map(|q| {
                let uid = q.config.uid;
                let mut levels = q.durable_ready();
                if levels.is_empty() {
                    // Known to be empty: nothing to count at the next boot.
                    levels.push((0, 0));
                }
                levels.into_iter().map(move |(level, n)| (uid, level, n))
            })
            .collect();
        if let Err(e) = self.store.save_counts(&counts) {
            tracing::error!("cannot record queue lengths: {e}");
        }
        if let Err(e) = self.store.close() {
            tracing::error!("cannot flush the store: {e}");
        }
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(VHost::new(name, self.queue_env.clone())))
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

impl QueueOwner for Broker {
    fn dead_letter(
        &self,
        queue: &Queue,
        target: &DeadLetterTarget,
        dead: Vec<(Arc<Message>, Reason)>,
    ) {
        if let Some(v) = self.vhost(&queue.config.vhost) {
            v.dead_letter(&self.metrics, queue, target, dead, crate::queue::now_ms());
        }
    }

    fn expire(&self, queue: &Arc<Queue>) {
        if let Some(v) = self.vhost(&queue.config.vhost) {
            v.expire_queue(queue);
        }
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
