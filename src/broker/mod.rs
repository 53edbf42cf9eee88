//! The broker's shared state: vhosts, users, live connections, alarms,
//! metrics and the store. Protocol code (`amqp/`) and the admin API
//! (`admin/`) both work through it; it knows nothing of sockets or frames.
//!
//! At boot the broker either seeds a fresh data directory (default user and
//! vhost, as RabbitMQ's image does on first boot, unless definitions are to
//! be imported at boot: then they say who may log in) or restores what the
//! store holds; at a clean shutdown it records queue lengths so the next
//! boot needs no counting.

pub mod access;
pub mod alarms;
pub mod audit;
pub mod auth;
pub mod bindings;
mod cascade;
pub mod connections;
pub mod dead_letter;
pub mod definitions;
pub mod delayed;
pub mod enqueue;
mod equivalence;
pub mod erasure;
pub mod events;
pub mod firehose;
pub mod limits;
pub mod link_specs;
pub mod link_status;
mod local_publish;
mod login_guard;
pub mod parameters;
pub mod pattern;
pub mod policies;
mod policy_admin;
mod queue_control;
pub mod queue_index;
mod records;
mod restore;
pub mod schemas;
pub mod stats;
pub mod super_stream;
mod topology;
mod tracking;
pub mod vhost;
mod vhost_policies;
mod vhosts;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::exchange::ExchangeKind;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::queue::Reason;
use crate::queue::args::DeadLetterTarget;
use crate::queue::{ConnectionId, Queue, QueueEnv, QueueLimits, QueueOwner};
use crate::store::{PermissionRecord, Store, StoreResult};
pub use access::AccessError;
use audit::AuditLog;
use auth::{HashingAlgorithm, Permission, User, Users};
pub use connections::ClientConnection;
pub use definitions::{DefinitionsError, ImportSummary};
use limits::{UserLimits, VhostLimits};
use login_guard::LoginGuard;
pub use vhost::VHost;
pub use vhosts::VhostMetadata;

/// The RabbitMQ release whose behaviour Warren follows; reported as the
/// `version` server property and in the management API, where tools parse it.
pub const RABBITMQ_VERSION: &str = "4.3.0";

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub users: Users,
    pub metrics: Metrics,
    pub node_name: String,
    /// The cluster name until one is set (the `cluster_name` global
    /// parameter): the node's name, as RabbitMQ's.
    default_cluster_name: String,
    pub store: Arc<Store>,
    /// The audit trail (disabled unless `audit.enabled`).
    pub audit: AuditLog,
    /// The event exchange's feed.
    pub events: Arc<events::Events>,
    /// Failed logins per client address.
    pub logins: LoginGuard,
    /// Runtime and global parameters.
    parameters: parameters::Parameters,
    /// Serialises definitions imports (each validates against what exists,
    /// then applies).
    importing: Mutex<()>,
    queue_env: Arc<QueueEnv>,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    connections: Mutex<HashMap<ConnectionId, Arc<ClientConnection>>>,
    /// Open channels per user, for `max-channels`.
    user_channels: Mutex<HashMap<String, usize>>,
    next_id: AtomicU64,
    /// Memory and disk alarms; while one is on, publishers are blocked.
    pub alarms: alarms::Alarms,
    /// The memory high watermark, in bytes.
    pub memory_limit: u64,
    /// The disk alarm goes on below this much free space.
    pub disk_free_limit: u64,
    /// Free space on the data directory's disk when last measured.
    pub disk_free: AtomicU64,
    /// The clock delivery deadlines (consumer timeouts) are kept on.
    pub ack_clock: connections::AckClock,
    /// Broker-wide rates for the overview.
    pub overview: stats::OverviewStats,
    /// What the server listens on.
    listeners: Mutex<Vec<stats::ListenerInfo>>,
    /// When the broker started.
    pub started: std::time::Instant,
    /// A publish held a message due earlier than any before: the delayed
    /// messages' timer looks again.
    pub delayed_wake: tokio::sync::Notify,
    /// Shovels and federation links, as they are doing.
    pub links: link_status::LinkRegistry,
    /// Schema subjects, compiled.
    pub schemas: crate::schema::Registry,
}

