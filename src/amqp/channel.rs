//! One AMQP channel: the state machine behind every class except
//! `connection`.
//!
//! A channel is owned by its connection's reader task and driven one frame
//! at a time; it never blocks and never awaits. Replies are appended to the
//! connection's outbox. The parts queues need (delivery tags, the unacked
//! ledger, consumers) live in the shared [`Deliveries`]; publisher confirms
//! and transactions live here. Errors are returned as [`AmqpError`]s for
//! the connection to turn into `channel.close` or `connection.close`.

use std::sync::Arc;

use amq_protocol::protocol::{
    AMQPClass, BasicProperties, basic, channel, confirm, exchange, queue, tx,
};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::Bytes;

use super::assembler::{Assembler, Content};
use super::codec;
use super::confirms::ConfirmTracker;
use super::deliveries::{ConsumerLink, Deliveries, Unacked};
use super::properties;
use super::session::Session;
use crate::broker::auth::Access;
use crate::broker::enqueue::{Routed, enqueue};
use crate::broker::vhost::{Durability, ExchangeDeclare, QueueDeclare};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Exchange, RouteHeaders};
use crate::fields::generated_name;
use crate::message::{self, Message};
use crate::metrics::MessageEvent;
use crate::queue::{Consumer, ConsumerId, Queue, Return};

/// A publish that has been validated and is ready to route.
#[derive(Debug)]
struct Routable {
    message: Arc<Message>,
    exchange: Arc<Exchange>,
    /// Routing keys from `CC`/`BCC`, besides the message's own.
    extra_keys: Vec<ShortString>,
    /// The header table, if publishing had to decode the properties;
    /// otherwise it is decoded from the message only if a headers exchange
    /// asks.
    decoded_headers: Option<Option<FieldTable>>,
    mandatory: bool,
}

/// What to do with deliveries being settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    Discard,
}

/// Work buffered by `tx.select` until `tx.commit`.
#[derive(Debug, Default)]
struct Transaction {
    publishes: Vec<Routable>,
    settles: Vec<(Settle, Vec<(u64, Unacked)>)>,
}

#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    pub deliveries: Arc<Deliveries>,
    assembler: Assembler,
    /// `basic.qos` prefetch for consumers created from now on.
    consumer_prefetch: u16,
    confirms: Option<Arc<ConfirmTracker>>,
    /// Confirm sequence numbers published in this read batch that wait for
    /// the store's next flush.
    awaiting_flush: Vec<u64>,
    tx: Option<Transaction>,
    /// The last queue declared on this channel: empty queue names refer to it.
    last_queue: Option<ShortString>,
    routed: Vec<Arc<Queue>>,
    /// The hidden queue behind this channel's direct reply-to consumer.
    reply_queue: Option<Arc<Queue>>,
    /// The exchange this channel last published to, found and checked
    /// (not internal, write permission) under this permissions generation.
    /// A stream of publishes to one exchange skips the name lookup and the
    /// permission check until the exchange is deleted or permissions change.
    publish_target: Option<(Arc<Exchange>, u64)>,
    /// The queue this channel last reached through the default exchange: a
    /// stream of publishes to one queue skips the vhost's queue table (a
    /// shared lock and a hash per message) until that queue is deleted.
    default_target: Option<Arc<Queue>>,
}

