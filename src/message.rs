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

use crate::amqp::codec;

#[derive(Debug)]
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
}

impl Message {
    /// The total size the message occupies, as `x-max-length-bytes` counts it
    /// (RabbitMQ counts body bytes only).
    pub fn body_size(&self) -> usize {
        self.body.len()
    }
}

/// Parse raw property bytes. `None` means the bytes are malformed.
pub fn parse(raw: &[u8]) -> Option<BasicProperties> {
    match parse_properties(raw) {
        Ok((&[], props)) => Some(props),
        _ => None,
    }
}

/// Encode properties into their wire form.
pub fn encode(props: &BasicProperties) -> Bytes {
    Bytes::from(codec::generate(|ctx| gen_properties(props)(ctx)))
}

/// Routing keys named by a sender-selected distribution header (`CC`/`BCC`).
/// RabbitMQ accepts an array of long strings; anything else is ignored.
pub fn header_routing_keys(headers: &FieldTable, name: &str) -> Vec<String> {
    match headers.inner().get(name) {
        Some(AMQPValue::FieldArray(values)) => values
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
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
        assert_eq!(header_routing_keys(&h, "CC"), vec!["a", "b"]);
        assert!(header_routing_keys(&h, "BCC").is_empty());
    }
}
