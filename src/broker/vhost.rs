//! A virtual host: its exchanges, queues and bindings, looked up by name.
//!
//! This file owns the [`VHost`] struct, its read-only lookups, and the
//! request and result types of topology changes ([`ExchangeDeclare`],
//! [`QueueDeclare`], [`Durability`]). The changes themselves live next to
//! it: `topology` (declare, delete, bind, unbind), `records` (what is
//! written to the store), `restore` (rebuilding at boot), `vhost_policies`
//! (applying policies) and `equivalence` (redeclaration checks). Routing is
//! `exchange::routing`'s; [`VHost::route`] only hands it the vhost's maps.
//!
//! Reads on the publish path (find an exchange, route, find a queue) take
//! only read locks. Every change to the topology — declare, delete, bind,
//! unbind — is serialised by the `topology` lock, which also guards the
//! canonical binding set, so indexes and routers never disagree.
//!
//! Durable definitions are written to the store under the topology lock, so
//! the store sees changes in the order they happen; each mutation reports
//! whether it wrote anything ([`Durability`]) so the caller can wait for the
//! flush before answering the client.
//!
//! # Lock ordering
//! topology → exchanges/queues maps → exchange router → queue state.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use amq_protocol::types::{FieldTable, ShortString};
use parking_lot::{Mutex, RwLock};

use super::bindings::{Binding, Bindings};
use super::events::Events;
use super::limits::VhostLimits;
use super::policies::Policy;
use super::queue_index::QueueIndex;
use super::vhosts::VhostMetadata;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Exchange, ExchangeKind, RouteHeaders, routing};
use crate::queue::{ConnectionId, Queue, QueueEnv};
use crate::store::Store;

/// Whether every vhost has an exchange of this name from the start (the
/// default exchange and the `amq.*` ones).
pub(super) fn is_predeclared(name: &str) -> bool {
    name.is_empty() || PREDECLARED.iter().any(|(n, _)| *n == name)
}

/// The exchanges every vhost starts with.
const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// One virtual host.
// The fields are `pub(super)` so that the sibling files implementing the
// vhost's operations reach them; nothing outside `broker` can.
#[derive(Debug)]
pub struct VHost {
    pub name: String,
    pub(super) env: Arc<QueueEnv>,
    pub(super) exchanges: RwLock<HashMap<ShortString, Arc<Exchange>>>,
    pub(super) queues: RwLock<QueueIndex>,
    pub(super) topology: Mutex<Bindings>,
    pub(super) policies: RwLock<Vec<Arc<Policy>>>,
    pub(super) operator_policies: RwLock<Vec<Arc<Policy>>>,
    pub(super) limits: RwLock<VhostLimits>,
    pub(super) metadata: RwLock<VhostMetadata>,
    /// Where its changes are announced (the event exchange), and where
    /// firehose copies go.
    pub(super) events: Arc<Events>,
    /// Firehose tracing is on (`firehose`).
    pub(super) tracing: AtomicBool,
    /// Its delayed-message exchanges, for the timer (which then looks at
    /// these, not at every exchange).
    pub(super) delayed_exchanges: Mutex<Vec<std::sync::Weak<Exchange>>>,
}

