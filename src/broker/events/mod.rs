//! The event exchange, RabbitMQ's `rabbitmq_event_exchange` plugin built
//! in: every change to definitions, every connection, channel and consumer
//! opened or closed, every login and every alarm is published to the topic
//! exchange `amq.rabbitmq.event` in one vhost (`/` by default), with the
//! event's type as the routing key (`queue.created`) and its properties as
//! message headers, named and typed as RabbitMQ's.
//!
//! Emitting never blocks and never takes a broker lock: the event goes to
//! a channel, and one task publishes events in order, routing them like any
//! other message. Topology changes emit while they hold the topology lock;
//! publishing there would route under it. Events before the broker has
//! finished restoring (and with the exchange disabled) are not made at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Broker;
use super::VHost;
use super::enqueue::enqueue;
use crate::exchange::{Exchange, RouteHeaders};
use crate::message::{self, Message};

mod sessions;
mod topology;

pub use sessions::{Login, channel_pid, connection_pid};

/// Who RabbitMQ says did what the broker did on its own (auto-delete,
/// exclusive queues of a closed connection, expiry).
pub const INTERNAL_USER: &str = "rmq-internal";

/// The exchange events are published to.
pub const EXCHANGE: &str = "amq.rabbitmq.event";

/// One event: its routing key and its properties, in RabbitMQ's order.
#[derive(Debug)]
pub struct Event {
    pub kind: &'static str,
    pub props: FieldTable,
    /// Milliseconds since the epoch, when it happened.
    pub at_ms: u64,
}

/// A message the broker publishes into one of its own exchanges: an event,
/// or a firehose copy (`firehose`).
#[derive(Debug)]
enum Outgoing {
    Event(Event),
    Trace(Trace),
}

/// A firehose copy of a message published or delivered in `vhost`.
#[derive(Debug)]
pub struct Trace {
    pub vhost: String,
    /// `publish.<exchange>` or `deliver.<queue>`.
    pub routing_key: String,
    pub headers: FieldTable,
    pub body: bytes::Bytes,
}

/// Where events (and firehose copies) go; a no-op until
/// [`Events::start`], and events when the event exchange is disabled.
#[derive(Debug)]
pub struct Events {
    /// Events are made (the event exchange is enabled and started).
    on: AtomicBool,
    /// The publishing task runs (firehose copies are taken).
    running: AtomicBool,
    /// The node name, in the process ids events carry.
    node: OnceLock<String>,
    sender: mpsc::UnboundedSender<Outgoing>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    /// Counts changes to definitions (exchanges, queues, bindings,
    /// policies, parameters, vhosts), events on or off: federation links
    /// and shovels watch it to follow what they mirror.
    definitions_changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Events {
            on: AtomicBool::new(false),
            running: AtomicBool::new(false),
            node: OnceLock::new(),
            sender,
            receiver: Mutex::new(Some(receiver)),
            definitions_changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Events {
    /// Whether events are being made (the closure of [`Events::emit`] is
    /// worth calling).
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// A receiver that sees a new value after each change to definitions.
    pub fn definitions_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.definitions_changed.subscribe()
    }

    fn note_change(&self, kind: &str) {
        const DEFINITIONS: [&str; 6] = [
            "exchange.",
            "binding.",
            "queue.",
            "policy.",
            "parameter.",
            "vhost.",
        ];
        if DEFINITIONS.iter().any(|p| kind.starts_with(p)) {
            self.definitions_changed.send_modify(|n| *n += 1);
        }
    }

    /// Emit a `kind` event; `props` runs only if events are on.
    pub fn emit(&self, kind: &'static str, props: impl FnOnce() -> Vec<(&'static str, AMQPValue)>) {
        self.note_change(kind);
        if !self.is_on() {
            return;
        }
        let mut table = FieldTable::default();
        for (name, value) in props() {
            table.insert(ShortString::from(name), value);
        }
        self.send(kind, table);
    }

    /// Emit a `kind` event whose properties are a JSON object's fields
    /// (strings, booleans, integers, objects as tables, arrays), with
    /// `user_who_performed_action: by`.
    pub fn emit_json(&self, kind: &'static str, by: &str, props: impl FnOnce() -> Value) {
        self.note_change(kind);
        if !self.is_on() {
            return;
        }
        let mut table = match from_json(&props()) {
            AMQPValue::FieldTable(t) => t,
            _ => FieldTable::default(),
        };
        table.insert("user_who_performed_action".into(), text(by));
        self.send(kind, table);
    }

    fn send(&self, kind: &'static str, props: FieldTable) {
        let event = Event {
            kind,
            props,
            at_ms: now_ms(),
        };
        let _ = self.sender.send(Outgoing::Event(event));
    }

