//! The publish path, from a complete message to its queues: the cached
//! publish target, property checks (`user_id`, delivery mode, expiration),
//! the direct reply-to and `CC`/`BCC` rewrites, routing and enqueueing,
//! mandatory returns, and the bookkeeping of publisher confirms
//! (`confirm.select` itself is handled with the other methods in `mod.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{FieldTable, ShortString};
use bytes::Bytes;

use super::{Channel, REPLY_TO};
use crate::amqp::assembler::Content;
use crate::amqp::channel_status::ChannelEvent;
use crate::amqp::codec;
use crate::amqp::properties;
use crate::amqp::session::Session;
use crate::broker::auth::Access;
use crate::broker::enqueue::{Routed, enqueue, enqueue_each};
use crate::broker::firehose::{self, Tracer};
use crate::broker::schemas::SchemaSite;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::delayed::OnUnroutable;
use crate::exchange::{Exchange, ExchangeKind, RouteHeaders};
use crate::message::{self, Message};
use crate::metrics::MessageEvent;
use crate::queue::Queue;
use crate::telemetry::{self, spans};

/// A publish that has been validated and is ready to route.
#[derive(Debug)]
pub(super) struct Routable {
    message: Arc<Message>,
    exchange: Arc<Exchange>,
    /// Routing keys from `CC`/`BCC`, besides the message's own.
    extra_keys: Vec<ShortString>,
    /// The header table, if publishing had to decode the properties;
    /// otherwise it is decoded from the message only if a headers exchange
    /// asks.
    decoded_headers: Option<Option<FieldTable>>,
    mandatory: bool,
    /// The receive span, if the message is traced.
    trace: Option<spans::Receive>,
}