/// What `exchange.declare` asks for.
#[derive(Clone, Debug)]
pub struct ExchangeDeclare {
    pub name: ShortString,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// What `queue.declare` asks for. An empty name (not passive) asks for a
/// server-named queue.
#[derive(Clone, Debug)]
pub struct QueueDeclare {
    pub name: ShortString,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// What `queue.declare` found or made.
#[derive(Debug)]
pub struct QueueDeclared {
    pub queue: Arc<Queue>,
    pub messages: u32,
    pub consumers: u32,
    pub durability: Durability,
    /// The queue did not exist before.
    pub created: bool,
}

/// Whether a topology change wrote durable definitions, which must be
/// flushed before the client is told it happened.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Transient,
    Durable,
}

impl Durability {
    pub(super) fn from(wrote: bool) -> Durability {
        if wrote {
            Durability::Durable
        } else {
            Durability::Transient
        }
    }
}

impl VHost {
    pub fn new(name: &str, env: Arc<QueueEnv>, events: Arc<Events>) -> VHost {
        let vhost = VHost {
            name: name.to_string(),
            queues: RwLock::new(QueueIndex::new(env.churn.clone())),
            env,
            exchanges: RwLock::new(HashMap::new()),
            topology: Mutex::new(Bindings::default()),
            policies: RwLock::new(Vec::new()),
            operator_policies: RwLock::new(Vec::new()),
            limits: RwLock::new(VhostLimits::default()),
            metadata: RwLock::new(VhostMetadata::default()),
            events,
            tracing: AtomicBool::new(false),
            delayed_exchanges: Mutex::new(Vec::new()),
        };
        {
            let mut exchanges = vhost.exchanges.write();
            let default = Exchange::new(
                "".into(),
                ExchangeKind::Direct,
                true,
                false,
                false,
                FieldTable::default(),
            );
            exchanges.insert("".into(), Arc::new(default));
            for (name, kind) in PREDECLARED {
                let e = Exchange::new(
                    (*name).into(),
                    *kind,
                    true,
                    false,
                    false,
                    FieldTable::default(),
                );
                exchanges.insert((*name).into(), Arc::new(e));
            }
        }
        vhost.add_system_exchange(super::firehose::EXCHANGE, ExchangeKind::Topic, true);
        vhost
    }

    /// Add an exchange the broker owns (`amq.rabbitmq.event`): durable,
    /// never stored (it is made again at every start), deletable by no one.
    pub(super) fn add_system_exchange(&self, name: &str, kind: ExchangeKind, internal: bool) {
        let e = Exchange::new(
            name.into(),
            kind,
            true,
            false,
            internal,
            FieldTable::default(),
        );
        self.exchanges.write().insert(name.into(), Arc::new(e));
    }

    pub fn limits(&self) -> VhostLimits {
        *self.limits.read()
    }

    pub(super) fn set_limits(&self, limits: VhostLimits) {
        *self.limits.write() = limits;
    }

    /// Description, tags and default queue type.
    pub fn metadata(&self) -> VhostMetadata {
        self.metadata.read().clone()
    }

    pub(super) fn set_metadata(&self, metadata: VhostMetadata) {
        *self.metadata.write() = metadata;
    }

    pub(super) fn store(&self) -> &Store {
        &self.env.store
    }

    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().get(name).cloned()
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// The queues in name order (operators' listings).
    pub fn queues_sorted(&self) -> Vec<Arc<Queue>> {
        self.queues.read().sorted()
    }

    /// A queue by name, whoever declared it (operators see exclusive
    /// queues too).
    pub fn find_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().get(name).cloned()
    }

    pub fn bindings(&self) -> Vec<Binding> {
        self.topology.lock().iter().cloned().collect()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.read().len()
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    pub fn existing_exchange(&self, name: &str) -> AmqpResult<Arc<Exchange>> {
        self.exchange(name).ok_or_else(|| self.no_exchange(name))
    }

    /// Find a queue `connection` may use: 404 if missing, 405 if another
    /// connection's exclusive queue.
    pub fn queue(&self, connection: ConnectionId, name: &str) -> AmqpResult<Arc<Queue>> {
        let q = self
            .queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))?;
        q.check_access(connection)?;
        Ok(q)
    }

    /// Resolve the queues a message published to `exchange` with
    /// `routing_key` reaches (see [`routing::route`]). Each queue appears
    /// once in `out`.
    #[inline]
    pub fn route(
        &self,
        exchange: &Arc<Exchange>,
        routing_key: &str,
        headers: &RouteHeaders<'_>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        routing::route(
            exchange,
            routing_key,
            headers,
            |name| self.exchange(name),
            |name| self.queues.read().get(name).cloned(),
            out,
        )
    }
}
