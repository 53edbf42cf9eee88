//! Topology changes of a vhost: declaring and deleting exchanges and
//! queues, binding and unbinding, and the deletions the broker makes on
//! its own (auto-delete, exclusive queues of a closed connection, expired
//! queues).
//!
//! Every change here takes the `topology` lock first and keeps the binding
//! set, the routers and the stored definitions in step; what goes to the
//! store is `records`' business, and redeclaration checks are
//! `equivalence`'s.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use super::bindings::{Binding, Bindings, DestinationName};
use super::equivalence::{check_exchange_equivalence, check_queue_equivalence};
use super::events::INTERNAL_USER;
use super::limits::reached;
use super::super_stream;
use super::vhost::{Durability, ExchangeDeclare, QueueDeclare, QueueDeclared, VHost};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Destination, Exchange, ExchangeKind};
use crate::fields::{generated_name, type_name};
use crate::queue::args::{DeclareFlags, QueueArgs, QueueType};
use crate::queue::{ConnectionId, Queue, QueueConfig};

impl VHost {
    /// `exchange.declare`; also says whether the exchange is new.
    /// `check_new` runs only for a new one, before it is made (the
    /// permission checks RabbitMQ makes for new exchanges only).
    pub fn declare_exchange(
        &self,
        d: &ExchangeDeclare,
        check_new: impl FnOnce() -> AmqpResult<()>,
        by: &str,
    ) -> AmqpResult<(Durability, bool)> {
        let name = d.name.as_str();
        if name.is_empty() {
            return Err(default_exchange_refusal());
        }
        if d.passive {
            return self
                .existing_exchange(name)
                .map(|_| (Durability::Transient, false));
        }
        let partitions = super_stream::partition_names(name, &d.kind, &d.arguments)?;
        let topology = self.topology.lock();
        if let Some(existing) = self.exchange(name) {
            check_exchange_equivalence(&existing, d, &self.name)?;
            return Ok((Durability::Transient, false));
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
        kind.check_arguments(&d.arguments)?;
        self.check_partitions(&d.arguments, &partitions)?;
        check_new()?;
        let exchange = Arc::new(Exchange::new(
            d.name.clone(),
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        ));
        self.attach_delay_buffer(&exchange, None);
        let stored = self.store_exchange(&exchange)?;
        self.apply_exchange_policy(&exchange);
        self.exchanges
            .write()
            .insert(d.name.clone(), exchange.clone());
        // Each partition's declaration and binding takes the lock itself.
        drop(topology);
        self.events.exchange_created(&self.name, &exchange, by);
        self.create_partitions(&exchange, &partitions, by)?;
        Ok((Durability::from(stored), true))
    }

    /// `exchange.delete`. Deleting a missing exchange succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool, by: &str) -> AmqpResult<Durability> {
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
        self.remove_exchange_locked(&mut topology, &exchange, by)
    }

    fn remove_exchange_locked(
        &self,
        topology: &mut Bindings,
        exchange: &Arc<Exchange>,
        by: &str,
    ) -> AmqpResult<Durability> {
        let mut wrote = self.unstore_exchange(exchange)?;
        self.exchanges.write().remove(exchange.name.as_str());
        exchange.mark_deleted();
        if let Some(held) = exchange.delayed.get() {
            held.drop_all();
        }
        // Outgoing bindings die with the exchange's router; incoming ones
        // (exchange-to-exchange) must be unhooked from their sources.
        // Bindings that go with it are the broker's doing, as in RabbitMQ.
        for b in topology.remove_source(exchange.name.as_str()) {
            wrote |= self.binding_gone(&b, INTERNAL_USER)?;
        }
        let incoming =
            topology.remove_destination(&DestinationName::Exchange(exchange.name.clone()));
        let dest = Destination::Exchange(exchange.clone());
        for b in incoming {
            wrote |= self.binding_gone(&b, INTERNAL_USER)?;
            if let Some(source) = self.exchange(b.source.as_str()) {
                source.unbind(&dest, b.routing_key.as_str(), &b.arguments);
                wrote |=
                    self.auto_delete_exchange_locked(topology, &source)? == Durability::Durable;
            }
        }
        self.events.exchange_deleted(&self.name, exchange, by);
        Ok(Durability::from(wrote))
    }

    /// A binding is gone: from the store, and announced.
    fn binding_gone(&self, b: &Binding, by: &str) -> AmqpResult<bool> {
        let wrote = self.forget_binding(b)?;
        self.events.binding_deleted(&self.name, b, by);
        Ok(wrote)
    }

