//! One AMQP channel: the state machine behind every class except
//! `connection`.
//!
//! A channel is owned by its connection's reader task and driven one frame
//! at a time; it never blocks and never awaits. Replies are appended to the
//! connection's outbox. The parts queues need (delivery tags, the unacked
//! ledger, consumers) live in the shared [`Deliveries`]; publisher confirms
//! and transactions live here. Errors are returned as [`AmqpError`]s for
//! the connection to turn into `channel.close` or `connection.close`.
//!
//! This file holds the channel's state (the [`Channel`] struct, in one
//! place), the frame entry points, the dispatch of each method to its class
//! (with the small `channel`, `access` and `confirm.select` methods handled
//! inline) and `close`. Each class has its own file: `exchange`
//! (exchange.*), `queue` (queue.*), `basic` (qos, consumers, get, settling
//! deliveries, recover), `publish` (the publish path and publisher
//! confirms) and `tx` (transactions).

mod basic;
mod exchange;
mod publish;
mod queue;
mod tx;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, channel, confirm};
use amq_protocol::types::ShortString;
use bytes::Bytes;

use self::tx::Transaction;
use super::assembler::Assembler;
use super::confirms::ConfirmTracker;
use super::deliveries::{ConsumerLink, Deliveries, Unacked};
use super::session::Session;
use crate::broker::events::channel_pid;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::Exchange;
use crate::queue::{Queue, Return};

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
    /// The enqueue spans of traced messages among them, ended with their
    /// confirm.
    awaiting_flush_spans: Vec<tracing::Span>,
    tx: Option<Transaction>,
    /// The last queue declared on this channel: empty queue names refer to it.
    last_queue: Option<ShortString>,
    routed: Vec<Arc<Queue>>,
    /// The hidden queue behind this channel's direct reply-to consumer.
    reply_queue: Option<Arc<Queue>>,
    /// The exchange this channel last published to, found and checked
    /// (not internal, write permission) under this permissions generation,
    /// and whether its routing keys need topic permission checks. A stream
    /// of publishes to one exchange skips the name lookup and the
    /// permission check until the exchange is deleted or permissions change.
    publish_target: Option<(Arc<Exchange>, u64, bool)>,
    /// The queue this channel last reached through the default exchange: a
    /// stream of publishes to one queue skips the vhost's queue table (a
    /// shared lock and a hash per message) until that queue is deleted.
    default_target: Option<Arc<Queue>>,
    /// Publishes not yet added to their exchange's stats.
    exchange_tally: publish::ExchangeTally,
}

/// The pseudo-queue of direct reply-to (RPC without a reply queue).
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl Channel {
    pub fn new(id: u16, s: &Session) -> Channel {
        Channel {
            id,
            deliveries: Deliveries::new(
                id,
                s.connection_id,
                s.outbox.clone(),
                s.frame_max,
                s.broker.clone(),
                s.vhost.clone(),
                s.cancel_notify,
            ),
            assembler: Assembler::default(),
            consumer_prefetch: 0,
            confirms: None,
            awaiting_flush: Vec::new(),
            awaiting_flush_spans: Vec::new(),
            tx: None,
            last_queue: None,
            routed: Vec::new(),
            reply_queue: None,
            publish_target: None,
            default_target: None,
            exchange_tally: Default::default(),
        }
    }

    /// Handle a method frame addressed to this (open) channel.
    pub fn handle_method(&mut self, s: &Session, method: AMQPClass) -> AmqpResult<()> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let result = match method {
            AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(p)) => {
                self.assembler.start(p)
            }
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
                    let tracker = ConfirmTracker::new(
                        self.id,
                        s.outbox.clone(),
                        s.broker.clone(),
                        self.deliveries.clone(),
                    );
                    let _ = self
                        .deliveries
                        .status
                        .confirms
                        .set(Arc::downgrade(&tracker));
                    self.confirms = Some(tracker);
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

    /// Empty queue names mean "the last queue declared on this channel".
    fn queue_name(&self, name: ShortString) -> AmqpResult<ShortString> {
        if !name.as_str().is_empty() {
            return Ok(name);
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// Whether one of this channel's consumers reads from `queue`.
    pub fn consumes_from(&self, queue: &Arc<Queue>) -> bool {
        let ledger = self.deliveries.ledger.lock();
        ledger
            .consumers
            .values()
            .any(|c| Arc::ptr_eq(&c.queue, queue))
    }

    fn poke_queues(&self) {
        for q in self.deliveries.consumed_queues() {
            q.dispatch();
        }
    }

    /// After settles: capacity freed may unblock any queue this channel
    /// consumes from when a channel-wide limit held deliveries back.
    fn poke_queues_if_global_prefetch(&self) {
        if self.deliveries.has_global_prefetch() || self.deliveries.take_capped() {
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
        let mut taken: Vec<(u64, Unacked)> = self.deliveries.ledger.lock().take_all();
        self.deliveries.tx_bytes.store(0, Ordering::Relaxed);
        if let Some(tx) = self.tx.take() {
            for (_, t) in tx.settles {
                taken.extend(t);
            }
            taken.sort_unstable_by_key(|(tag, _)| *tag);
        }
        self.apply_settle_requeue(taken);
        let links: Vec<(ShortString, ConsumerLink)> =
            self.deliveries.ledger.lock().consumers.drain().collect();
        for (tag, link) in links {
            s.broker.metrics.consumers.decrement(1.0);
            let pid = channel_pid(&s.broker.node_name, s.connection_id, self.id);
            s.broker
                .events
                .consumer_deleted(&link.queue, tag.as_str(), &pid, &s.user);
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

fn server_only() -> AmqpError {
    AmqpError::command_invalid("unimplemented method")
}