/// The pseudo-queue of direct reply-to (RPC without a reply queue).
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl Channel {
    pub fn new(id: u16, s: &Session) -> Channel {
        Channel {
            id,
            deliveries: Deliveries::new(
                id,
                s.outbox.clone(),
                s.frame_max,
                s.broker.clone(),
                s.cancel_notify,
            ),
            assembler: Assembler::default(),
            consumer_prefetch: 0,
            confirms: None,
            awaiting_flush: Vec::new(),
            tx: None,
            last_queue: None,
            routed: Vec::new(),
            reply_queue: None,
            publish_target: None,
            default_target: None,
        }
    }

    /// Handle a method frame addressed to this (open) channel.
    pub fn handle_method(&mut self, s: &Session, method: AMQPClass) -> AmqpResult<()> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let result = match method {
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => self.assembler.start(p),
            other => self
                .assembler
                .expect_method()
                .and_then(|()| self.dispatch(s, other)),
        };
        result.map_err(|e| e.caused_by(class_id, method_id))
    }

    pub fn handle_header(
        &mut self,
        s: &Session,
        class_id: u16,
        body_size: u64,
        properties: Bytes,
    ) -> AmqpResult<()> {
        let max = s.broker.config.limits.max_message_size;
        match self
            .assembler
            .header(class_id, body_size, properties, max)?
        {
            Some(content) => self.publish(s, content).map_err(|e| e.caused_by(60, 40)),
            None => Ok(()),
        }
    }

    pub fn handle_body(&mut self, s: &Session, payload: Bytes) -> AmqpResult<()> {
        match self.assembler.body(payload)? {
            Some(content) => self.publish(s, content).map_err(|e| e.caused_by(60, 40)),
            None => Ok(()),
        }
    }

    fn dispatch(&mut self, s: &Session, method: AMQPClass) -> AmqpResult<()> {
        use AMQPClass as C;
        match method {
            C::Channel(channel::AMQPMethod::Open(_)) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            C::Channel(channel::AMQPMethod::Flow(f)) => {
                self.deliveries.set_flow(f.active);
                s.reply(
                    self.id,
                    C::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
                if f.active {
                    self.poke_queues();
                }
                Ok(())
            }
            C::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            C::Access(_) => {
                s.reply(
                    self.id,
                    C::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                        amq_protocol::protocol::access::RequestOk {},
                    )),
                );
                Ok(())
            }
            C::Exchange(m) => self.exchange_method(s, m),
            C::Queue(m) => self.queue_method(s, m),
            C::Basic(m) => self.basic_method(s, m),
            C::Confirm(confirm::AMQPMethod::Select(sel)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                if self.confirms.is_none() {
                    self.confirms = Some(ConfirmTracker::new(
                        self.id,
                        s.outbox.clone(),
                        s.broker.clone(),
                    ));
                }
                if !sel.nowait {
                    s.reply(
                        self.id,
                        C::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            C::Tx(m) => self.tx_method(s, m),
            // Connection methods on a channel, and methods only a server sends.
            _ => Err(server_only()),
        }
    }

    fn exchange_method(&mut self, s: &Session, m: exchange::AMQPMethod) -> AmqpResult<()> {
        use exchange::AMQPMethod as M;
        let reply = |method: M, durability: Durability| {
            s.reply_when_durable(self.id, AMQPClass::Exchange(method), durability)
        };
        match m {
            M::Declare(d) => {
                if !d.passive {
                    s.check(Access::Configure, "exchange", d.exchange.as_str())?;
                }
                let durability = s.vhost.declare_exchange(&ExchangeDeclare {
                    name: d.exchange,
                    kind: d.kind.as_str().to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                })?;
                if !d.nowait {
                    reply(M::DeclareOk(exchange::DeclareOk {}), durability);
                }
            }
            M::Delete(d) => {
                s.check(Access::Configure, "exchange", d.exchange.as_str())?;
                let durability = s.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    reply(M::DeleteOk(exchange::DeleteOk {}), durability);
                }
            }
            M::Bind(b) => {
                s.check(Access::Write, "exchange", b.destination.as_str())?;
                s.check(Access::Read, "exchange", b.source.as_str())?;
                let durability = s.vhost.bind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    reply(M::BindOk(exchange::BindOk {}), durability);
                }
            }
            M::Unbind(b) => {
                s.check(Access::Write, "exchange", b.destination.as_str())?;
                s.check(Access::Read, "exchange", b.source.as_str())?;
                let durability = s.vhost.unbind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    reply(M::UnbindOk(exchange::UnbindOk {}), durability);
                }
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }

    /// Empty queue names mean "the last queue declared on this channel".
    fn queue_name(&self, name: ShortString) -> AmqpResult<ShortString> {
        if !name.as_str().is_empty() {
            return Ok(name);
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    fn queue_method(&mut self, s: &Session, m: queue::AMQPMethod) -> AmqpResult<()> {
        use queue::AMQPMethod as M;
        match m {
            M::Declare(d) => {
                // An empty name declares a server-named queue, or (passive)
                // refers to the channel's last queue.
                let name = if d.queue.as_str().is_empty() && !d.passive {
                    d.queue
                } else {
                    self.queue_name(d.queue)?
                };
                if d.passive && name.as_str() == REPLY_TO {
                    let consumers = self.reply_queue.as_ref().map_or(0, |q| q.consumer_count());
                    if !d.nowait {
                        s.reply(
                            self.id,
                            AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                                queue: name,
                                message_count: 0,
                                consumer_count: consumers,
                            })),
                        );
                    }
                    return Ok(());
                }
                if !d.passive {
                    s.check(Access::Configure, "queue", name.as_str())?;
                }
                let (queue, messages, consumers, durability) = s.vhost.declare_queue(
                    s.connection_id,
                    &QueueDeclare {
                        name: name.clone(),
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: d.arguments,
                    },
                )?;
                s.broker.metrics.queues_declared.increment(1);
                let name = queue.config.name.clone();
                self.last_queue = Some(name.clone());
                if !d.nowait {
                    s.reply_when_durable(
                        self.id,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: name,
                            message_count: messages,
                            consumer_count: consumers,
                        })),
                        durability,
                    );
                }
            }
            M::Bind(b) => {
                let name = self.queue_name(b.queue)?;
                let key = self.routing_key_shortcut(b.routing_key, &name);
                s.check(Access::Write, "queue", name.as_str())?;
                s.check(Access::Read, "exchange", b.exchange.as_str())?;
                let durability = s.vhost.bind_queue(
                    s.connection_id,
                    name.as_str(),
                    b.exchange.as_str(),
                    key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    s.reply_when_durable(
                        self.id,
                        AMQPClass::Queue(M::BindOk(queue::BindOk {})),
                        durability,
                    );
                }
            }
            M::Unbind(b) => {
                let name = self.queue_name(b.queue)?;
                let key = self.routing_key_shortcut(b.routing_key, &name);
                s.check(Access::Write, "queue", name.as_str())?;
                s.check(Access::Read, "exchange", b.exchange.as_str())?;
                let durability = s.vhost.unbind_queue(
                    s.connection_id,
                    name.as_str(),
                    b.exchange.as_str(),
                    key.as_str(),
                    &b.arguments,
                )?;
                s.reply_when_durable(
                    self.id,
                    AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})),
                    durability,
                );
            }
            M::Purge(p) => {
                let name = self.queue_name(p.queue)?;
                s.check(Access::Read, "queue", name.as_str())?;
                let count = s.vhost.purge_queue(s.connection_id, name.as_str())?;
                if !p.nowait {
                    s.reply(
                        self.id,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk {
                            message_count: count,
                        })),
                    );
                }
            }
            M::Delete(d) => {
                let name = self.queue_name(d.queue)?;
                s.check(Access::Configure, "queue", name.as_str())?;
                let (count, durability) = s.vhost.delete_queue(
                    s.connection_id,
                    name.as_str(),
                    d.if_unused,
                    d.if_empty,
                )?;
                if !d.nowait {
                    s.reply_when_durable(
                        self.id,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk {
                            message_count: count,
                        })),
                        durability,
                    );
                }
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }

    /// `queue.bind` with an empty queue and routing key binds with the last
    /// declared queue's name as the key, as RabbitMQ does.
    fn routing_key_shortcut(&self, key: ShortString, queue: &ShortString) -> ShortString {
        if key.as_str().is_empty() && self.last_queue.as_ref() == Some(queue) {
            queue.clone()
        } else {
            key
        }
    }

    fn basic_method(&mut self, s: &Session, m: basic::AMQPMethod) -> AmqpResult<()> {
        use basic::AMQPMethod as M;
        match m {
            M::Qos(q) => {
                if q.global {
                    self.deliveries.set_global_prefetch(q.prefetch_count);
                    self.poke_queues();
                } else {
                    self.consumer_prefetch = q.prefetch_count;
                }
                s.reply(self.id, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
            }
            M::Consume(c) => self.consume(s, c)?,
            M::Cancel(c) => {
                self.cancel_consumer(s, &c.consumer_tag);
                if !c.nowait {
                    s.reply(
                        self.id,
                        AMQPClass::Basic(M::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            M::Get(g) => {
                let name = self.queue_name(g.queue)?;
                s.check(Access::Read, "queue", name.as_str())?;
                let queue = s.vhost.queue(s.connection_id, name.as_str())?;
                let deliveries = &self.deliveries;
                let found = queue.get(g.no_ack, |m, left| {
                    deliveries.deliver_get(&queue, m, g.no_ack, left)
                });
                if !found {
                    s.broker.metrics.count(MessageEvent::GetEmpty, 1);
                    s.reply(self.id, AMQPClass::Basic(M::GetEmpty(basic::GetEmpty {})));
                }
            }
            M::Ack(a) => self.settle(s, a.delivery_tag, a.multiple, Settle::Ack)?,
            M::Nack(n) => {
                self.settle(s, n.delivery_tag, n.multiple, requeue_or_discard(n.requeue))?
            }
            M::Reject(r) => self.settle(s, r.delivery_tag, false, requeue_or_discard(r.requeue))?,
            M::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                // recover-ok goes first: clients (lapin) drop what they have
                // buffered when it arrives, so redeliveries must follow it.
                s.reply(self.id, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
                self.recover(r.requeue)?;
            }
            M::RecoverAsync(r) => self.recover(r.requeue)?,
            _ => return Err(server_only()),
        }
        Ok(())
    }

    fn consume(&mut self, s: &Session, c: basic::Consume) -> AmqpResult<()> {
        let name = self.queue_name(c.queue)?;
        let queue = if name.as_str() == REPLY_TO {
            self.reply_consumer_queue(s, c.no_ack)?
        } else {
            s.check(Access::Read, "queue", name.as_str())?;
            s.vhost.queue(s.connection_id, name.as_str())?
        };
        let tag = if c.consumer_tag.as_str().is_empty() {
            ShortString::from(generated_name("amq.ctag-"))
        } else {
            c.consumer_tag
        };
        if self.deliveries.ledger.lock().consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let id: ConsumerId = s.broker.next_id();
        let consumer = Consumer::new(
            id,
            tag.clone(),
            c.no_ack,
            c.exclusive,
            self.consumer_prefetch,
            c.arguments,
            self.deliveries.clone(),
        );
        let deliveries = &self.deliveries;
        let channel = self.id;
        queue.consume(consumer, || {
            let mut ledger = deliveries.ledger.lock();
            ledger.consumers.insert(
                tag.clone(),
                ConsumerLink {
                    id,
                    queue: queue.clone(),
                },
            );
            if !c.nowait {
                let ok = AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.clone(),
                }));
                deliveries
                    .outbox
                    .append(|buf| codec::encode_method(buf, channel, &ok));
            }
        })?;
        s.broker.metrics.consumers.increment(1.0);
        Ok(())
    }

    /// Direct reply-to: consuming from the pseudo-queue creates a hidden,
    /// exclusive, auto-delete queue that replies are routed to by its name
    /// (given to requests as their `reply_to`). It goes with its consumer.
    fn reply_consumer_queue(&mut self, s: &Session, no_ack: bool) -> AmqpResult<Arc<Queue>> {
        if !no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        if self.reply_queue.as_ref().is_some_and(|q| !q.is_deleted()) {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let queue = s.vhost.declare_reply_queue(s.connection_id, REPLY_TO)?;
        self.reply_queue = Some(queue.clone());
        Ok(queue)
    }

    fn cancel_consumer(&mut self, s: &Session, tag: &ShortString) {
        let link = self.deliveries.ledger.lock().consumers.remove(tag);
        if let Some(link) = link {
            s.broker.metrics.consumers.decrement(1.0);
            if link.queue.cancel(link.id).now_unused {
                s.vhost.auto_delete_queue(&link.queue);
            }
        }
    }

    /// Take deliveries out of the ledger, with RabbitMQ's rules: `multiple`
    /// with tag 0 means everything; otherwise the tag must be outstanding.
    fn take_unacked(&self, tag: u64, multiple: bool) -> AmqpResult<Vec<(u64, Unacked)>> {
        let mut ledger = self.deliveries.ledger.lock();
        if multiple && tag == 0 {
            return Ok(std::mem::take(&mut ledger.unacked).into_iter().collect());
        }
        if !ledger.unacked.contains_key(&tag) {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {tag}"
            )));
        }
        if multiple {
            let rest = ledger.unacked.split_off(&(tag + 1));
            Ok(std::mem::replace(&mut ledger.unacked, rest)
                .into_iter()
                .collect())
        } else {
            Ok(ledger
                .unacked
                .remove(&tag)
                .map(|u| vec![(tag, u)])
                .unwrap_or_default())
        }
    }

    fn settle(&mut self, s: &Session, tag: u64, multiple: bool, how: Settle) -> AmqpResult<()> {
        let taken = self.take_unacked(tag, multiple)?;
        if let Some(tx) = self.tx.as_mut() {
            tx.settles.push((how, taken));
            return Ok(());
        }
        self.apply_settle(s, how, taken);
        Ok(())
    }

    fn apply_settle(&self, s: &Session, how: Settle, taken: Vec<(u64, Unacked)>) {
        if how == Settle::Ack {
            s.broker
                .metrics
                .count(MessageEvent::Acknowledged, taken.len() as u64);
        }
        // Hand messages back to their queues in runs, one lock per run.
        let mut run: Vec<crate::queue::QueuedMessage> = Vec::new();
        let mut current: Option<(Arc<Queue>, Option<ConsumerId>)> = None;
        for (_, u) in taken {
            let same = current
                .as_ref()
                .is_some_and(|(q, c)| Arc::ptr_eq(q, &u.queue) && *c == u.consumer);
            if !same {
                if let Some((q, c)) = current.take() {
                    settle_run(&q, c, how, std::mem::take(&mut run));
                }
                current = Some((u.queue.clone(), u.consumer));
            }
            run.push(u.message);
        }
        if let Some((q, c)) = current {
            settle_run(&q, c, how, run);
        }
        // With a channel-wide prefetch, capacity freed here may unblock any
        // queue this channel consumes from.
        self.poke_queues_if_global_prefetch();
    }

    fn recover(&mut self, requeue: bool) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let taken: Vec<(u64, Unacked)> = std::mem::take(&mut self.deliveries.ledger.lock().unacked)
            .into_iter()
            .collect();
        for (_, u) in taken {
            u.queue
                .requeue(u.consumer, vec![u.message], Return::Returned);
        }
        Ok(())
    }

    fn tx_method(&mut self, s: &Session, m: tx::AMQPMethod) -> AmqpResult<()> {
        use tx::AMQPMethod as M;
        match m {
            M::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                self.tx.get_or_insert_with(Transaction::default);
                s.reply(self.id, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
            }
            M::Commit(_) => {
                let tx = self.tx.as_mut().ok_or_else(not_transactional)?;
                let work = std::mem::take(tx);
                let mut durability = Durability::Transient;
                for r in work.publishes {
                    match self.route_and_enqueue(s, r) {
                        Routed::Stored => durability = Durability::Durable,
                        Routed::Failed => {
                            return Err(AmqpError::internal_error(
                                "cannot store a message of the transaction",
                            ));
                        }
                        Routed::InMemory | Routed::Unroutable | Routed::Rejected => {}
                    }
                }
                for (how, taken) in work.settles {
                    self.apply_settle(s, how, taken);
                }
                // Acks of stored messages removed them from the store too;
                // commit-ok promises all of it is durable.
                s.reply_when_durable(
                    self.id,
                    AMQPClass::Tx(M::CommitOk(tx::CommitOk {})),
                    durability,
                );
            }
            M::Rollback(_) => {
                let tx = self.tx.as_mut().ok_or_else(not_transactional)?;
                let work = std::mem::take(tx);
                // Acks inside a rolled-back transaction never happened: the
                // deliveries are outstanding again.
                let mut ledger = self.deliveries.ledger.lock();
                for (_, taken) in work.settles {
                    ledger.unacked.extend(taken);
                }
                drop(ledger);
                s.reply(self.id, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
            }
            _ => return Err(server_only()),
        }
        Ok(())
    }

    /// The exchange a publish names, if this session may publish to it.
    fn publish_target(&mut self, s: &Session, name: &str) -> AmqpResult<Arc<Exchange>> {
        let generation = s.broker.users.generation();
        if let Some((exchange, checked)) = &self.publish_target
            && same_name(exchange.name.as_str(), name)
            && *checked == generation
            && !exchange.is_deleted()
        {
            return Ok(exchange.clone());
        }
        let exchange = s.vhost.existing_exchange(name)?;
        if exchange.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                exchange.name, s.vhost.name
            )));
        }
        s.check(Access::Write, "exchange", exchange.name.as_str())?;
        self.publish_target = Some((exchange.clone(), generation));
        Ok(exchange)
    }

    /// A complete message arrived: validate it, then route it (or hold it
    /// for the transaction).
    fn publish(&mut self, s: &Session, content: Content) -> AmqpResult<()> {
        let Content {
            publish,
            mut properties,
            body,
        } = content;
        s.broker.metrics.count(MessageEvent::Received, 1);
        let exchange = self.publish_target(s, publish.exchange.as_str())?;
        let view = properties::read(&properties).ok_or_else(|| undecodable(&properties))?;
        if let Some(user_id) = view.user_id
            && user_id != s.user
        {
            return Err(AmqpError::precondition_failed(format!(
                "user_id property set to '{user_id}' but authenticated user was '{}'",
                s.user
            )));
        }
        message::validate(view.delivery_mode, view.expiration)
            .map_err(AmqpError::precondition_failed)?;
        let persistent = view.delivery_mode == Some(2);
        let priority = view.priority.unwrap_or(0);
        // Validated above.
        let expiration_ms = view.expiration.and_then(|e| message::expiration_ms(e).ok());
        let fast_reply = view.reply_to == Some(REPLY_TO);
        let sender_selected = view.has_header(&["CC", "BCC"]);
        let mut extra_keys = Vec::new();
        let decoded_headers = if fast_reply || sender_selected {
            Some(self.rewrite_properties(&mut properties, fast_reply, &mut extra_keys)?)
        } else {
            None
        };
        let message = Arc::new(Message {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            persistent,
            priority,
            expiration_ms,
            properties,
            body,
        });
        let routable = Routable {
            message,
            exchange,
            extra_keys,
            decoded_headers,
            mandatory: publish.mandatory,
        };
        match self.tx.as_mut() {
            Some(tx) => tx.publishes.push(routable),
            None => {
                self.route_and_enqueue(s, routable);
            }
        }
        Ok(())
    }

    /// The rare publishes whose properties must be decoded and changed: a
    /// fast reply (`reply-to` names this channel's hidden reply queue
    /// instead) and `CC`/`BCC` (more routing keys; `BCC` is removed). Returns
    /// the header table, for routing.
    fn rewrite_properties(
        &self,
        properties: &mut Bytes,
        fast_reply: bool,
        keys: &mut Vec<ShortString>,
    ) -> AmqpResult<Option<FieldTable>> {
        let mut props = message::parse(properties).ok_or_else(|| undecodable(properties))?;
        if fast_reply {
            let queue = self
                .reply_queue
                .as_ref()
                .filter(|q| !q.is_deleted())
                .ok_or_else(|| {
                    AmqpError::precondition_failed("fast reply consumer does not exist")
                })?;
            props = props.with_reply_to(queue.config.name.clone());
            *properties = message::encode(&props);
        }
        if let Some(headers) = props.headers() {
            let sender_selected = |name: &'static str| {
                message::header_routing_keys(headers, name).map_err(|ty| {
                    AmqpError::precondition_failed(format!(
                        "invalid message: {{unacceptable_type_in_header,\"{name}\",{ty}}}"
                    ))
                })
            };
            for key in sender_selected("CC")? {
                keys.push(key.into());
            }
            let bcc = sender_selected("BCC")?;
            if !bcc.is_empty() {
                keys.extend(bcc.into_iter().map(ShortString::from));
                let headers = headers.clone();
                props = strip_header(props, &headers, "BCC");
                *properties = message::encode(&props);
            }
        }
        Ok(props.headers().clone())
    }

    fn route_and_enqueue(&mut self, s: &Session, r: Routable) -> Routed {
        let seq = self.confirms.as_ref().map(|c| c.next());
        let metrics = &s.broker.metrics;
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        let headers = match r.decoded_headers {
            Some(decoded) => RouteHeaders::decoded(decoded),
            None => RouteHeaders::of_properties(&r.message.properties),
        };
        let key = r.message.routing_key.as_str();
        match (
            r.exchange.is_default(),
            r.extra_keys.is_empty(),
            &self.default_target,
        ) {
            (true, true, Some(q)) if same_name(q.name(), key) && !q.is_deleted() => {
                routed.push(q.clone());
            }
            (true, true, _) => {
                s.vhost.route(&r.exchange, key, &headers, &mut routed);
                self.default_target = routed.first().cloned();
            }
            _ => {
                s.vhost.route(&r.exchange, key, &headers, &mut routed);
                for key in &r.extra_keys {
                    s.vhost
                        .route(&r.exchange, key.as_str(), &headers, &mut routed);
                }
            }
        }
        if !r.extra_keys.is_empty() {
            routed.sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
            routed.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        let outcome = enqueue(s.store(), &r.message, &mut routed);
        self.routed = routed;
        match outcome {
            Routed::Unroutable if r.mandatory => {
                metrics.count(MessageEvent::UnroutableReturned, 1);
                let m = &r.message;
                s.outbox.append(|buf| {
                    codec::encode_return(
                        buf,
                        self.id,
                        312,
                        "NO_ROUTE",
                        m.exchange.as_str(),
                        m.routing_key.as_str(),
                    );
                    codec::encode_content(buf, self.id, &m.properties, &m.body, s.frame_max);
                });
            }
            Routed::Unroutable => metrics.count(MessageEvent::UnroutableDropped, 1),
            _ => metrics.count(MessageEvent::Routed, 1),
        }
        if let (Some(seq), Some(c)) = (seq, self.confirms.as_ref()) {
            metrics.count(MessageEvent::ReceivedConfirm, 1);
            match outcome {
                Routed::Stored => {
                    c.hold(seq);
                    self.awaiting_flush.push(seq);
                }
                Routed::Failed | Routed::Rejected => c.nack(seq),
                Routed::InMemory | Routed::Unroutable => {}
            }
        }
        outcome
    }

    /// Send the publisher confirms accumulated during a read batch: those
    /// settled now go out at once (coalesced), those waiting for the store
    /// go out when the group commit that covers them completes.
    pub fn flush_confirms(&mut self, s: &Session) {
        let Some(tracker) = self.confirms.as_ref() else {
            return;
        };
        if !self.awaiting_flush.is_empty() {
            let seqs = std::mem::take(&mut self.awaiting_flush);
            let t = tracker.clone();
            s.store().after_flush(Box::new(move |result| {
                t.settle(&seqs, result.is_ok());
                t.flush();
            }));
        }
        tracker.flush();
    }

    fn poke_queues(&self) {
        for q in self.deliveries.consumed_queues() {
            q.dispatch();
        }
    }

    fn poke_queues_if_global_prefetch(&self) {
        if self.deliveries.has_global_prefetch() {
            self.poke_queues();
        }
    }

    /// Tear the channel down: stop deliveries, requeue everything
    /// unacknowledged (including acks held by an open transaction), then
    /// cancel consumers (deleting auto-delete queues they leave unused).
    /// Requeueing first means a consumer taking over (single active
    /// consumer) gets the returned messages before newer ones.
    pub fn close(&mut self, s: &Session) {
        self.deliveries.close();
        if let Some(c) = &self.confirms {
            c.close();
        }
        let mut taken: Vec<(u64, Unacked)> =
            std::mem::take(&mut self.deliveries.ledger.lock().unacked)
                .into_iter()
                .collect();
        if let Some(tx) = self.tx.take() {
            for (_, t) in tx.settles {
                taken.extend(t);
            }
            taken.sort_unstable_by_key(|(tag, _)| *tag);
        }
        self.apply_settle_requeue(taken);
        let links: Vec<(ShortString, ConsumerLink)> =
            self.deliveries.ledger.lock().consumers.drain().collect();
        for (_, link) in links {
            s.broker.metrics.consumers.decrement(1.0);
            if link.queue.cancel(link.id).now_unused {
                s.vhost.auto_delete_queue(&link.queue);
            }
        }
    }

    fn apply_settle_requeue(&self, taken: Vec<(u64, Unacked)>) {
        for (_, u) in taken {
            u.queue
                .requeue(u.consumer, vec![u.message], Return::Returned);
        }
    }
}

