//! The spans of one message's way through the broker, after the
//! OpenTelemetry messaging conventions for RabbitMQ
//! (`messaging.system = rabbitmq`, `messaging.destination.name`,
//! `messaging.rabbitmq.destination.routing_key`,
//! `messaging.rabbitmq.message.delivery_tag`); what the conventions do not
//! name is under `warren.*`.
//!
//! | span | kind | parent | when |
//! |---|---|---|---|
//! | `receive {exchange}` | consumer | the message's context | routed (`warren.routed_queues`, `warren.unroutable`) |
//! | `enqueue {queue}` | internal | receive | in the queue; a persisted message under confirms ends at its confirm |
//! | `deliver {queue}` / `get {queue}` | producer | the message's context | sent to a consumer (`warren.queue.wait_ms`) |
//! | `ack` / `nack` / `reject {queue}` | server | the message's context | settled by its consumer |
//! | `dead-letter {queue}` | internal | the message's context | dead-lettered (`warren.dead_letter.reason`) |
//! | `expire {queue}` | internal | the message's context | its TTL ran out |
//!
//! A message's context is read from its headers at each step rather than
//! kept beside it, so tracing costs no memory per queued message.

use std::collections::HashMap;
use std::net::SocketAddr;

use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::Bytes;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Array, Context, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TARGET;
use crate::message;

const TRACEPARENT: &str = "traceparent";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The sampled trace context a message's headers carry, if any. Only
/// properties that contain the bytes `traceparent` are decoded.
pub fn context_of(properties: &[u8]) -> Option<Context> {
    memchr::memmem::find(properties, TRACEPARENT.as_bytes())?;
    let props = message::parse(properties)?;
    let headers = props.headers().as_ref()?;
    let cx = TraceContextPropagator::new().extract(&HeaderText(headers));
    let sampled = {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid() && sc.is_sampled()
    };
    sampled.then_some(cx)
}

/// Header values as the propagator reads them (text headers only).
struct HeaderText<'a>(&'a FieldTable);

impl Extractor for HeaderText<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// The exchange as spans name it (the default exchange has no name).
fn exchange_name(name: &str) -> &str {
    if name.is_empty() { "amq.default" } else { name }
}

/// What a traced publish records while it is routed.
#[derive(Debug)]
pub struct Receive {
    pub span: Span,
}

/// The receive span of a publish, if the message is traced: it carries a
/// sampled context, or it is one of the context-less messages sampled to
/// start a trace — then a `traceparent` naming this span is added to its
/// properties, for the spans after this one and for its consumers.
pub fn receive(
    properties: &mut Bytes,
    exchange: &str,
    routing_key: &str,
    vhost: &str,
    body_size: usize,
    peer: SocketAddr,
) -> Option<Receive> {
    let parent = context_of(properties);
    if parent.is_none() && !super::sample_root() {
        return None;
    }
    let exchange = exchange_name(exchange);
    let span = tracing::info_span!(
        target: TARGET,
        "receive",
        "otel.name" = format!("receive {exchange}"),
        "otel.kind" = "consumer",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "receive",
        "messaging.operation.name" = "publish",
        "messaging.destination.name" = exchange,
        "messaging.rabbitmq.destination.routing_key" = routing_key,
        "messaging.message.body.size" = body_size as i64,
        "network.peer.address" = %peer.ip(),
        "network.peer.port" = i64::from(peer.port()),
        "warren.vhost" = vhost,
    );
    match parent {
        Some(cx) => {
            let _ = span.set_parent(cx);
        }
        None => start_trace(properties, &span),
    }
    Some(Receive { span })
}

/// Add the `traceparent` of `span` to a message's headers.
fn start_trace(properties: &mut Bytes, span: &Span) {
    let Some(props) = message::parse(properties) else {
        return;
    };
    let mut injected = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut injected);
    let mut headers = props.headers().clone().unwrap_or_default();
    for (key, value) in injected.into_iter().filter(|(_, v)| !v.is_empty()) {
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    *properties = message::encode(&props.with_headers(headers));
}

impl Receive {
    /// Routing is done: the queues the message reached, and whether it was
    /// refused (a full queue with `reject-publish`, a failed write).
    pub fn routed(&self, queues: &[String], refused: Option<&str>) {
        let names: Vec<StringValue> = queues.iter().map(|q| q.clone().into()).collect();
        self.span
            .set_attribute("warren.routed_queues", Value::Array(Array::String(names)));
        self.span
            .set_attribute("warren.unroutable", queues.is_empty());
        if let Some(reason) = refused {
            self.span.set_status(Status::error(reason.to_string()));
        }
    }

