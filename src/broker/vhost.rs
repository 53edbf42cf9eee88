//! A virtual host: its exchanges, queues and bindings, and the rules for
//! changing them.
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

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use super::bindings::{Binding, Bindings, DestinationName};
use super::enqueue::enqueue;
use super::policies::{self, Policy};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Destination, Exchange, ExchangeKind, RouteHeaders};
use crate::fields::{generated_name, int_value, type_name, value_text};
use crate::queue::args::{DeclareFlags, QueueArgs};
use crate::queue::dead_letter::DeadLetter;
use crate::queue::{ConnectionId, Queue, QueueConfig, QueueEnv};
use crate::store::{
    BindingRecord, Definitions, ExchangeRecord, PolicyRecord, QueueRecord, Store, StoreError,
};

/// The exchanges every vhost starts with.
const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Queue arguments whose values must match on redeclaration, as RabbitMQ's
/// `declare_args`; other arguments are not compared.
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
    "x-queue-leader-locator",
    "x-delivery-limit",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-backoff",
];

#[derive(Debug)]
pub struct VHost {
    pub name: String,
    env: Arc<QueueEnv>,
    exchanges: RwLock<HashMap<ShortString, Arc<Exchange>>>,
    queues: RwLock<HashMap<ShortString, Arc<Queue>>>,
    topology: Mutex<Bindings>,
    policies: RwLock<Vec<Arc<Policy>>>,
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

/// Whether a topology change wrote durable definitions, which must be
/// flushed before the client is told it happened.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Transient,
    Durable,
}

impl Durability {
    fn from(wrote: bool) -> Durability {
        if wrote {
            Durability::Durable
        } else {
            Durability::Transient
        }
    }
}

fn store_failed(e: StoreError) -> AmqpError {
    AmqpError::internal_error(format!("cannot write definitions: {e}"))
}

/// An exchange whose definition survives a restart. Predeclared (`amq.*`)
/// exchanges count as durable but are recreated at boot, not stored.
fn exchange_survives(e: &Exchange) -> bool {
    e.durable && !e.auto_delete
}

fn exchange_is_stored(e: &Exchange) -> bool {
    exchange_survives(e) && !e.name.as_str().is_empty() && !e.name.as_str().starts_with("amq.")
}

impl VHost {
    pub fn new(name: &str, env: Arc<QueueEnv>) -> VHost {
        let vhost = VHost {
            name: name.to_string(),
            env,
            exchanges: RwLock::new(HashMap::new()),
            queues: RwLock::new(HashMap::new()),
            topology: Mutex::new(Bindings::default()),
            policies: RwLock::new(Vec::new()),
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
        vhost
    }

    fn store(&self) -> &Store {
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

    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> AmqpResult<Durability> {
        let name = d.name.as_str();
        if name.is_empty() {
            return Err(default_exchange_refusal());
        }
        if d.passive {
            return self.existing_exchange(name).map(|_| Durability::Transient);
        }
        let _topology = self.topology.lock();
        if let Some(existing) = self.exchange(name) {
            check_exchange_equivalence(&existing, d, &self.name)?;
            return Ok(Durability::Transient);
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let kind = ExchangeKind::parse(&d.kind).ok_or_else(|| {
            // RabbitMQ words plugin-style types ("x-…") differently.
            let adjective = if d.kind.starts_with("x-") {
                "unknown"
            } else {
                "invalid"
            };
            AmqpError::command_invalid(format!("{adjective} exchange type '{}'", d.kind))
        })?;
        if let Some(ae) = d.arguments.inner().get("alternate-exchange")
            && !matches!(ae, AMQPValue::LongString(_) | AMQPValue::ShortString(_))
        {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'alternate-exchange' for exchange '{name}' in vhost '{}': {{unacceptable_type,{}}}",
                self.name,
                type_name(ae)
            )));
        }
        let exchange = Arc::new(Exchange::new(
            d.name.clone(),
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        ));
        let stored = exchange_is_stored(&exchange);
        if stored {
            self.store()
                .put_exchange(&ExchangeRecord {
                    vhost: self.name.clone(),
                    name: name.to_string(),
                    kind: kind.as_str().to_string(),
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments.clone(),
                })
                .map_err(store_failed)?;
        }
        self.apply_exchange_policy(&exchange);
        self.exchanges.write().insert(d.name.clone(), exchange);
        Ok(Durability::from(stored))
    }