fn settle_run(
    queue: &Arc<Queue>,
    consumer: Option<ConsumerId>,
    how: Settle,
    messages: Vec<crate::queue::QueuedMessage>,
) {
    match how {
        Settle::Ack => queue.ack(consumer, messages),
        Settle::Requeue => queue.requeue(consumer, messages, Return::Failed),
        Settle::Discard => queue.discard(consumer, messages),
    }
}

fn requeue_or_discard(requeue: bool) -> Settle {
    if requeue {
        Settle::Requeue
    } else {
        Settle::Discard
    }
}

fn not_transactional() -> AmqpError {
    AmqpError::precondition_failed("channel is not transactional")
}

fn server_only() -> AmqpError {
    AmqpError::command_invalid("unimplemented method")
}

fn undecodable(properties: &[u8]) -> AmqpError {
    AmqpError::frame_error(format!(
        "cannot decode content header properties {}",
        codec::erlang_binary(properties)
    ))
}

/// Remove one header, re-building the table (amq-protocol's FieldTable has
/// no removal).
fn strip_header(props: BasicProperties, headers: &FieldTable, name: &str) -> BasicProperties {
    let kept: std::collections::BTreeMap<ShortString, _> = headers
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != name)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    props.with_headers(FieldTable::from(kept))
}

/// `a == b`, without calling `memcmp` for two empty names. An empty
/// `String` points at address 1, and glibc's AVX-512 `memcmp` does a masked
/// load from it even for length 0; the fault it suppresses costs a microcode
/// assist (~8 % of a 1→1 run publishing to the default exchange).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}