    /// Publish a firehose copy (after everything emitted before it).
    pub fn trace(&self, trace: Trace) {
        if self.running.load(Ordering::Relaxed) {
            let _ = self.sender.send(Outgoing::Trace(trace));
        }
    }

    /// Start publishing for `broker` (on the current runtime): firehose
    /// copies always, events if `events` (the event exchange is enabled).
    pub(super) fn start(&self, broker: &Arc<Broker>, events: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime: the event exchange is off");
            return;
        };
        let Some(receiver) = self.receiver.lock().take() else {
            return;
        };
        let _ = self.node.set(broker.node_name.clone());
        runtime.spawn(publish_events(Arc::downgrade(broker), receiver));
        self.running.store(true, Ordering::Relaxed);
        self.on.store(events, Ordering::Relaxed);
    }

    /// The node name events carry ("" before [`Events::start`]).
    pub fn node(&self) -> &str {
        self.node.get().map_or("", String::as_str)
    }

    /// Stop making events (the broker is closing).
    pub(super) fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
        self.running.store(false, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn publish_events(broker: Weak<Broker>, mut outgoing: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(next) = outgoing.recv().await {
        let Some(b) = broker.upgrade() else {
            return;
        };
        match next {
            Outgoing::Event(event) => b.publish_event(event),
            Outgoing::Trace(trace) => b.publish_trace(trace),
        }
    }
}

impl Broker {
    /// Route one event into the event exchange, as RabbitMQ's plugin
    /// publishes it: persistent, an empty body, the AMQP timestamp in
    /// seconds and `timestamp_in_ms` first among the headers.
    fn publish_event(&self, event: Event) {
        let Some(vhost) = self.vhost(&self.config.event_exchange.vhost) else {
            return;
        };
        let Some(exchange) = vhost.exchange(EXCHANGE) else {
            return;
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "timestamp_in_ms".into(),
            AMQPValue::LongLongInt(event.at_ms as i64),
        );
        for (name, value) in event.props.inner() {
            headers.insert(name.clone(), value.clone());
        }
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers.clone())
            .with_timestamp(event.at_ms / 1000);
        publish_internal(&vhost, &exchange, event.kind, props, Default::default());
    }

    /// Route one firehose copy into its vhost's `amq.rabbitmq.trace`, as
    /// RabbitMQ's tracer publishes it: the original body, only headers.
    fn publish_trace(&self, trace: Trace) {
        let Some(vhost) = self.vhost(&trace.vhost) else {
            return;
        };
        let Some(exchange) = vhost.exchange(super::firehose::EXCHANGE) else {
            return;
        };
        let props = BasicProperties::default().with_headers(trace.headers);
        publish_internal(&vhost, &exchange, &trace.routing_key, props, trace.body);
    }
}

/// Route a message the broker makes itself through `exchange` and enqueue
/// it where it goes (publishers are not held back: there is none).
fn publish_internal(
    vhost: &VHost,
    exchange: &Arc<Exchange>,
    routing_key: &str,
    props: BasicProperties,
    body: bytes::Bytes,
) {
    let msg = Arc::new(Message {
        exchange: exchange.name.clone(),
        routing_key: message::short(routing_key),
        persistent: *props.delivery_mode() == Some(2),
        priority: 0,
        expiration_ms: None,
        received_ms: crate::queue::now_ms(),
        properties: message::encode(&props),
        body,
    });
    let route_headers = RouteHeaders::decoded(props.headers().clone());
    let mut queues = Vec::new();
    vhost.route(exchange, routing_key, &route_headers, &mut queues);
    enqueue(&msg, &mut queues, &mut Vec::new());
}

/// A JSON value as a header value: RabbitMQ's types for what its events
/// carry (long strings, booleans, signed 64-bit integers, tables, arrays).
pub fn from_json(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => flag(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => text(s.as_str()),
        Value::Array(items) => {
            AMQPValue::FieldArray(items.iter().map(from_json).collect::<Vec<_>>().into())
        }
        Value::Object(fields) => {
            let mut t = FieldTable::default();
            for (k, v) in fields {
                if let Ok(name) = ShortString::try_new(k.as_str()) {
                    t.insert(name, from_json(v));
                }
            }
            AMQPValue::FieldTable(t)
        }
    }
}

/// A long string header.
pub fn text(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

/// A boolean header.
pub fn flag(b: bool) -> AMQPValue {
    AMQPValue::Boolean(b)
}

/// A signed 64-bit header, RabbitMQ's type for integers.
pub fn number(n: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A table header (arguments, client properties).
pub fn table(t: &FieldTable) -> AMQPValue {
    AMQPValue::FieldTable(t.clone())
}
