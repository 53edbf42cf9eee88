//! A published message, immutable once assembled.
//!
//! A message is shared (`Arc<Message>`) between every queue it is routed to,
//! so its body is stored once however many queues hold it. Properties are
//! kept as the raw bytes the publisher sent, which makes every property and
//! every header table round-trip byte-exact; they are parsed only when
//! Warren must look inside (routing on headers, CC/BCC, user-id checks) and
//! re-encoded only when Warren changes them.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::protocol::basic::{gen_properties, parse_properties};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::Bytes;

use crate::fields::{self, nesting};

#[derive(Clone, Debug)]
pub struct Message {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    /// Property flags and property list exactly as they go on the wire.
    pub properties: Bytes,
    pub body: Bytes,
    /// delivery-mode 2.
    pub persistent: bool,
    /// The `priority` property, 0 when absent.
    pub priority: u8,
    /// The `expiration` property (a per-message TTL in ms), parsed.
    pub expiration_ms: Option<u64>,
    /// When the broker took it in (ms since the epoch; 0: not known), for
    /// a queue's oldest-message age and publish-to-deliver latency. A queue
    /// enqueueing it takes this as "now" (TTLs count from it), so whatever
    /// hands a message to a queue again later (a move, a delayed route, a
    /// dead letter) gives it a fresh one.
    pub received_ms: u64,
}

impl Message {
    /// A message with no properties and no body.
    pub fn empty() -> Message {
        Message {
            exchange: ShortString::from(String::new()),
            routing_key: ShortString::from(String::new()),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::new(),
            persistent: false,
            priority: 0,
            expiration_ms: None,
            received_ms: 0,
        }
    }

    /// The total size the message occupies, as `x-max-length-bytes` counts it
    /// (RabbitMQ counts body bytes only).
    pub fn body_size(&self) -> usize {
        self.body.len()
    }
}

/// Parse raw property bytes. `None` means the bytes are malformed (or nest
/// header tables deeper than the recursion guard allows).
pub fn parse(raw: &[u8]) -> Option<BasicProperties> {
    if let Some(offset) = nesting::properties_headers_offset(raw)
        && !nesting::table_depth_ok(raw.get(offset..).unwrap_or_default())
    {
        return None;
    }
    match parse_properties(raw) {
        Ok((&[], props)) => Some(props),
        _ => None,
    }
}

/// Encode properties into their wire form.
pub fn encode(props: &BasicProperties) -> Bytes {
    Bytes::from(fields::generate(|ctx| gen_properties(props)(ctx)))
}

/// A property a message can be rebuilt without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    Expiration,
    UserId,
}

/// `p` without `dropped`: amq-protocol's properties have no setter that
/// clears a field, so they are rebuilt from the others.
pub fn without(p: &BasicProperties, dropped: Property) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! copy {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(v) = p.$get().clone() { out = out.$set(v); })*
        };
    }
    copy!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        app_id => with_app_id,
        cluster_id => with_cluster_id
    );
    if dropped != Property::Expiration
        && let Some(v) = p.expiration().clone()
    {
        out = out.with_expiration(v);
    }
    if dropped != Property::UserId
        && let Some(v) = p.user_id().clone()
    {
        out = out.with_user_id(v);
    }
    out
}

/// Routing keys named by a sender-selected distribution header (`CC`/`BCC`).
/// As in RabbitMQ, the header must be an array; its non-string elements are
/// ignored. `Err` carries the type name of a header that is not an array.
pub fn header_routing_keys(headers: &FieldTable, name: &str) -> Result<Vec<String>, &'static str> {
    match headers.inner().get(name) {
        None => Ok(Vec::new()),
        Some(AMQPValue::FieldArray(values)) => Ok(values
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            })
            .collect()),
        Some(other) => Err(fields::type_name(other)),
    }
}

