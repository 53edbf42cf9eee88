//! The `basic` class apart from publishing: `basic.qos`, consumers
//! (`consume`, `cancel`, and the direct reply-to consumer), `basic.get`,
//! settling deliveries (`ack`, `nack`, `reject`, in runs per queue) and
//! `recover`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;

use super::{Channel, REPLY_TO, server_only};
use crate::amqp::channel_status::ChannelEvent;
use crate::amqp::codec;
use crate::amqp::deliveries::{ConsumerLink, Unacked};
use crate::amqp::session::Session;
use crate::broker::auth::Access;
use crate::broker::events::channel_pid;
use crate::error::{AmqpError, AmqpResult};
use crate::fields::generated_name;
use crate::metrics::MessageEvent;
use crate::queue::{Consumer, ConsumerId, Queue, Return};
use crate::telemetry::{self, spans};

/// What to do with deliveries being settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settle {
    Ack,
    Requeue,
    Discard,
}

impl Channel {
    pub(super) fn basic_method(&mut self, s: &Session, m: basic::AMQPMethod) -> AmqpResult<()> {
        use basic::AMQPMethod as M;
        match m {
            M::Qos(q) => {
                if q.global {
                    self.deliveries.set_global_prefetch(q.prefetch_count);
                    self.poke_queues();
                } else {
                    self.consumer_prefetch = q.prefetch_count;
                    self.deliveries
                        .status
                        .prefetch_count
                        .store(q.prefetch_count, Ordering::Relaxed);
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
                if queue.stream.is_some() {
                    return Err(AmqpError::not_implemented(format!(
                        "basic.get not supported by stream queues {}",
                        queue.described()
                    )));
                }
                let deliveries = &self.deliveries;
                // A paused queue delivers nothing, to consumers or to get.
                let found = !queue.is_paused()
                    && queue.get(g.no_ack, |m, left| {
                        deliveries.deliver_get(&queue, m, g.no_ack, left)
                    });
                if !found {
                    s.broker.metrics.count(MessageEvent::GetEmpty, 1);
                    self.deliveries.status.count(ChannelEvent::GetEmpty, 1);
                    s.reply(self.id, AMQPClass::Basic(M::GetEmpty(basic::GetEmpty {})));
                }
            }
            M::Ack(a) => self.settle(s, a.delivery_tag, a.multiple, Settle::Ack, "ack")?,
            M::Nack(n) => {
                let how = requeue_or_discard(n.requeue);
                self.settle(s, n.delivery_tag, n.multiple, how, "nack")?
            }
            M::Reject(r) => {
                let how = requeue_or_discard(r.requeue);
                self.settle(s, r.delivery_tag, false, how, "reject")?
            }
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
        // What the event says of it, before the queue takes it.
        let announced = s.broker.events.is_on().then(|| consumer.describe());
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
        if let Some(c) = announced {
            let pid = channel_pid(&s.broker.node_name, s.connection_id, self.id);
            s.broker.events.consumer_created(&queue, &c, &pid, &s.user);
        }
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
            let pid = channel_pid(&s.broker.node_name, s.connection_id, self.id);
            s.broker
                .events
                .consumer_deleted(&link.queue, tag.as_str(), &pid, &s.user);
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
            return Ok(ledger.take_all());
        }
        if !ledger.contains(tag) {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {tag}"
            )));
        }
        if multiple {
            Ok(ledger.take_through(tag))
        } else {
            Ok(ledger.take(tag).map(|u| vec![(tag, u)]).unwrap_or_default())
        }
    }

    /// `basic.ack`, `basic.nack` or `basic.reject` (`method`).
    fn settle(
        &mut self,
        s: &Session,
        tag: u64,
        multiple: bool,
        how: Settle,
        method: &'static str,
    ) -> AmqpResult<()> {
        if how != Settle::Ack {
            let stream = self.deliveries.ledger.lock().stream_among(tag, multiple);
            if let Some(q) = stream {
                return Err(AmqpError::not_implemented(format!(
                    "basic.nack and basic.reject not supported by stream queues {q}"
                )));
            }
        }
        let taken = self.take_unacked(tag, multiple)?;
        if telemetry::enabled() {
            let requeue = (how != Settle::Ack).then_some(how == Settle::Requeue);
            for (tag, u) in &taken {
                let properties = &u.message.message.properties;
                spans::settle(properties, method, u.queue.name(), *tag, requeue);
            }
        }
        if let Some(tx) = self.tx.as_mut() {
            let bytes: u64 = taken
                .iter()
                .map(|(_, u)| u.message.message.body_size() as u64)
                .sum();
            self.deliveries.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
            if how == Settle::Ack {
                let acks = &self.deliveries.status.acks_uncommitted;
                acks.fetch_add(taken.len() as u64, Ordering::Relaxed);
            }
            tx.settles.push((how, taken));
            self.check_transaction_size(s)?;
            return Ok(());
        }
        self.apply_settle(s, how, taken);
        Ok(())
    }

    pub(super) fn apply_settle(&self, s: &Session, how: Settle, taken: Vec<(u64, Unacked)>) {
        if how == Settle::Ack {
            s.broker
                .metrics
                .count(MessageEvent::Acknowledged, taken.len() as u64);
            self.deliveries
                .status
                .count(ChannelEvent::Ack, taken.len() as u64);
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
        let stream = self.deliveries.ledger.lock().stream_among(0, true);
        if let Some(q) = stream {
            return Err(AmqpError::not_implemented(format!(
                "basic.recover not supported by stream queues {q}"
            )));
        }
        let taken: Vec<(u64, Unacked)> = self.deliveries.ledger.lock().take_all();
        for (_, u) in taken {
            u.queue
                .requeue(u.consumer, vec![u.message], Return::Returned);
        }
        Ok(())
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