    /// Auto-delete exchanges go when their last outgoing binding goes.
    fn auto_delete_exchange_locked(
        &self,
        topology: &mut Bindings,
        exchange: &Arc<Exchange>,
    ) -> AmqpResult<Durability> {
        if exchange.auto_delete && !topology.has_source(exchange.name.as_str()) {
            self.remove_exchange_locked(topology, exchange, INTERNAL_USER)
        } else {
            Ok(Durability::Transient)
        }
    }

    /// `queue.declare`. Returns the queue and its message and consumer
    /// counts. `check_new` runs only when the queue is new, before it is
    /// made (with its final name: the dead-letter permission checks).
    pub fn declare_queue(
        &self,
        connection: ConnectionId,
        d: &QueueDeclare,
        check_new: impl FnOnce(&str) -> AmqpResult<()>,
        by: &str,
    ) -> AmqpResult<QueueDeclared> {
        let name = d.name.as_str();
        if d.passive {
            let q = self.queue(connection, name)?;
            q.touch();
            let (ready, _) = q.counts();
            return Ok(QueueDeclared {
                messages: ready,
                consumers: q.consumer_count(),
                queue: q,
                durability: Durability::Transient,
                created: false,
            });
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
        let _topology = self.topology.lock();
        // As RabbitMQ: a queue that exists is compared with the request
        // first; the arguments are validated for a new one.
        if let Some(existing) = self.queues.read().get(name.as_str()).cloned() {
            existing.check_access(connection)?;
            check_queue_equivalence(&existing, d, &self.name)?;
            existing.touch();
            let (ready, _) = existing.counts();
            let consumers = existing.consumer_count();
            return Ok(QueueDeclared {
                queue: existing,
                messages: ready,
                consumers,
                durability: Durability::Transient,
                created: false,
            });
        }
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
        check_new(name.as_str())?;
        if let Some(limit) = reached(self.limits().max_queues, self.queue_count()) {
            return Err(AmqpError::precondition_failed(format!(
                "cannot declare queue '{name}': queue limit in vhost '{}' ({limit}) is reached",
                self.name
            )));
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
        let stored = self.store_queue(&config)?;
        let winners = self.queue_policies(name.as_str(), config.args.queue_type);
        let queue = if config.args.queue_type == QueueType::Stream {
            let log = self.store().open_log(config.uid).map_err(|e| {
                AmqpError::internal_error(format!("cannot create the stream's log: {e}"))
            })?;
            Queue::new_stream(config, self.env.clone(), winners.applied(), log)
        } else {
            Queue::new(config, self.env.clone(), winners.applied())
        };
        self.queues.write().create(queue.clone());
        self.events.queue_created(&queue, by);
        // Every queue is bound to the default exchange by its name; that
        // binding is implicit (the default exchange resolves names directly).
        Ok(QueueDeclared {
            queue,
            messages: 0,
            consumers: 0,
            durability: Durability::from(stored),
            created: true,
        })
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
        let queue = Queue::new(config, self.env.clone(), Default::default());
        self.queues.write().create(queue.clone());
        Ok(queue)
    }

    /// `queue.delete`. Deleting a missing queue succeeds with a count of 0.
    pub fn delete_queue(
        &self,
        connection: ConnectionId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        by: &str,
    ) -> AmqpResult<(u32, Durability)> {
        let mut topology = self.topology.lock();
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Ok((0, Durability::Transient));
        };
        queue.check_access(connection)?;
        let count = queue.delete(if_unused, if_empty)?;
        let durability = self.remove_queue_locked(&mut topology, &queue, by)?;
        Ok((count, durability))
    }

    fn remove_queue_locked(
        &self,
        topology: &mut Bindings,
        queue: &Arc<Queue>,
        by: &str,
    ) -> AmqpResult<Durability> {
        let mut wrote = false;
        let bindings =
            topology.remove_destination(&DestinationName::Queue(queue.config.name.clone()));
        let dest = Destination::Queue(queue.clone());
        for b in bindings {
            wrote |= self.binding_gone(&b, INTERNAL_USER)?;
            if let Some(source) = self.exchange(b.source.as_str()) {
                source.unbind(&dest, b.routing_key.as_str(), &b.arguments);
                wrote |=
                    self.auto_delete_exchange_locked(topology, &source)? == Durability::Durable;
            }
        }
        wrote |= self.unstore_queue(queue)?;
        self.queues.write().remove(queue);
        self.events.queue_deleted(queue, by);
        Ok(Durability::from(wrote))
    }

    /// Delete an auto-delete queue that has lost its last consumer, if it
    /// still has none.
    pub fn auto_delete_queue(&self, queue: &Arc<Queue>) {
        let mut topology = self.topology.lock();
        if queue.is_unused_auto_delete() {
            let _ = queue.delete(false, false);
            if let Err(e) = self.remove_queue_locked(&mut topology, queue, INTERNAL_USER) {
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
            if let Err(e) = self.remove_queue_locked(&mut topology, &q, INTERNAL_USER) {
                tracing::error!(queue = %q.config.name, "exclusive queue cleanup: {}", e.reply_text());
            }
        }
    }

    /// `queue.purge`: how many messages went, and whether the reply must
    /// wait for the store to make the purge durable.
    pub fn purge_queue(
        &self,
        connection: ConnectionId,
        name: &str,
    ) -> AmqpResult<(u32, Durability)> {
        let q = self.queue(connection, name)?;
        if q.stream.is_some() {
            return Err(AmqpError::not_implemented(format!(
                "queue.purge not supported by stream queues {}",
                q.described()
            )));
        }
        let (count, stored) = q.purge();
        let durability = if stored {
            Durability::Durable
        } else {
            Durability::Transient
        };
        Ok((count, durability))
    }

    /// `queue.bind`.
    pub fn bind_queue(
        &self,
        connection: ConnectionId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
        by: &str,
    ) -> AmqpResult<Durability> {
        if exchange.is_empty() {
            return Err(default_exchange_refusal());
        }
        let mut topology = self.topology.lock();
        let q = self.queue(connection, queue)?;
        let source = self.existing_exchange(exchange)?;
        source.validate_binding(routing_key, arguments)?;
        let binding = Binding {
            source: source.name.clone(),
            destination: DestinationName::Queue(q.config.name.clone()),
            routing_key: routing_key.into(),
            arguments: arguments.clone(),
        };
        let mut wrote = false;
        if topology.insert(binding.clone()) {
            wrote = self.record_binding(&binding)?;
            self.events.binding_created(&self.name, &binding, by);
            super_stream::note_partition(&source, &q, arguments);
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
        by: &str,
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
            wrote = self.binding_gone(&binding, by)?;
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
        by: &str,
    ) -> AmqpResult<Durability> {
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refusal());
        }
        let mut topology = self.topology.lock();
        let dest = self.existing_exchange(destination)?;
        let src = self.existing_exchange(source)?;
        src.validate_binding(routing_key, arguments)?;
        let binding = Binding {
            source: src.name.clone(),
            destination: DestinationName::Exchange(dest.name.clone()),
            routing_key: routing_key.into(),
            arguments: arguments.clone(),
        };
        let mut wrote = false;
        if topology.insert(binding.clone()) {
            wrote = self.record_binding(&binding)?;
            self.events.binding_created(&self.name, &binding, by);
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
        by: &str,
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
            wrote = self.binding_gone(&binding, by)?;
            src.unbind(&Destination::Exchange(dest), routing_key, arguments);
            wrote |= self.auto_delete_exchange_locked(&mut topology, &src)? == Durability::Durable;
        }
        Ok(Durability::from(wrote))
    }

    /// Delete everything in the vhost — queues (with their messages),
    /// exchanges, bindings, policies and operator policies — from memory
    /// and the store, as
    /// the vhost itself is deleted.
    pub(super) fn delete_contents(&self, by: &str) -> AmqpResult<()> {
        let mut topology = self.topology.lock();
        for q in self.queues() {
            let _ = q.delete(false, false);
            let _ = self.remove_queue_locked(&mut topology, &q, by)?;
        }
        for x in self.exchanges() {
            let name = x.name.as_str();
            if name.is_empty() || name.starts_with("amq.") || x.is_deleted() {
                continue;
            }
            let _ = self.remove_exchange_locked(&mut topology, &x, by)?;
        }
        let policies = std::mem::take(&mut *self.policies.write());
        for p in policies {
            self.store()
                .delete_policy(&self.name, p.name())
                .map_err(|e| AmqpError::internal_error(format!("cannot delete a policy: {e}")))?;
        }
        let operator_policies = std::mem::take(&mut *self.operator_policies.write());
        for p in operator_policies {
            self.store()
                .delete_operator_policy(&self.name, p.name())
                .map_err(|e| AmqpError::internal_error(format!("cannot delete a policy: {e}")))?;
        }
        Ok(())
    }

    /// Delete a queue whose `x-expires` ran out, if it is still unused.
    pub fn expire_queue(&self, queue: &Arc<Queue>) {
        let mut topology = self.topology.lock();
        if queue.is_expired_unused(crate::queue::now_ms()) {
            let _ = queue.delete(false, false);
            if let Err(e) = self.remove_queue_locked(&mut topology, queue, INTERNAL_USER) {
                tracing::error!(queue = %queue.config.name, "x-expires: {}", e.reply_text());
            }
        }
    }
}

fn default_exchange_refusal() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}