impl Channel {
    /// The exchange a publish names, if this session may publish to it,
    /// and whether its routing keys need a topic permission check (a topic
    /// exchange, for a user with topic permissions in this vhost).
    fn publish_target(&mut self, s: &Session, name: &str) -> AmqpResult<(Arc<Exchange>, bool)> {
        let generation = s.broker.users.generation();
        if let Some((exchange, checked, topic)) = &self.publish_target
            && same_name(exchange.name.as_str(), name)
            && *checked == generation
            && !exchange.is_deleted()
        {
            return Ok((exchange.clone(), *topic));
        }
        // As RabbitMQ: the write permission first, then whether it exists.
        s.check(Access::Write, "exchange", name)?;
        let exchange = s.vhost.existing_exchange(name)?;
        if exchange.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                exchange.name, s.vhost.name
            )));
        }
        let topic = exchange.kind == ExchangeKind::Topic
            && s.broker.users.has_topic_permissions(&s.user, &s.vhost.name);
        self.publish_target = Some((exchange.clone(), generation, topic));
        Ok((exchange, topic))
    }

    /// A complete message arrived: validate it, then route it (or hold it
    /// for the transaction).
    pub(super) fn publish(&mut self, s: &Session, content: Content) -> AmqpResult<()> {
        let Content {
            publish,
            mut properties,
            body,
        } = content;
        s.broker.metrics.count(MessageEvent::Received, 1);
        s.broker.metrics.message_size(body.len() as u64);
        self.deliveries.status.count(ChannelEvent::Publish, 1);
        let (exchange, topic_checked) = self.publish_target(s, publish.exchange.as_str())?;
        let trace = if telemetry::enabled() {
            spans::receive(
                &mut properties,
                publish.exchange.as_str(),
                publish.routing_key.as_str(),
                &s.vhost.name,
                body.len(),
                s.peer,
            )
        } else {
            None
        };
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
        if topic_checked {
            for key in std::iter::once(&publish.routing_key).chain(&extra_keys) {
                s.check_topic(&exchange, Access::Write, key.as_str())?;
            }
        }
        let message = Arc::new(Message {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            persistent,
            priority,
            expiration_ms,
            received_ms: s.received_ms(),
            properties,
            body,
        });
        let routable = Routable {
            message,
            exchange,
            extra_keys,
            decoded_headers,
            mandatory: publish.mandatory,
            trace,
        };
        match self.tx.as_mut() {
            Some(tx) => {
                let bytes = routable.message.body_size() as u64;
                self.deliveries.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
                let held = &self.deliveries.status.uncommitted;
                held.fetch_add(1, Ordering::Relaxed);
                tx.publishes.push(routable);
                self.check_transaction_size(s)?;
            }
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

    pub(super) fn route_and_enqueue(&mut self, s: &Session, r: Routable) -> Routed {
        let seq = self.confirms.as_ref().map(|c| c.next());
        let metrics = &s.broker.metrics;
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        let headers = match r.decoded_headers {
            Some(decoded) => RouteHeaders::decoded(decoded).with_properties(&r.message.properties),
            None => RouteHeaders::of_properties(&r.message.properties),
        };
        // An exchange bound to a schema refuses what does not match (the
        // publisher is nacked).
        let invalid = r.exchange.schema_rule().is_some_and(|rule| {
            !s.broker.enforce_schema(
                &s.vhost.name,
                SchemaSite::Exchange(r.exchange.name.as_str()),
                &rule,
                &r.message,
            )
        });
        // An exchange with x-message-deduplication drops a duplicate (it is
        // still confirmed).
        let duplicate = !invalid
            && r.exchange
                .dedup
                .as_ref()
                .is_some_and(|d| d.is_duplicate(&r.message, s.received_ms()));
        // A delayed-message exchange holds a message with an x-delay.
        // A mandatory one that routes nowhere at its time is returned then,
        // if its channel is still open.
        let held = if invalid {
            Some(Routed::Rejected)
        } else if duplicate {
            Some(Routed::InMemory)
        } else {
            s.broker
                .hold_delayed(&r.exchange, &r.message, &headers, s.received_ms(), || {
                    r.mandatory.then(|| {
                        let channel = Arc::downgrade(&self.deliveries);
                        Box::new(move |m: &Arc<Message>| {
                            if let Some(d) = channel.upgrade() {
                                d.return_unroutable(m);
                            }
                        }) as OnUnroutable
                    })
                })
        };
        let outcome = if let Some(outcome) = held {
            outcome
        } else {
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
            if s.vhost.is_tracing() {
                trace_publish(s, self.id, &r.message, &r.extra_keys, &routed);
            }
            match &r.trace {
                None => enqueue(&r.message, &mut routed, &mut s.in_flow.borrow_mut()),
                Some(trace) => {
                    self.enqueue_traced(s, trace, &r.message, &mut routed, seq.is_some())
                }
            }
        };
        if outcome == Routed::Stored {
            s.stored.set(true);
        }
        self.routed = routed;
        self.exchange_tally
            .note(&r.exchange, !matches!(outcome, Routed::Unroutable));
        match outcome {
            Routed::Unroutable if r.mandatory => {
                // Written with the batch's other replies (flushed after it).
                self.deliveries.count_return();
                s.outbox
                    .append(|buf| self.deliveries.encode_return(buf, &r.message));
            }
            Routed::Unroutable => {
                metrics.count(MessageEvent::UnroutableDropped, 1);
                self.deliveries
                    .status
                    .count(ChannelEvent::DropUnroutable, 1);
            }
            _ => metrics.count(MessageEvent::Routed, 1),
        }
        if let (Some(seq), Some(c)) = (seq, self.confirms.as_ref()) {
            metrics.count(MessageEvent::ReceivedConfirm, 1);
            match outcome {
                Routed::Stored => {
                    // Held since `next`, until the group commit.
                    self.awaiting_flush.push(seq);
                }
                Routed::Failed | Routed::Rejected => c.nack(seq),
                Routed::InMemory | Routed::Unroutable => c.release(seq),
            }
        }
        outcome
    }

    /// Enqueue a traced message: a span per queue, and the queues on the
    /// receive span. The spans of persisted messages under confirms end
    /// when their confirm goes out.
    fn enqueue_traced(
        &mut self,
        s: &Session,
        trace: &spans::Receive,
        message: &Arc<Message>,
        routed: &mut Vec<Arc<Queue>>,
        confirming: bool,
    ) -> Routed {
        let mut names = Vec::with_capacity(routed.len());
        let mut in_flow = s.in_flow.borrow_mut();
        let outcome = enqueue_each(message, routed, &mut in_flow, |q, this| {
            names.push(q.name().to_string());
            let span = trace.enqueue(q.name(), this == Routed::Stored, this.as_str());
            if confirming && this == Routed::Stored {
                self.awaiting_flush_spans.push(span);
            }
        });
        let refused = match outcome {
            Routed::Rejected => Some("a full queue rejected the message (reject-publish)"),
            Routed::Failed => Some("the store could not write the message"),
            _ => None,
        };
        trace.routed(&names, refused);
        outcome
    }

    /// Send the publisher confirms accumulated during a read batch: those
    /// settled now go out at once (coalesced), those waiting for the store
    /// go out when the group commit that covers them completes.
    pub fn flush_confirms(&mut self, s: &Session) {
        self.exchange_tally.flush();
        let Some(tracker) = self.confirms.as_ref() else {
            return;
        };
        if !self.awaiting_flush.is_empty() {
            let seqs = std::mem::take(&mut self.awaiting_flush);
            let spans = std::mem::take(&mut self.awaiting_flush_spans);
            let t = tracker.clone();
            s.store().after_flush(Box::new(move |result| {
                t.settle(&seqs, result.is_ok());
                t.flush();
                spans::confirmed(spans, result.is_ok());
            }));
        }
        tracker.flush();
    }
}

/// A firehose copy of a publish, naming the queues it reached.
fn trace_publish(
    s: &Session,
    channel: u16,
    m: &Message,
    extra_keys: &[ShortString],
    routed: &[Arc<Queue>],
) {
    // Copies of copies would never end.
    if m.exchange.as_str() == firehose::EXCHANGE {
        return;
    }
    let keys: Vec<&str> = std::iter::once(m.routing_key.as_str())
        .chain(extra_keys.iter().map(|k| k.as_str()))
        .collect();
    let Some(conn) = s.broker.connection(s.connection_id) else {
        return;
    };
    let queues: Vec<&str> = routed.iter().map(|q| q.name()).collect();
    let by = Tracer {
        connection: &conn.details.name,
        channel,
        user: &s.user,
    };
    s.broker
        .events
        .trace_publish(&s.vhost.name, m, &keys, &queues, by);
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

/// Messages this channel published to one exchange, added to the
/// exchange's stats once per read batch: every publisher shares the
/// exchange, so its counters are a contended cache line.
#[derive(Debug, Default)]
pub(super) struct ExchangeTally {
    exchange: Option<Arc<Exchange>>,
    published: u64,
    routed: u64,
}

impl ExchangeTally {
    fn note(&mut self, exchange: &Arc<Exchange>, routed: bool) {
        if !self
            .exchange
            .as_ref()
            .is_some_and(|e| Arc::ptr_eq(e, exchange))
        {
            self.flush();
            self.exchange = Some(exchange.clone());
        }
        self.published += 1;
        self.routed += u64::from(routed);
    }

    pub(super) fn flush(&mut self) {
        if let Some(e) = self.exchange.take() {
            e.stats.add(crate::exchange::PUBLISH_IN, self.published);
            e.stats.add(crate::exchange::PUBLISH_OUT, self.routed);
        }
        self.published = 0;
        self.routed = 0;
    }
}