impl Broker {
    /// A broker over `store`: seeded with the configured defaults if the
    /// store is new, restored from it otherwise.
    pub fn open(config: Config, store: Store) -> StoreResult<Arc<Broker>> {
        Broker::open_with_audit(config, store, AuditLog::disabled())
    }

    /// As [`Broker::open`], recording to `audit`.
    pub fn open_with_audit(
        config: Config,
        store: Store,
        audit: AuditLog,
    ) -> StoreResult<Arc<Broker>> {
        let host = hostname();
        let node_name = format!("warren@{host}");
        let store = Arc::new(store);
        let queue_env = QueueEnv::new(
            store.clone(),
            QueueLimits {
                memory_budget_bytes: config.storage.memory_budget_bytes,
                window: config.storage.queue_memory_messages,
                flow_messages: config.limits.queue_flow_messages,
            },
        );
        let metrics = Metrics::new(
            &node_name,
            &node_name,
            RABBITMQ_VERSION,
            queue_env.churn.clone(),
        );
        // Both were validated when the configuration was loaded.
        let memory_limit = config
            .limits
            .memory_high_watermark
            .watermark()
            .map_or(u64::MAX, alarms::memory_limit);
        let disk_free_limit = config.limits.disk_free_limit.bytes().unwrap_or(0);
        metrics
            .gauge("rabbitmq_resident_memory_limit_bytes")
            .set(memory_limit as f64);
        metrics
            .gauge("rabbitmq_disk_space_available_limit_bytes")
            .set(disk_free_limit as f64);
        let events = Arc::new(events::Events::default());
        let broker = Arc::new(Broker {
            users: Users::default(),
            metrics,
            default_cluster_name: node_name.clone(),
            node_name,
            store,
            audit,
            events: events.clone(),
            logins: LoginGuard::default(),
            parameters: Default::default(),
            importing: Mutex::new(()),
            queue_env,
            vhosts: RwLock::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            user_channels: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            alarms: alarms::Alarms::new(events),
            memory_limit,
            disk_free_limit,
            disk_free: AtomicU64::new(0),
            ack_clock: Default::default(),
            overview: Default::default(),
            listeners: Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
            delayed_wake: tokio::sync::Notify::new(),
            links: Default::default(),
            schemas: Default::default(),
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
        broker.ensure_cluster_id()?;
        broker.store.flush_now()?;
        broker
            .events
            .start(&broker, broker.config.event_exchange.enabled);
        // As RabbitMQ's disk alarm: once the store cannot write, publishers
        // are blocked (those in flight are nacked) until it writes again.
        let weak = Arc::downgrade(&broker);
        broker.store.on_failure(Box::new(move || {
            if let Some(b) = weak.upgrade() {
                tracing::error!("the store failed: raising the disk alarm, publishers are blocked");
                b.alarms.set(alarms::Resource::Disk, true);
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
    /// A broker that imports definitions at boot starts blank instead, as
    /// RabbitMQ does: the definitions say which users and vhosts exist.
    fn seed_defaults(&self) -> StoreResult<()> {
        if self.config.definitions.is_configured() {
            return Ok(());
        }
        let auth = &self.config.auth;
        let metadata = VhostMetadata::default_vhost();
        self.add_vhost(&auth.default_vhost)
            .set_metadata(metadata.clone());
        let user = User::new(
            &auth.default_user,
            &auth.default_pass,
            vec!["administrator".into()],
        );
        self.store
            .put_vhost(&metadata.record(&auth.default_vhost))?;
        self.store.put_user(&access::user_record(&user))?;
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
            let Some(hashing_algorithm) = HashingAlgorithm::parse(&u.hashing_algorithm) else {
                tracing::warn!(user = %u.name, "skipping a stored user: unknown hashing algorithm {}", u.hashing_algorithm);
                continue;
            };
            let limits: UserLimits =
                serde_json::from_value(serde_json::Value::Object(u.limits.clone()))
                    .unwrap_or_default();
            self.users.put_user(User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                hashing_algorithm,
                tags: u.tags.clone(),
                limits,
            });
        }
        for p in &defs.permissions {
            let patterns = auth::PermissionPatterns {
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            };
            if let Err(e) = self
                .users
                .set_permission_patterns(&p.user, &p.vhost, patterns)
            {
                tracing::warn!(user = %p.user, vhost = %p.vhost, "skipping a stored permission: {e}")
            }
        }
        for t in &defs.topic_permissions {
            if let Err(e) =
                self.users
                    .set_topic_permission(&t.user, &t.vhost, &t.exchange, &t.write, &t.read)
            {
                tracing::warn!(user = %t.user, vhost = %t.vhost, "skipping a stored topic permission: {e}")
            }
        }
        self.parameters
            .restore(&defs.parameters, &defs.global_parameters);
        // Schemas come before queues and exchanges that are bound to them.
        for p in defs
            .parameters
            .iter()
            .filter(|p| p.component == crate::schema::COMPONENT)
        {
            if let Err(e) = self.schemas.load(&p.vhost, &p.name, &p.value) {
                tracing::warn!(vhost = %p.vhost, subject = %p.name, "skipping a stored schema subject: {e}");
            }
        }
        let mut uncounted: Vec<Arc<Queue>> = Vec::new();
        for record in &defs.vhosts {
            let name = &record.name;
            let vhost = self.add_vhost(name);
            vhost.set_metadata(VhostMetadata::of(record));
            if let Some(l) = defs.vhost_limits.iter().find(|l| &l.vhost == name) {
                let limits: VhostLimits =
                    serde_json::from_value(serde_json::Value::Object(l.limits.clone()))
                        .unwrap_or_default();
                vhost.set_limits(limits);
            }
            uncounted.extend(vhost.restore(&defs, &counts));
        }
        tracing::info!(
            vhosts = defs.vhosts.len(),
            exchanges = defs.exchanges.len(),
            queues = defs.queues.len(),
            bindings = defs.bindings.len(),
            "restored definitions"
        );
        // What earlier runs left — paged-out transient messages, keys of
        // queues deleted just before a crash — goes in the background.
        let vhosts = self.vhosts();
        let delayed = vhosts
            .iter()
            .flat_map(|v| v.exchanges())
            .filter_map(|e| e.delayed.get().map(|d| d.uid()));
        let live = vhosts
            .iter()
            .flat_map(|v| v.queues())
            .map(|q| q.config.uid)
            .chain(delayed)
            .collect();
        self.store.sweep(live);
        self.recover_in_background(uncounted);
        Ok(())
    }

    /// Counting queues that were not shut down cleanly would delay
    /// start-up: the broker serves meanwhile, counts are estimates until done.
    fn recover_in_background(&self, uncounted: Vec<Arc<Queue>>) {
        if uncounted.is_empty() {
            return;
        }
        let store = self.store.clone();
        let spawned = std::thread::Builder::new()
            .name("warren-recovery".into())
            .spawn(move || {
                for q in uncounted {
                    for at in q.stored_from() {
                        match store.count_entries(q.config.uid, at.level, at.from) {
                            Ok(n) => q.set_recovered_count(at, n),
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
        self.events.stop();
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
            .or_insert_with(|| {
                let vhost = VHost::new(name, self.queue_env.clone(), self.events.clone());
                let events = &self.config.event_exchange;
                if events.enabled && events.vhost == name {
                    vhost.add_system_exchange(events::EXCHANGE, ExchangeKind::Topic, true);
                }
                Arc::new(vhost)
            })
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

    /// What the broker holds in memory for messages: ready messages of
    /// every queue, what connections hold (deliveries awaiting acks,
    /// transactions, output buffers), and what waits to be written.
    pub fn memory_used(&self) -> u64 {
        let queues = self.queue_env.budget.used();
        let connections: u64 = self
            .connections
            .lock()
            .values()
            .map(|c| c.probe.held_bytes())
            .sum();
        queues + connections + self.store.unwritten_bytes()
    }

    /// Whether `user` may log in from `peer` (RabbitMQ's `loopback_users`).
    /// An IPv4 client of a dual-stack listener is `::ffff:127.0.0.1`.
    pub fn allowed_from(&self, user: &str, peer: &SocketAddr) -> bool {
        peer.ip().to_canonical().is_loopback()
            || !self.config.auth.loopback_users.iter().any(|u| u == user)
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

    fn admit_schema(
        &self,
        queue: &Queue,
        rule: &crate::schema::Rule,
        message: &Arc<Message>,
    ) -> bool {
        self.enforce_schema(
            &queue.config.vhost,
            schemas::SchemaSite::Queue(queue.name()),
            rule,
            message,
        )
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