    /// `exchange.delete`. Deleting a missing exchange succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<Durability> {
        if name.is_empty() {
            return Err(default_exchange_refusal());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut topology = self.topology.lock();
        let Some(exchange) = self.exchange(name) else {
            return Ok(Durability::Transient);
        };
        if if_unused && topology.has_source(name) {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange_locked(&mut topology, &exchange)
    }

    fn remove_exchange_locked(
        &self,
        topology: &mut Bindings,
        exchange: &Arc<Exchange>,
    ) -> AmqpResult<Durability> {
        let mut wrote = false;
        if exchange_is_stored(exchange) {
            self.store()
                .delete_exchange(&self.name, exchange.name.as_str())
                .map_err(store_failed)?;
            wrote = true;
        }
        self.exchanges.write().remove(exchange.name.as_str());
        exchange.mark_deleted();
        // Outgoing bindings die with the exchange's router; incoming ones
        // (exchange-to-exchange) must be unhooked from their sources.
        for b in topology.remove_source(exchange.name.as_str()) {
            wrote |= self.forget_binding(&b)?;
        }
        let incoming =
            topology.remove_destination(&DestinationName::Exchange(exchange.name.clone()));
        let dest = Destination::Exchange(exchange.clone());
        for b in incoming {
            wrote |= self.forget_binding(&b)?;
            if let Some(source) = self.exchange(b.source.as_str()) {
                source.unbind(&dest, b.routing_key.as_str(), &b.arguments);
                wrote |=
                    self.auto_delete_exchange_locked(topology, &source)? == Durability::Durable;
            }
        }
        Ok(Durability::from(wrote))
    }

    /// Auto-delete exchanges go when their last outgoing binding goes.
    fn auto_delete_exchange_locked(
        &self,
        topology: &mut Bindings,
        exchange: &Arc<Exchange>,
    ) -> AmqpResult<Durability> {
        if exchange.auto_delete && !topology.has_source(exchange.name.as_str()) {
            self.remove_exchange_locked(topology, exchange)
        } else {
            Ok(Durability::Transient)
        }
    }

    /// Whether both ends of a binding survive a restart, so it does too.
    fn binding_survives(&self, b: &Binding) -> bool {
        let source = self
            .exchange(b.source.as_str())
            .is_some_and(|e| exchange_survives(&e));
        let destination = match &b.destination {
            DestinationName::Queue(q) => self
                .queues
                .read()
                .get(q.as_str())
                .is_some_and(|q| q.config.survives_restart()),
            DestinationName::Exchange(e) => self
                .exchange(e.as_str())
                .is_some_and(|e| exchange_survives(&e)),
        };
        source && destination
    }

    fn binding_record(&self, b: &Binding) -> BindingRecord {
        let (destination, destination_is_queue) = match &b.destination {
            DestinationName::Queue(q) => (q.as_str().to_string(), true),
            DestinationName::Exchange(e) => (e.as_str().to_string(), false),
        };
        BindingRecord {
            vhost: self.name.clone(),
            source: b.source.as_str().to_string(),
            destination,
            destination_is_queue,
            routing_key: b.routing_key.as_str().to_string(),
            arguments: b.arguments.clone(),
        }
    }

    /// Store a new binding if it survives restarts; true if written.
    fn record_binding(&self, b: &Binding) -> AmqpResult<bool> {
        if !self.binding_survives(b) {
            return Ok(false);
        }
        self.store()
            .put_binding(&self.binding_record(b))
            .map_err(store_failed)?;
        Ok(true)
    }

    /// Delete a binding's record if it had one; true if written. Called
    /// while both ends still exist.
    fn forget_binding(&self, b: &Binding) -> AmqpResult<bool> {
        if !self.binding_survives(b) {
            return Ok(false);
        }
        self.store()
            .delete_binding(&self.binding_record(b))
            .map_err(store_failed)?;
        Ok(true)
    }

    /// `queue.declare`. Returns the queue and its message and consumer counts.
    pub fn declare_queue(
        &self,
        connection: ConnectionId,
        d: &QueueDeclare,
    ) -> AmqpResult<(Arc<Queue>, u32, u32, Durability)> {
        let name = d.name.as_str();
        if d.passive {
            let q = self.queue(connection, name)?;
            q.touch();
            let (ready, _) = q.counts();
            return Ok((q.clone(), ready, q.consumer_count(), Durability::Transient));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let name = if name.is_empty() {
            ShortString::from(generated_name("amq.gen-"))
        } else {
            d.name.clone()
        };
        let args = QueueArgs::parse(
            name.as_str(),
            &self.name,
            DeclareFlags {
                durable: d.durable,
                exclusive: d.exclusive,
                auto_delete: d.auto_delete,
            },
            &d.arguments,
        )?;
        let _topology = self.topology.lock();
        if let Some(existing) = self.queues.read().get(name.as_str()).cloned() {
            existing.check_access(connection)?;
            check_queue_equivalence(&existing, d, &self.name)?;
            existing.touch();
            let (ready, _) = existing.counts();
            let consumers = existing.consumer_count();
            return Ok((existing, ready, consumers, Durability::Transient));
        }
        let config = QueueConfig {
            name: name.clone(),
            vhost: self.name.clone(),
            durable: d.durable,
            auto_delete: d.auto_delete,
            exclusive_owner: d.exclusive.then_some(connection),
            arguments: d.arguments.clone(),
            args,
            uid: self.store().new_queue_uid(),
        };
        let stored = config.survives_restart();
        if stored {
            self.store()
                .put_queue(&QueueRecord {
                    vhost: self.name.clone(),
                    name: name.as_str().to_string(),
                    uid: config.uid,
                    auto_delete: config.auto_delete,
                    arguments: config.arguments.clone(),
                })
                .map_err(store_failed)?;
        }
        let policy = self.queue_policy(name.as_str(), config.args.queue_type);
        let queue = Queue::new(
            config,
            self.env.clone(),
            policy.as_ref().map(|p| (p.name(), &p.queue)),
        );
        self.queues.write().insert(name, queue.clone());
        // Every queue is bound to the default exchange by its name; that
        // binding is implicit (the default exchange resolves names directly).
        Ok((queue, 0, 0, Durability::from(stored)))
    }

    /// The hidden queue behind a direct reply-to consumer: exclusive to
    /// `connection`, deleted with its consumer, named
    /// `<prefix>.<random>` so that replies published to the default exchange
    /// with that name as routing key reach it.
    pub fn declare_reply_queue(
        &self,
        connection: ConnectionId,
        prefix: &str,
    ) -> AmqpResult<Arc<Queue>> {
        let name = ShortString::from(generated_name(&format!("{prefix}.")));
        let config = QueueConfig {
            name: name.clone(),
            vhost: self.name.clone(),
            durable: false,
            auto_delete: true,
            exclusive_owner: Some(connection),
            arguments: FieldTable::default(),
            args: QueueArgs::default(),
            uid: self.store().new_queue_uid(),
        };
        let _topology = self.topology.lock();
        let queue = Queue::new(config, self.env.clone(), None);
        self.queues.write().insert(name, queue.clone());
        Ok(queue)
    }

    /// `queue.delete`. Deleting a missing queue succeeds with a count of 0.
    pub fn delete_queue(
        &self,
        connection: ConnectionId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> AmqpResult<(u32, Durability)> {
        let mut topology = self.topology.lock();
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Ok((0, Durability::Transient));
        };
        queue.check_access(connection)?;
        let count = queue.delete(if_unused, if_empty)?;
        let durability = self.remove_queue_locked(&mut topology, &queue)?;
        Ok((count, durability))
    }

    fn remove_queue_locked(
        &self,
        topology: &mut Bindings,
        queue: &Arc<Queue>,
    ) -> AmqpResult<Durability> {
        let mut wrote = false;
        let bindings =
            topology.remove_destination(&DestinationName::Queue(queue.config.name.clone()));
        let dest = Destination::Queue(queue.clone());
        for b in bindings {
            wrote |= self.forget_binding(&b)?;
            if let Some(source) = self.exchange(b.source.as_str()) {
                source.unbind(&dest, b.routing_key.as_str(), &b.arguments);
                wrote |=
                    self.auto_delete_exchange_locked(topology, &source)? == Durability::Durable;
            }
        }
        if queue.config.survives_restart() {
            self.store()
                .delete_queue(&self.name, queue.name())
                .map_err(store_failed)?;
            wrote = true;
        }
        let mut queues = self.queues.write();
        if queues
            .get(queue.name())
            .is_some_and(|q| Arc::ptr_eq(q, queue))
        {
            queues.remove(queue.name());
        }
        Ok(Durability::from(wrote))
    }

    /// Delete an auto-delete queue that has lost its last consumer, if it
    /// still has none.
    pub fn auto_delete_queue(&self, queue: &Arc<Queue>) {
        let mut topology = self.topology.lock();
        if queue.is_unused_auto_delete() {
            let _ = queue.delete(false, false);
            if let Err(e) = self.remove_queue_locked(&mut topology, queue) {
                tracing::error!(queue = %queue.config.name, "auto-delete: {}", e.reply_text());
            }
        }
    }

    /// Delete the exclusive queues of a closing connection.
    pub fn delete_exclusive_queues(&self, connection: ConnectionId) {
        let owned: Vec<Arc<Queue>> = self
            .queues
            .read()
            .values()
            .filter(|q| q.config.exclusive_owner == Some(connection))
            .cloned()
            .collect();
        if owned.is_empty() {
            return;
        }
        let mut topology = self.topology.lock();
        for q in owned {
            let _ = q.delete(false, false);
            if let Err(e) = self.remove_queue_locked(&mut topology, &q) {
                tracing::error!(queue = %q.config.name, "exclusive queue cleanup: {}", e.reply_text());
            }
        }
    }

    pub fn purge_queue(&self, connection: ConnectionId, name: &str) -> AmqpResult<u32> {
        Ok(self.queue(connection, name)?.purge())
    }

    /// `queue.bind`.
    pub fn bind_queue(
        &self,
        connection: ConnectionId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> AmqpResult<Durability> {
        if exchange.is_empty() {
            return Err(default_exchange_refusal());
        }
        let mut topology = self.topology.lock();
        let q = self.queue(connection, queue)?;
        let source = self.existing_exchange(exchange)?;
        source.validate_binding(arguments)?;
        let binding = Binding {
            source: source.name.clone(),
            destination: DestinationName::Queue(q.config.name.clone()),
            routing_key: routing_key.into(),
            arguments: arguments.clone(),
        };
        let mut wrote = false;
        if topology.insert(binding.clone()) {
            wrote = self.record_binding(&binding)?;
            source.bind(Destination::Queue(q), routing_key, arguments);
        }
        Ok(Durability::from(wrote))
    }

    /// `queue.unbind`. Unbinding something that is not bound succeeds.
    pub fn unbind_queue(
        &self,
        connection: ConnectionId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> AmqpResult<Durability> {
        if exchange.is_empty() {
            return Err(default_exchange_refusal());
        }
        let mut topology = self.topology.lock();
        // As in RabbitMQ, unbinding succeeds when there is nothing to unbind,
        // whether the binding, the queue or the exchange is missing.
        let (Some(q), Some(source)) = (
            self.queues.read().get(queue).cloned(),
            self.exchange(exchange),
        ) else {
            return Ok(Durability::Transient);
        };
        q.check_access(connection)?;
        let binding = Binding {
            source: source.name.clone(),
            destination: DestinationName::Queue(q.config.name.clone()),
            routing_key: routing_key.into(),
            arguments: arguments.clone(),
        };
        let mut wrote = false;
        if topology.remove(&binding) {
            wrote = self.forget_binding(&binding)?;
            source.unbind(&Destination::Queue(q), routing_key, arguments);
            wrote |=
                self.auto_delete_exchange_locked(&mut topology, &source)? == Durability::Durable;
        }
        Ok(Durability::from(wrote))
    }

    /// `exchange.bind`: messages arriving at `source` also flow to
    /// `destination`.
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> AmqpResult<Durability> {
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refusal());
        }
        let mut topology = self.topology.lock();
        let dest = self.existing_exchange(destination)?;
        let src = self.existing_exchange(source)?;
        src.validate_binding(arguments)?;
        let binding = Binding {
            source: src.name.clone(),
            destination: DestinationName::Exchange(dest.name.clone()),
            routing_key: routing_key.into(),
            arguments: arguments.clone(),
        };
        let mut wrote = false;
        if topology.insert(binding.clone()) {
            wrote = self.record_binding(&binding)?;
            src.bind(Destination::Exchange(dest), routing_key, arguments);
        }
        Ok(Durability::from(wrote))
    }

    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> AmqpResult<Durability> {
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refusal());
        }
        let mut topology = self.topology.lock();
        let (Some(dest), Some(src)) = (self.exchange(destination), self.exchange(source)) else {
            return Ok(Durability::Transient);
        };
        let binding = Binding {
            source: src.name.clone(),
            destination: DestinationName::Exchange(dest.name.clone()),
            routing_key: routing_key.into(),
            arguments: arguments.clone(),
        };
        let mut wrote = false;
        if topology.remove(&binding) {
            wrote = self.forget_binding(&binding)?;
            src.unbind(&Destination::Exchange(dest), routing_key, arguments);
            wrote |= self.auto_delete_exchange_locked(&mut topology, &src)? == Durability::Durable;
        }
        Ok(Durability::from(wrote))
    }