    /// The span of enqueueing on one queue; it ends when dropped (for a
    /// persisted message under confirms, once the confirm is sent).
    pub fn enqueue(&self, queue: &str, persisted: bool, outcome: &str) -> Span {
        // Parented by context, not as a `tracing` child: a child would hold
        // the receive span open until the confirm.
        let span = tracing::info_span!(
            target: TARGET,
            parent: None,
            "enqueue",
            "otel.name" = format!("enqueue {queue}"),
            "otel.kind" = "internal",
            "messaging.system" = "rabbitmq",
            "messaging.operation.name" = "enqueue",
            "messaging.destination.name" = queue,
            "warren.persisted" = persisted,
            "warren.enqueue.outcome" = outcome,
            "warren.confirmed" = tracing::field::Empty,
        );
        let _ = span.set_parent(self.span.context());
        span
    }
}

/// The confirm of persisted traced messages went out (`stored`: an ack;
/// else a nack): their enqueue spans end.
pub fn confirmed(enqueued: Vec<Span>, stored: bool) {
    for span in enqueued {
        span.record("warren.confirmed", stored);
    }
}

/// A delivery of a traced message to a consumer (`operation` "deliver") or
/// to `basic.get` ("get").
#[derive(Debug)]
pub struct Delivery<'a> {
    pub operation: &'static str,
    pub queue: &'a str,
    pub routing_key: &'a str,
    pub delivery_tag: u64,
    pub consumer_tag: Option<&'a str>,
    pub redelivered: bool,
    /// When the message was received (ms since the epoch; 0: not known).
    pub received_ms: u64,
    pub body_size: usize,
}

/// Record a delivery, if the message is traced.
pub fn deliver(properties: &[u8], d: &Delivery<'_>) {
    let Some(cx) = context_of(properties) else {
        return;
    };
    let waited_ms = match d.received_ms {
        0 => 0,
        then => now_ms().saturating_sub(then),
    };
    let span = tracing::info_span!(
        target: TARGET,
        "deliver",
        "otel.name" = format!("{} {}", d.operation, d.queue),
        "otel.kind" = "producer",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "send",
        "messaging.operation.name" = d.operation,
        "messaging.destination.name" = d.queue,
        "messaging.rabbitmq.destination.routing_key" = d.routing_key,
        "messaging.rabbitmq.message.delivery_tag" = d.delivery_tag as i64,
        "messaging.message.body.size" = d.body_size as i64,
        "messaging.consumer.group.name" = tracing::field::Empty,
        "warren.consumer_tag" = tracing::field::Empty,
        "warren.redelivered" = d.redelivered,
        "warren.queue.wait_ms" = waited_ms as i64,
    );
    if let Some(tag) = d.consumer_tag {
        span.record("warren.consumer_tag", tag);
    }
    let _ = span.set_parent(cx);
}

/// Record a consumer's settle (`operation`: "ack", "nack" or "reject") of
/// a traced message; `requeue` for nack and reject.
pub fn settle(
    properties: &[u8],
    operation: &'static str,
    queue: &str,
    delivery_tag: u64,
    requeue: Option<bool>,
) {
    let Some(cx) = context_of(properties) else {
        return;
    };
    let span = tracing::info_span!(
        target: TARGET,
        "settle",
        "otel.name" = format!("{operation} {queue}"),
        "otel.kind" = "server",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "settle",
        "messaging.operation.name" = operation,
        "messaging.destination.name" = queue,
        "messaging.rabbitmq.message.delivery_tag" = delivery_tag as i64,
        "warren.requeue" = tracing::field::Empty,
    );
    if let Some(requeue) = requeue {
        span.record("warren.requeue", requeue);
    }
    let _ = span.set_parent(cx);
}

/// Record that a traced message left `queue` without being consumed:
/// `reason` as `x-death` words it; `dead_letter_exchange` if it was
/// dead-lettered. An expired message gets an `expire` span as well.
pub fn died(properties: &[u8], queue: &str, reason: &str, dead_letter_exchange: Option<&str>) {
    let Some(cx) = context_of(properties) else {
        return;
    };
    if reason == "expired" {
        let span = tracing::info_span!(
            target: TARGET,
            "expire",
            "otel.name" = format!("expire {queue}"),
            "otel.kind" = "internal",
            "messaging.system" = "rabbitmq",
            "messaging.operation.name" = "expire",
            "messaging.destination.name" = queue,
        );
        let _ = span.set_parent(cx.clone());
    }
    if let Some(exchange) = dead_letter_exchange {
        let span = tracing::info_span!(
            target: TARGET,
            "dead-letter",
            "otel.name" = format!("dead-letter {queue}"),
            "otel.kind" = "internal",
            "messaging.system" = "rabbitmq",
            "messaging.operation.name" = "dead-letter",
            "messaging.destination.name" = queue,
            "warren.dead_letter.reason" = reason,
            "warren.dead_letter.exchange" = exchange_name(exchange),
        );
        let _ = span.set_parent(cx);
    }
}
