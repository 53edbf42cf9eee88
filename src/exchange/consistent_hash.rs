//! Consistent-hash exchange (`x-consistent-hash`, RabbitMQ's tier-1
//! plugin, built in): a binding's key is its weight, and each message goes
//! to one destination chosen by a hash of its routing key — or of a header
//! (`hash-header` argument) or a property (`hash-property`: `message_id`,
//! `correlation_id` or `timestamp`).
//!
//! The choice is weighted rendezvous hashing: every binding scores the
//! message's hash with a seed of its own (destination and key), and the
//! best score wins. Unlike the plugin's jump hash over a bucket list kept
//! in binding order, it depends only on the set of bindings — so a key
//! keeps its destination across restarts and definition imports — and
//! binding a destination moves only the keys it takes (about weight ÷
//! total weight), unbinding one only the keys it had. Routing costs one
//! hash per binding.

use std::borrow::Cow;
use std::io::Cursor;

use amq_protocol::types::{AMQPValue, FieldTable};

use super::{Destination, RouteHeaders, Router};
use crate::fields;

/// What a consistent-hash exchange hashes, from its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HashOn {
    #[default]
    RoutingKey,
    Header(String),
    Property(Property),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    MessageId,
    CorrelationId,
    Timestamp,
}

/// What a missing header or property hashes as: such messages all go to
/// one destination, as with the plugin.
const UNDEFINED: &str = "undefined";

impl HashOn {
    /// The exchange arguments' choice, or RabbitMQ's refusal text (a 406).
    pub fn of_arguments(arguments: &FieldTable) -> Result<HashOn, String> {
        let text = |name: &str| -> Result<Option<String>, String> {
            match arguments.inner().get(name) {
                None => Ok(None),
                Some(AMQPValue::LongString(s)) => {
                    Ok(Some(String::from_utf8_lossy(s.as_bytes()).into_owned()))
                }
                Some(AMQPValue::ShortString(s)) => Ok(Some(s.to_string())),
                Some(other) => Err(format!(
                    "{name} must be a string, not {}",
                    fields::type_name(other)
                )),
            }
        };
        match (text("hash-header")?, text("hash-property")?) {
            (None, None) => Ok(HashOn::RoutingKey),
            (Some(_), Some(_)) => {
                Err("hash-header and hash-property are mutually exclusive".into())
            }
            (Some(header), None) => Ok(HashOn::Header(header)),
            (None, Some(property)) => match property.as_str() {
                "message_id" => Ok(HashOn::Property(Property::MessageId)),
                "correlation_id" => Ok(HashOn::Property(Property::CorrelationId)),
                "timestamp" => Ok(HashOn::Property(Property::Timestamp)),
                other => Err(format!("Unsupported property: {other}")),
            },
        }
    }

    /// The text a message is hashed by.
    pub fn key_of<'a>(&self, routing_key: &'a str, message: &RouteHeaders<'_>) -> Cow<'a, str> {
        let found = match self {
            HashOn::RoutingKey => return Cow::Borrowed(routing_key),
            HashOn::Header(name) => message
                .get()
                .and_then(|h| h.inner().get(name.as_str()))
                .map(fields::value_text),
            HashOn::Property(p) => message.properties().and_then(|props| match p {
                Property::MessageId => props.message_id().as_ref().map(|s| s.to_string()),
                Property::CorrelationId => props.correlation_id().as_ref().map(|s| s.to_string()),
                Property::Timestamp => props.timestamp().map(|t| t.to_string()),
            }),
        };
        Cow::Owned(found.unwrap_or_else(|| UNDEFINED.to_string()))
    }
}

/// A binding's weight from its key, or RabbitMQ's refusal text (a 406).
pub fn weight_of(routing_key: &str) -> Result<u64, String> {
    match routing_key.parse::<i128>() {
        Ok(w) if w < 1 => Err("The binding key must be greater than 0".into()),
        Ok(w) => Ok(u64::try_from(w).unwrap_or(u64::MAX)),
        // Erlang prints an empty binary as <<>>.
        Err(_) if routing_key.is_empty() => Err("The binding key must be an integer: <<>>".into()),
        Err(_) => Err(format!(
            "The binding key must be an integer: <<\"{routing_key}\">>"
        )),
    }
}

#[derive(Debug)]
struct Weighted {
    destination: Destination,
    key: String,
    weight: f64,
    seed: u64,
}

#[derive(Debug, Default)]
pub struct ConsistentHashRouter {
    bindings: Vec<Weighted>,
}

fn hash64(bytes: &[u8]) -> u64 {
    // Reading from a byte slice cannot fail.
    murmur3::murmur3_x64_128(&mut Cursor::new(bytes), 0).unwrap_or(0) as u64
}

/// SplitMix64's finaliser: a message hash and a binding seed mixed into a
/// fresh uniform value.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Router for ConsistentHashRouter {
    fn bind(&mut self, destination: Destination, routing_key: &str, _arguments: &FieldTable) {
        // Validated on binding; a stored binding with a bad key counts once.
        let weight = weight_of(routing_key).unwrap_or(1) as f64;
        let identity = format!("{}\0{routing_key}", destination.identity());
        self.bindings.push(Weighted {
            seed: hash64(identity.as_bytes()),
            destination,
            key: routing_key.to_string(),
            weight,
        });
    }

    fn unbind(&mut self, destination: &Destination, routing_key: &str, _arguments: &FieldTable) {
        if let Some(i) = self
            .bindings
            .iter()
            .position(|b| &b.destination == destination && b.key == routing_key)
        {
            self.bindings.remove(i);
        }
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let hash = hash64(routing_key.as_bytes());
        // Weighted rendezvous: the lowest -ln(u) / weight wins, u uniform
        // in (0, 1) per (message, binding).
        let best = self
            .bindings
            .iter()
            .map(|b| {
                let u = ((mix(hash ^ b.seed) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                (-u.ln() / b.weight, b)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, b)) = best {
            out.push(b.destination.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_positive_integers_with_rabbitmqs_refusals() {
        assert_eq!(weight_of("3"), Ok(3));
        assert_eq!(weight_of("+2"), Ok(2));
        assert_eq!(
            weight_of("0"),
            Err("The binding key must be greater than 0".into())
        );
        assert_eq!(
            weight_of("x"),
            Err("The binding key must be an integer: <<\"x\">>".into())
        );
        assert_eq!(
            weight_of(""),
            Err("The binding key must be an integer: <<>>".into())
        );
        assert_eq!(weight_of("99999999999999999999999"), Ok(u64::MAX));
    }

    #[test]
    fn arguments_choose_what_is_hashed() {
        let args = |pairs: &[(&str, &str)]| {
            let mut t = FieldTable::default();
            for (k, v) in pairs {
                t.insert((*k).into(), AMQPValue::LongString((*v).into()));
            }
            t
        };
        assert_eq!(HashOn::of_arguments(&args(&[])), Ok(HashOn::RoutingKey));
        assert_eq!(
            HashOn::of_arguments(&args(&[("hash-header", "h")])),
            Ok(HashOn::Header("h".into()))
        );
        assert_eq!(
            HashOn::of_arguments(&args(&[("hash-property", "timestamp")])),
            Ok(HashOn::Property(Property::Timestamp))
        );
        assert!(HashOn::of_arguments(&args(&[("hash-property", "app_id")])).is_err());
        let mut numeric = FieldTable::default();
        numeric.insert("hash-header".into(), AMQPValue::LongInt(5));
        assert_eq!(
            HashOn::of_arguments(&numeric),
            Err("hash-header must be a string, not signedint".into())
        );
    }
}