    /// Rebuild this vhost's durable exchanges, queues and bindings from the
    /// store at boot. `counts` are the stored-region sizes saved by a clean
    /// shutdown, by queue uid.
    pub fn restore(
        &self,
        defs: &Definitions,
        counts: &HashMap<u64, Vec<(u8, u64)>>,
    ) -> Vec<Arc<Queue>> {
        let mut topology = self.topology.lock();
        for p in defs.policies.iter().filter(|p| p.vhost == self.name) {
            match Policy::new(p.clone()) {
                Ok(policy) => self.policies.write().push(Arc::new(policy)),
                Err(e) => tracing::warn!(policy = %p.name, "skipping a stored policy: {e}"),
            }
        }
        for e in defs.exchanges.iter().filter(|e| e.vhost == self.name) {
            let Some(kind) = ExchangeKind::parse(&e.kind) else {
                tracing::warn!(exchange = %e.name, "skipping stored exchange of unknown type {}", e.kind);
                continue;
            };
            let exchange = Exchange::new(
                e.name.as_str().into(),
                kind,
                true,
                e.auto_delete,
                e.internal,
                e.arguments.clone(),
            );
            let exchange = Arc::new(exchange);
            self.apply_exchange_policy(&exchange);
            self.exchanges
                .write()
                .insert(e.name.as_str().into(), exchange);
        }
        let mut uncounted = Vec::new();
        for q in defs.queues.iter().filter(|q| q.vhost == self.name) {
            let flags = DeclareFlags {
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
            };
            let args = QueueArgs::parse(&q.name, &self.name, flags, &q.arguments)
                .unwrap_or_else(|e| {
                    tracing::warn!(queue = %q.name, "stored arguments no longer valid, ignoring them: {}", e.reply_text());
                    QueueArgs::default()
                });
            let config = QueueConfig {
                name: q.name.as_str().into(),
                vhost: self.name.clone(),
                durable: true,
                auto_delete: q.auto_delete,
                exclusive_owner: None,
                arguments: q.arguments.clone(),
                args,
                uid: q.uid,
            };
            let count = counts.get(&q.uid).map(Vec::as_slice);
            let policy = self.queue_policy(&q.name, config.args.queue_type);
            let queue = Queue::recover(
                config,
                self.env.clone(),
                policy.as_ref().map(|p| (p.name(), &p.queue)),
                count,
            );
            if count.is_none() {
                uncounted.push(queue.clone());
            }
            self.queues.write().insert(q.name.as_str().into(), queue);
        }
        for b in defs.bindings.iter().filter(|b| b.vhost == self.name) {
            let Some(source) = self.exchange(&b.source) else {
                continue;
            };
            let (destination, name) = if b.destination_is_queue {
                let Some(q) = self.queues.read().get(b.destination.as_str()).cloned() else {
                    continue;
                };
                (
                    Destination::Queue(q),
                    DestinationName::Queue(b.destination.as_str().into()),
                )
            } else {
                let Some(e) = self.exchange(&b.destination) else {
                    continue;
                };
                (
                    Destination::Exchange(e),
                    DestinationName::Exchange(b.destination.as_str().into()),
                )
            };
            let binding = Binding {
                source: source.name.clone(),
                destination: name,
                routing_key: b.routing_key.as_str().into(),
                arguments: b.arguments.clone(),
            };
            if topology.insert(binding) {
                source.bind(destination, &b.routing_key, &b.arguments);
            }
        }
        uncounted
    }

