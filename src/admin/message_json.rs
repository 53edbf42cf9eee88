//! Messages as the management API writes and reads them: properties as a
//! JSON object with AMQP's names (`delivery_mode`, `headers`, `type`, …),
//! payloads as text or base64 (`payload_encoding`).

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::ShortString;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::ApiError;
use crate::fields::json::{json_to_table, table_to_json};
use crate::message::{self, Message};

/// A message's properties as RabbitMQ shows them (absent ones left out).
pub fn properties_json(m: &Message) -> Value {
    let Some(p) = message::parse(&m.properties) else {
        return json!({});
    };
    let mut out = Map::new();
    let mut text = |name: &str, v: &Option<ShortString>| {
        if let Some(s) = v {
            out.insert(name.to_string(), s.as_str().into());
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    text("cluster_id", p.cluster_id());
    if let Some(h) = p.headers() {
        out.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode() {
        out.insert("delivery_mode".into(), (*d).into());
    }
    if let Some(pr) = p.priority() {
        out.insert("priority".into(), (*pr).into());
    }
    if let Some(t) = p.timestamp() {
        out.insert("timestamp".into(), (*t).into());
    }
    Value::Object(out)
}

/// Properties from the JSON of `POST …/publish`.
pub fn properties_from_json(v: &Value) -> Result<BasicProperties, ApiError> {
    let Some(m) = v.as_object() else {
        return Ok(BasicProperties::default());
    };
    let bad = |name: &str| ApiError::BadRequest(format!("invalid property '{name}'"));
    let short = |name: &str| -> Result<Option<ShortString>, ApiError> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => ShortString::try_new(s.as_str())
                .map(Some)
                .map_err(|_| bad(name)),
            Some(Value::Number(n)) => ShortString::try_new(n.to_string())
                .map(Some)
                .map_err(|_| bad(name)),
            Some(_) => Err(bad(name)),
        }
    };
    let small = |name: &str| -> Result<Option<u8>, ApiError> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u8::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(name)),
        }
    };
    let mut p = BasicProperties::default();
    if let Some(s) = short("content_type")? {
        p = p.with_content_type(s);
    }
    if let Some(s) = short("content_encoding")? {
        p = p.with_content_encoding(s);
    }
    if let Some(h) = m.get("headers").filter(|h| !h.is_null()) {
        let table = json_to_table(h).map_err(|e| ApiError::BadRequest(format!("headers: {e}")))?;
        p = p.with_headers(table);
    }
    if let Some(d) = small("delivery_mode")? {
        p = p.with_delivery_mode(d);
    }
    if let Some(d) = small("priority")? {
        p = p.with_priority(d);
    }
    if let Some(s) = short("correlation_id")? {
        p = p.with_correlation_id(s);
    }
    if let Some(s) = short("reply_to")? {
        p = p.with_reply_to(s);
    }
    if let Some(s) = short("expiration")? {
        p = p.with_expiration(s);
    }
    if let Some(s) = short("message_id")? {
        p = p.with_message_id(s);
    }
    if let Some(t) = m.get("timestamp").and_then(Value::as_u64) {
        p = p.with_timestamp(t);
    }
    if let Some(s) = short("type")? {
        p = p.with_type(s);
    }
    if let Some(s) = short("user_id")? {
        p = p.with_user_id(s);
    }
    if let Some(s) = short("app_id")? {
        p = p.with_app_id(s);
    }
    if let Some(s) = short("cluster_id")? {
        p = p.with_cluster_id(s);
    }
    Ok(p)
}

/// How `get` renders payloads (`encoding`): text where it is UTF-8, or
/// always base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Auto,
    Base64,
}

impl Encoding {
    pub fn parse(s: Option<&str>) -> Result<Encoding, ApiError> {
        match s.unwrap_or("auto") {
            "auto" => Ok(Encoding::Auto),
            "base64" => Ok(Encoding::Base64),
            _ => Err(ApiError::BadRequest(
                "Unsupported encoding. Please use auto or base64.".into(),
            )),
        }
    }
}

/// One message as `POST …/get` returns it.
pub fn message_json(
    m: &Message,
    redelivered: bool,
    message_count: u32,
    encoding: Encoding,
    truncate: Option<usize>,
) -> Value {
    let body = &m.body[..truncate.map_or(m.body.len(), |t| t.min(m.body.len()))];
    let (payload, payload_encoding) = match (encoding, std::str::from_utf8(body)) {
        (Encoding::Auto, Ok(text)) => (text.to_string(), "string"),
        _ => (BASE64.encode(body), "base64"),
    };
    json!({
        "payload_bytes": m.body.len(),
        "redelivered": redelivered,
        "exchange": m.exchange.as_str(),
        "routing_key": m.routing_key.as_str(),
        "message_count": message_count,
        "properties": properties_json(m),
        "payload": payload,
        "payload_encoding": payload_encoding,
    })
}

/// The body of `POST …/publish`: `payload` decoded per `payload_encoding`.
pub fn payload(payload: &str, encoding: &str) -> Result<Vec<u8>, ApiError> {
    match encoding {
        "string" => Ok(payload.as_bytes().to_vec()),
        "base64" => BASE64
            .decode(payload.trim())
            .map_err(|_| ApiError::BadRequest("payload is not valid base64".into())),
        other => Err(ApiError::BadRequest(format!(
            "payload_encoding '{other}' is not one of string, base64"
        ))),
    }
}