/// Check the properties RabbitMQ validates on publish: `delivery-mode` is
/// 1 or 2, and `expiration` is a non-negative integer (milliseconds).
pub fn validate(delivery_mode: Option<u8>, expiration: Option<&str>) -> Result<(), String> {
    if let Some(mode) = delivery_mode
        && !matches!(mode, 1 | 2)
    {
        return Err(format!("invalid message: {{delivery_mode_unknown,{mode}}}"));
    }
    if let Some(expiration) = expiration {
        expiration_ms(expiration)?;
    }
    Ok(())
}

/// The `expiration` property of raw property bytes, without parsing the
/// rest unless it is there (the flag word tells).
pub fn expiration_of(raw: &[u8]) -> Option<u64> {
    const EXPIRATION_FLAG: u8 = 0x01; // bit 8 of the big-endian flag word
    if raw.first()? & EXPIRATION_FLAG == 0 {
        return None;
    }
    let props = parse(raw)?;
    expiration_ms(props.expiration().as_ref()?.as_str()).ok()
}

/// Parse an `expiration` property, with RabbitMQ's error texts.
pub fn expiration_ms(raw: &str) -> Result<u64, String> {
    let digits_end = raw
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map(|(i, _)| i)
        .unwrap_or(raw.len());
    let (number, rest) = raw.split_at(digits_end);
    let value: i64 = match number.parse() {
        Ok(v) => v,
        Err(_) => return Err(format!("invalid expiration '{raw}': no_integer")),
    };
    if !rest.is_empty() {
        return Err(format!(
            "invalid expiration '{raw}': {{leftover_string,\"{rest}\"}}"
        ));
    }
    if value < 0 {
        return Err(format!(
            "invalid expiration '{raw}': {{value_negative,{value}}}"
        ));
    }
    Ok(value as u64)
}

/// The value of header `name` in raw properties, as text (`None` if the
/// properties have no such header, or cannot be decoded).
pub fn header_text(properties: &[u8], name: &str) -> Option<String> {
    let props = parse(properties)?;
    let value = props.headers().as_ref()?.inner().get(name)?;
    Some(fields::value_text(value))
}

/// A header that must equal a value (erasure by header). Values compare
/// as text, so `1234` matches the integer 1234 and the string "1234".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

impl HeaderMatch {
    /// Whether raw properties carry the header with the value.
    pub fn matches(&self, properties: &[u8]) -> bool {
        // Most messages lack the header: a byte search rules them out
        // without decoding their properties.
        memchr::memmem::find(properties, self.name.as_bytes()).is_some()
            && header_text(properties, &self.name).as_deref() == Some(self.value.as_str())
    }
}

/// Short-string constructor for names Warren builds itself.
pub fn short(s: impl Into<String>) -> ShortString {
    ShortString::from(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldArray, LongString};

    #[test]
    fn properties_round_trip_through_parse_and_encode() {
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_priority(5);
        let raw = encode(&props);
        assert_eq!(parse(&raw), Some(props));
        assert_eq!(parse(&raw[..raw.len() - 1]), None);
    }

    #[test]
    fn cc_header_yields_routing_keys() {
        let mut h = FieldTable::default();
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString(LongString::from("a")),
                AMQPValue::LongString(LongString::from("b")),
            ])),
        );
        assert_eq!(
            header_routing_keys(&h, "CC"),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(header_routing_keys(&h, "BCC"), Ok(vec![]));
        h.insert("BCC".into(), AMQPValue::LongString(LongString::from("x")));
        assert_eq!(header_routing_keys(&h, "BCC"), Err("longstr"));
    }

    #[test]
    fn expiration_is_validated_as_rabbitmq_does() {
        assert_eq!(expiration_ms("60000"), Ok(60000));
        assert_eq!(expiration_ms("0"), Ok(0));
        assert_eq!(
            expiration_ms("abc"),
            Err("invalid expiration 'abc': no_integer".into())
        );
        assert_eq!(
            expiration_ms(""),
            Err("invalid expiration '': no_integer".into())
        );
        assert_eq!(
            expiration_ms("-1"),
            Err("invalid expiration '-1': {value_negative,-1}".into())
        );
        assert_eq!(
            expiration_ms("1.5"),
            Err("invalid expiration '1.5': {leftover_string,\".5\"}".into())
        );
    }
}