    fn queue_policy(&self, name: &str, kind: crate::queue::args::QueueType) -> Option<Arc<Policy>> {
        let policies = self.policies.read();
        policies::winner(policies.iter().filter(|p| p.applies_to_queue(name, kind))).cloned()
    }

    /// The policies of this vhost.
    pub fn policies(&self) -> Vec<PolicyRecord> {
        let mut out: Vec<PolicyRecord> = self
            .policies
            .read()
            .iter()
            .map(|p| p.record.clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Add or replace a policy and apply it to the queues it matches. The
    /// error (a 400 in the admin API) says what is wrong with it.
    pub fn set_policy(&self, record: PolicyRecord) -> Result<Durability, String> {
        let policy = Arc::new(Policy::new(record)?);
        let _topology = self.topology.lock();
        self.store()
            .put_policy(&policy.record)
            .map_err(|e| e.to_string())?;
        {
            let mut policies = self.policies.write();
            policies.retain(|p| p.name() != policy.name());
            policies.push(policy);
        }
        self.apply_policies();
        Ok(Durability::Durable)
    }

    /// Remove a policy; false if there was none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<bool, String> {
        let _topology = self.topology.lock();
        let removed = {
            let mut policies = self.policies.write();
            let before = policies.len();
            policies.retain(|p| p.name() != name);
            policies.len() != before
        };
        if removed {
            self.store()
                .delete_policy(&self.name, name)
                .map_err(|e| e.to_string())?;
            self.apply_policies();
        }
        Ok(removed)
    }

    /// Re-evaluate which policy applies to every queue and exchange.
    fn apply_policies(&self) {
        for q in self.queues() {
            let policy = self.queue_policy(q.name(), q.config.args.queue_type);
            q.apply_policy(policy.as_ref().map(|p| (p.name(), &p.queue)));
        }
        for e in self.exchanges() {
            self.apply_exchange_policy(&e);
        }
    }

    fn apply_exchange_policy(&self, exchange: &Exchange) {
        let policies = self.policies.read();
        let policy = policies::winner(
            policies
                .iter()
                .filter(|p| p.applies_to_exchange(exchange.name.as_str())),
        );
        exchange.set_policy_alternate(policy.and_then(|p| {
            let ae = p.alternate_exchange.as_ref()?;
            Some((p.name().to_string(), ShortString::from(ae.clone())))
        }));
    }

    /// Route dead letters through their dead-letter exchanges. A letter for
    /// a missing exchange is dropped, as RabbitMQ drops it; queues that
    /// would close a dead-letter cycle are skipped.
    pub fn dead_letter(&self, letters: Vec<DeadLetter>) {
        let mut routed = Vec::new();
        for letter in letters {
            let Some(exchange) = self.exchange(&letter.exchange) else {
                tracing::debug!(exchange = %letter.exchange, "dead-letter exchange missing; message dropped");
                continue;
            };
            let headers = RouteHeaders::of_properties(&letter.message.properties);
            routed.clear();
            for key in &letter.routing_keys {
                self.route(&exchange, key.as_str(), &headers, &mut routed);
            }
            if letter.routing_keys.len() > 1 {
                routed.sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
                routed.dedup_by(|a, b| Arc::ptr_eq(a, b));
            }
            routed.retain(|q| !letter.is_cycle(q.name()));
            enqueue(self.store(), &letter.message, &mut routed);
        }
    }

    /// Delete a queue whose `x-expires` ran out, if it is still unused.
    pub fn expire_queue(&self, queue: &Arc<Queue>) {
        let mut topology = self.topology.lock();
        if queue.is_expired_unused(crate::queue::now_ms()) {
            let _ = queue.delete(false, false);
            if let Err(e) = self.remove_queue_locked(&mut topology, queue) {
                tracing::error!(queue = %queue.config.name, "x-expires: {}", e.reply_text());
            }
        }
    }

    /// Resolve the queues a message published to `exchange` with
    /// `routing_key` reaches, following exchange-to-exchange bindings and
    /// alternate exchanges. Each queue appears once in `out`.
    pub fn route(
        &self,
        exchange: &Arc<Exchange>,
        routing_key: &str,
        headers: &RouteHeaders<'_>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        let mut pending: SmallVec<[Arc<Exchange>; 4]> = SmallVec::new();
        let mut visited: SmallVec<[*const Exchange; 4]> = SmallVec::new();
        let mut scratch: Vec<Destination> = Vec::new();
        pending.push(exchange.clone());
        while let Some(ex) = pending.pop() {
            let ptr = Arc::as_ptr(&ex);
            if visited.contains(&ptr) {
                continue;
            }
            visited.push(ptr);
            if ex.is_default() {
                if let Some(q) = self.queues.read().get(routing_key) {
                    out.push(q.clone());
                }
                continue;
            }
            scratch.clear();
            ex.route(routing_key, headers, &mut scratch);
            if scratch.is_empty() {
                if let Some(ae) = ex
                    .alternate_exchange()
                    .and_then(|n| self.exchange(n.as_str()))
                {
                    pending.push(ae);
                }
                continue;
            }
            for d in scratch.drain(..) {
                match d {
                    Destination::Queue(q) => out.push(q),
                    Destination::Exchange(e) => pending.push(e),
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
            out.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
    }
}

fn default_exchange_refusal() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

fn check_exchange_equivalence(
    existing: &Exchange,
    d: &ExchangeDeclare,
    vhost: &str,
) -> AmqpResult<()> {
    let name = existing.name.as_str();
    let mismatch = |arg: &str, received: &str, current: &str| {
        AmqpError::precondition_failed(format!(
            "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received \
             '{received}' but current is '{current}'"
        ))
    };
    if existing.kind.as_str() != d.kind {
        return Err(mismatch("type", &d.kind, existing.kind.as_str()));
    }
    for (arg, received, current) in [
        ("durable", d.durable, existing.durable),
        ("auto_delete", d.auto_delete, existing.auto_delete),
        ("internal", d.internal, existing.internal),
    ] {
        if received != current {
            return Err(mismatch(arg, &received.to_string(), &current.to_string()));
        }
    }
    check_args_equivalence(
        &existing.arguments,
        &d.arguments,
        &["alternate-exchange"],
        &format!("exchange '{name}' in vhost '{vhost}'"),
    )
}

fn check_queue_equivalence(existing: &Queue, d: &QueueDeclare, vhost: &str) -> AmqpResult<()> {
    let name = existing.name();
    let c = &existing.config;
    if d.exclusive != c.exclusive_owner.is_some() {
        // RabbitMQ treats an exclusive-flag mismatch as a locking failure.
        return Err(existing.locked_error());
    }
    for (arg, received, current) in [
        ("durable", d.durable, c.durable),
        ("auto_delete", d.auto_delete, c.auto_delete),
    ] {
        if received != current {
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received \
                 '{received}' but current is '{current}'"
            )));
        }
    }
    check_args_equivalence(
        &c.arguments,
        &d.arguments,
        EQUIVALENCE_ARGS,
        &format!("queue '{name}' in vhost '{vhost}'"),
    )
}

fn check_args_equivalence(
    current: &FieldTable,
    received: &FieldTable,
    keys: &[&str],
    what: &str,
) -> AmqpResult<()> {
    for key in keys {
        let (r, c) = (received.inner().get(*key), current.inner().get(*key));
        // No queue type means classic.
        let classic = |v: Option<&AMQPValue>| v.is_none_or(|v| value_text(v) == "classic");
        if *key == "x-queue-type" && classic(r) && classic(c) {
            continue;
        }
        if !arg_equal(r, c) {
            // Two values of one type are quoted bare; otherwise each is
            // described with its type, or as "none".
            let (r, c) = match (r, c) {
                (Some(r), Some(c)) if type_name(r) == type_name(c) => (
                    format!("'{}'", value_text(r)),
                    format!("'{}'", value_text(c)),
                ),
                _ => (describe_arg(r), describe_arg(c)),
            };
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{key}' for {what}: received {r} but current is {c}"
            )));
        }
    }
    Ok(())
}

/// RabbitMQ treats integer arguments of different widths as equal.
fn arg_equal(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (int_value(x), int_value(y)) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => false,
    }
}

/// Describe an argument the way RabbitMQ's equivalence errors do:
/// `the value '2000' of type 'signedint'` or `none`.
fn describe_arg(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => format!("the value '{}' of type '{}'", value_text(v), type_name(v)),
    }
}
