//! AMQP field values, shared by every layer: reading integers and text out
//! of field-table values, RabbitMQ's names for field types (they appear in
//! its error texts), server-generated names, encoding a value into a
//! standalone buffer, and the nesting guard that runs before any table
//! reaches amq-protocol's recursive parser.
//!
//! This module sits at the bottom of the crate: it imports nothing from
//! Warren, so protocol code, the broker, queues and exchanges can all use it.

pub mod json;
pub mod nesting;

use amq_protocol::frame::{BackToTheBuffer, WriteContext};
use amq_protocol::types::AMQPValue;

pub fn int_value(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(i) => *i as i128,
        AMQPValue::ShortShortUInt(i) => *i as i128,
        AMQPValue::ShortInt(i) => *i as i128,
        AMQPValue::ShortUInt(i) => *i as i128,
        AMQPValue::LongInt(i) => *i as i128,
        AMQPValue::LongUInt(i) => *i as i128,
        AMQPValue::LongLongInt(i) => *i as i128,
        _ => return None,
    })
}

pub fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => int_value(other)
            .map(|i| i.to_string())
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

/// RabbitMQ's names for AMQP field types.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// `amq.gen-…` / `amq.ctag-…`: a prefix and 128 random bits in URL-safe
/// base64, as RabbitMQ names server-generated queues and consumer tags.
pub fn generated_name(prefix: &str) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Serialise a value with an amq-protocol generator into a standalone buffer.
pub fn generate<F>(f: F) -> Vec<u8>
where
    F: Fn(WriteContext<Vec<u8>>) -> Result<WriteContext<Vec<u8>>, amq_protocol::frame::GenError>,
    Vec<u8>: BackToTheBuffer,
{
    match f(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.into_inner().0,
        Err(_) => Vec::new(),
    }
}
