//! Firehose tracing, as RabbitMQ's: while a vhost traces, every message
//! published in it is copied to its `amq.rabbitmq.trace` exchange with the
//! routing key `publish.<exchange>`, and every delivery (to a consumer or
//! `basic.get`) with `deliver.<queue>`. A copy carries the original body
//! and, as headers, where the message went and what it was.
//!
//! Tracing is switched per vhost at run time (`PUT /api/vhosts/{name}` with
//! `tracing`, `warrenctl trace_on`), and not kept across a restart, as in
//! RabbitMQ. Off, it costs one relaxed load per publish and per delivery.
//! Copies are published by the event task, never under a queue's lock.

use std::sync::atomic::Ordering;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use serde_json::json;

use super::audit::Actor;
use super::events::{Events, Trace, text};
use super::{AccessError, Broker, VHost};
use crate::message::{self, Message};

/// The exchange copies go to, in every vhost.
pub const EXCHANGE: &str = "amq.rabbitmq.trace";

/// Who published or received a traced message: the connection's name, the
/// channel's number and the user.
#[derive(Clone, Copy, Debug)]
pub struct Tracer<'a> {
    pub connection: &'a str,
    pub channel: u16,
    pub user: &'a str,
}

impl VHost {
    /// Whether messages in this vhost are traced.
    pub fn is_tracing(&self) -> bool {
        self.tracing.load(Ordering::Relaxed)
    }

    pub(super) fn set_tracing(&self, on: bool) {
        self.tracing.store(on, Ordering::Relaxed);
    }
}

impl Broker {
    /// Switch firehose tracing of `vhost` on or off (RabbitMQ's
    /// `trace_on` / `trace_off`).
    pub fn set_tracing(&self, vhost: &str, on: bool, actor: &Actor) -> Result<(), AccessError> {
        let v = self.vhost(vhost).ok_or_else(|| Broker::no_vhost(vhost))?;
        if v.is_tracing() == on {
            return Ok(());
        }
        v.set_tracing(on);
        if on {
            tracing::info!("Enabling tracing for vhost '{vhost}'");
        } else {
            tracing::info!("Disabling tracing for vhost '{vhost}'");
        }
        self.audit.record(
            "vhost.tracing.set",
            Some(actor),
            json!({"vhost": vhost, "tracing": on}),
        );
        Ok(())
    }
}

impl Events {
    /// A message published in `vhost` with `keys` (its routing key, then
    /// those of its `CC` and `BCC` headers) was routed to `queues`.
    pub fn trace_publish(
        &self,
        vhost: &str,
        m: &Message,
        keys: &[&str],
        queues: &[&str],
        by: Tracer<'_>,
    ) {
        let mut headers = describe(m, keys, self.node());
        add_tracer(&mut headers, vhost, by);
        let routed: Vec<AMQPValue> = queues.iter().map(|q| text(*q)).collect();
        headers.insert("routed_queues".into(), AMQPValue::FieldArray(routed.into()));
        self.trace(Trace {
            vhost: vhost.to_string(),
            routing_key: key("publish", m.exchange.as_str()),
            headers,
            body: m.body.clone(),
        });
    }

    /// A message of `queue` was delivered (or got). Copies are not traced
    /// again, as in RabbitMQ.
    pub fn trace_deliver(
        &self,
        vhost: &str,
        queue: &str,
        m: &Message,
        redelivered: bool,
        by: Tracer<'_>,
    ) {
        if m.exchange.as_str() == EXCHANGE {
            return;
        }
        let props = message::parse(&m.properties).unwrap_or_default();
        let mut keys = vec![m.routing_key.as_str().to_string()];
        if let Some(h) = props.headers()
            && let Ok(cc) = message::header_routing_keys(h, "CC")
        {
            keys.extend(cc);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut headers = describe(m, &keys, self.node());
        headers.insert(
            "redelivered".into(),
            AMQPValue::LongInt(i32::from(redelivered)),
        );
        add_tracer(&mut headers, vhost, by);
        self.trace(Trace {
            vhost: vhost.to_string(),
            routing_key: key("deliver", queue),
            headers,
            body: m.body.clone(),
        });
    }
}

/// `publish.<name>`, cut to what a routing key holds (255 bytes).
fn key(prefix: &str, name: &str) -> String {
    let mut k = format!("{prefix}.{name}");
    if k.len() > 255 {
        let mut end = 255;
        while !k.is_char_boundary(end) {
            end -= 1;
        }
        k.truncate(end);
    }
    k
}

/// What RabbitMQ's tracer says of every message: its exchange, routing
/// keys, properties (those set) and the node.
fn describe(m: &Message, keys: &[&str], node: &str) -> FieldTable {
    let props = message::parse(&m.properties).unwrap_or_default();
    let keys: Vec<AMQPValue> = keys.iter().map(|k| text(*k)).collect();
    let mut t = FieldTable::default();
    t.insert("exchange_name".into(), text(m.exchange.as_str()));
    t.insert(
        "routing_keys".into(),
        AMQPValue::FieldArray(FieldArray::from(keys)),
    );
    t.insert(
        "properties".into(),
        AMQPValue::FieldTable(properties(&props)),
    );
    t.insert("node".into(), text(node));
    t
}

fn add_tracer(t: &mut FieldTable, vhost: &str, by: Tracer<'_>) {
    t.insert("vhost".into(), text(vhost));
    t.insert("connection".into(), text(by.connection));
    t.insert("channel".into(), AMQPValue::LongInt(i32::from(by.channel)));
    t.insert("user".into(), text(by.user));
}

/// The properties that are set, by RabbitMQ's names: strings as long
/// strings, numbers as signed integers, headers as a table.
fn properties(p: &BasicProperties) -> FieldTable {
    let mut t = FieldTable::default();
    let mut string = |name: &str, v: Option<&str>| {
        if let Some(v) = v {
            t.insert(
                name.into(),
                AMQPValue::LongString(LongString::from(v.to_string())),
            );
        }
    };
    string(
        "content_type",
        p.content_type().as_ref().map(|s| s.as_str()),
    );
    string(
        "content_encoding",
        p.content_encoding().as_ref().map(|s| s.as_str()),
    );
    string(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| s.as_str()),
    );
    string("reply_to", p.reply_to().as_ref().map(|s| s.as_str()));
    string("expiration", p.expiration().as_ref().map(|s| s.as_str()));
    string("message_id", p.message_id().as_ref().map(|s| s.as_str()));
    string("type", p.kind().as_ref().map(|s| s.as_str()));
    string("user_id", p.user_id().as_ref().map(|s| s.as_str()));
    string("app_id", p.app_id().as_ref().map(|s| s.as_str()));
    string("cluster_id", p.cluster_id().as_ref().map(|s| s.as_str()));
    if let Some(h) = p.headers() {
        t.insert("headers".into(), AMQPValue::FieldTable(h.clone()));
    }
    if let Some(d) = p.delivery_mode() {
        t.insert("delivery_mode".into(), AMQPValue::LongInt(i32::from(*d)));
    }
    if let Some(n) = p.priority() {
        t.insert("priority".into(), AMQPValue::LongInt(i32::from(*n)));
    }
    // RabbitMQ's are 32-bit signed integers (a timestamp past 2038
    // overflows there); one that does not fit is 64-bit here.
    if let Some(ts) = p.timestamp() {
        let v = match i32::try_from(*ts) {
            Ok(n) => AMQPValue::LongInt(n),
            Err(_) => AMQPValue::LongLongInt(i64::try_from(*ts).unwrap_or(i64::MAX)),
        };
        t.insert("timestamp".into(), v);
    }
    t
}
