//! What a `shovel`, `federation-upstream` or `federation-upstream-set`
//! runtime parameter says, checked as RabbitMQ's shovel and federation
//! plugins check them (same keys, defaults and refusals). The links that
//! carry messages (the `links` module) read these; the broker refuses a value
//! that does not parse before storing it.

use std::time::Duration;

use serde_json::{Map, Value};

use super::policies::erlang_term;

/// When a source acknowledges a message it handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Once the destination confirmed it (nothing lost).
    OnConfirm,
    /// Once it was sent to the destination.
    OnPublish,
    /// Never: consumed with `no-ack`.
    NoAck,
}

impl AckMode {
    fn parse(v: &Value, key: &str) -> Result<AckMode, String> {
        match v.as_str() {
            Some("on-confirm") => Ok(AckMode::OnConfirm),
            Some("on-publish") => Ok(AckMode::OnPublish),
            Some("no-ack") => Ok(AckMode::NoAck),
            _ => Err(format!(
                "{key} should be one of [<<\"no-ack\">>,<<\"on-publish\">>,<<\"on-confirm\">>], \
                 actually was {}",
                erlang_term(v)
            )),
        }
    }
}

/// Where a shovel takes messages from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShovelSource {
    /// A queue, declared (durable) unless `predeclared`.
    Queue {
        name: String,
        predeclared: bool,
        arguments: Map<String, Value>,
    },
    /// An exchange, through an exclusive queue bound with `key`.
    Exchange { name: String, key: String },
}

/// When a shovel deletes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteAfter {
    Never,
    /// After as many messages as its queue held when it started.
    QueueLength,
    Count(u64),
}

/// A dynamic shovel's definition (AMQP 0-9-1 on both sides).
#[derive(Clone, Debug, PartialEq)]
pub struct ShovelSpec {
    pub src_uris: Vec<String>,
    pub source: ShovelSource,
    pub dest_uris: Vec<String>,
    pub dest_queue: Option<String>,
    pub dest_queue_arguments: Map<String, Value>,
    pub dest_exchange: Option<String>,
    pub dest_exchange_key: Option<String>,
    pub dest_predeclared: bool,
    pub ack_mode: AckMode,
    pub prefetch_count: u16,
    pub reconnect_delay: Duration,
    pub delete_after: DeleteAfter,
    pub add_forward_headers: bool,
    pub add_timestamp_header: bool,
}

/// RabbitMQ's default reconnect delay, in seconds.
pub const DEFAULT_RECONNECT_DELAY: f64 = 5.0;
const DEFAULT_PREFETCH: u16 = 1000;

const SHOVEL_KEYS: &[&str] = &[
    "src-uri",
    "src-protocol",
    "src-queue",
    "src-queue-args",
    "src-exchange",
    "src-exchange-key",
    "src-predeclared",
    "src-prefetch-count",
    "prefetch-count",
    "src-delete-after",
    "delete-after",
    "src-consumer-args",
    "dest-uri",
    "dest-protocol",
    "dest-queue",
    "dest-queue-args",
    "dest-exchange",
    "dest-exchange-key",
    "dest-predeclared",
    "dest-add-forward-headers",
    "add-forward-headers",
    "dest-add-timestamp-header",
    "add-timestamp-header",
    "ack-mode",
    "reconnect-delay",
];

impl ShovelSpec {
    pub fn parse(value: &Value) -> Result<ShovelSpec, String> {
        ShovelSpec::parse_named("shovel", value)
    }

    /// Parse the parameter `name`'s value (RabbitMQ's refusals name it).
    pub fn parse_named(name: &str, value: &Value) -> Result<ShovelSpec, String> {
        let def = Definition::of(value, name, SHOVEL_KEYS)?;
        for key in ["src-protocol", "dest-protocol"] {
            if let Some(p) = def.text(key)?
                && p != "amqp091"
            {
                return Err(format!(
                    "{key} {p} is not supported: Warren's shovels speak amqp091"
                ));
            }
        }
        let src_uris = def.uris("src-uri")?;
        let dest_uris = def.uris("dest-uri")?;
        let source = match (def.text("src-queue")?, def.text("src-exchange")?) {
            (None, None) => return Err("Must specify 'src-exchange' or 'src-queue'".into()),
            (Some(_), Some(_)) => {
                return Err("Cannot specify 'src-exchange' and 'src-queue'".into());
            }
            (Some(name), None) => ShovelSource::Queue {
                name,
                predeclared: def.flag("src-predeclared")?.unwrap_or(false),
                arguments: def.table("src-queue-args")?,
            },
            (None, Some(name)) => ShovelSource::Exchange {
                name,
                key: def.text("src-exchange-key")?.unwrap_or_default(),
            },
        };
        let dest_queue = def.text("dest-queue")?;
        let dest_exchange = def.text("dest-exchange")?;
        if dest_queue.is_some() && dest_exchange.is_some() {
            return Err("Cannot specify 'dest-exchange' and 'dest-queue'".into());
        }
        let ack_mode = match def.get("ack-mode") {
            Some(v) => AckMode::parse(v, "ack-mode")?,
            None => AckMode::OnConfirm,
        };
        let delete_after = match def.get("src-delete-after").or(def.get("delete-after")) {
            None => DeleteAfter::Never,
            Some(Value::String(s)) if s == "never" => DeleteAfter::Never,
            Some(Value::String(s)) if s == "queue-length" => DeleteAfter::QueueLength,
            Some(v) if v.as_u64().is_some() => DeleteAfter::Count(v.as_u64().unwrap_or(0)),
            Some(v) => {
                return Err(format!(
                    "src-delete-after should be a number greater than or equal to 0, \
                     \"never\" or \"queue-length\", actually was {}",
                    erlang_term(v)
                ));
            }
        };
        if matches!(delete_after, DeleteAfter::Count(_)) && ack_mode == AckMode::NoAck {
            return Err("Cannot specify 'no-ack' and numerical 'delete-after'".into());
        }
        let prefetch = match def.number("src-prefetch-count")? {
            Some(n) => Some(n),
            None => def.number("prefetch-count")?,
        };
        Ok(ShovelSpec {
            src_uris,
            source,
            dest_uris,
            dest_queue,
            dest_queue_arguments: def.table("dest-queue-args")?,
            dest_exchange,
            dest_exchange_key: def.text("dest-exchange-key")?,
            dest_predeclared: def.flag("dest-predeclared")?.unwrap_or(false),
            ack_mode,
            prefetch_count: prefetch.map_or(DEFAULT_PREFETCH, prefetch_of),
            reconnect_delay: delay(def.number("reconnect-delay")?),
            delete_after,
            add_forward_headers: match def.flag("dest-add-forward-headers")? {
                Some(b) => b,
                None => def.flag("add-forward-headers")?.unwrap_or(false),
            },
            add_timestamp_header: match def.flag("dest-add-timestamp-header")? {
                Some(b) => b,
                None => def.flag("add-timestamp-header")?.unwrap_or(false),
            },
        })
    }
}

/// A `federation-upstream`: a broker (or several, tried in turn) whose
/// exchange or queue of the same name (or `exchange` / `queue`) feeds the
/// federated one here.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSpec {
    pub uris: Vec<String>,
    pub exchange: Option<String>,
    pub queue: Option<String>,
    pub max_hops: u32,
    /// `x-expires` of the queue the link keeps upstream, in ms.
    pub expires: Option<u64>,
    /// `x-message-ttl` of that queue, in ms.
    pub message_ttl: Option<u64>,
    pub prefetch_count: u16,
    pub reconnect_delay: Duration,
    pub ack_mode: AckMode,
    pub trust_user_id: bool,
    /// Delete what the link made upstream when it is removed
    /// (`resource-cleanup-mode` other than `never`).
    pub cleanup: bool,
}

const UPSTREAM_KEYS: &[&str] = &[
    "uri",
    "exchange",
    "queue",
    "max-hops",
    "expires",
    "message-ttl",
    "prefetch-count",
    "reconnect-delay",
    "ack-mode",
    "trust-user-id",
    "ha-policy",
    "queue-type",
    "bind-nowait",
    "consumer-tag",
    "resource-cleanup-mode",
    "channel-use-mode",
];

impl UpstreamSpec {
    pub fn parse(value: &Value) -> Result<UpstreamSpec, String> {
        UpstreamSpec::parse_named("federation-upstream", value)
    }

    /// Parse the parameter `name`'s value. As RabbitMQ, any number is a
    /// `max-hops` (below 1 nothing is federated), `expires` or
    /// `message-ttl` (below 0: none).
    pub fn parse_named(name: &str, value: &Value) -> Result<UpstreamSpec, String> {
        let def = Definition::of(value, name, UPSTREAM_KEYS)?;
        let max_hops = def
            .number("max-hops")?
            .map_or(1, |n| n.clamp(0.0, f64::from(u32::MAX)) as u32);
        let millis = |key: &str| -> Result<Option<u64>, String> {
            Ok(def
                .number(key)?
                .filter(|n| *n >= 0.0)
                .map(|n| n.min(u32::MAX as f64) as u64))
        };
        Ok(UpstreamSpec {
            uris: def.uris("uri")?,
            exchange: def.text("exchange")?,
            queue: def.text("queue")?,
            max_hops,
            expires: millis("expires")?,
            message_ttl: millis("message-ttl")?,
            prefetch_count: def
                .number("prefetch-count")?
                .map_or(DEFAULT_PREFETCH, prefetch_of),
            reconnect_delay: delay(def.number("reconnect-delay")?),
            ack_mode: match def.get("ack-mode") {
                Some(v) => AckMode::parse(v, "ack-mode")?,
                None => AckMode::OnConfirm,
            },
            trust_user_id: def.flag("trust-user-id")?.unwrap_or(false),
            cleanup: def.text("resource-cleanup-mode")?.as_deref() != Some("never"),
        })
    }
}

/// An upstream set's entries: upstream names, each with the keys it
/// overrides.
pub type UpstreamSet = Vec<(String, Map<String, Value>)>;

/// A `federation-upstream-set`: the names of upstreams (each entry may
/// override the upstream's keys, as RabbitMQ allows).
pub fn parse_upstream_set(value: &Value) -> Result<UpstreamSet, String> {
    parse_upstream_set_named("federation-upstream-set", value)
}

pub fn parse_upstream_set_named(name: &str, value: &Value) -> Result<UpstreamSet, String> {
    let Value::Array(entries) = value else {
        return Err(format!("{value} must be a list of upstreams"));
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Object(map) = entry else {
                return Err(format!("{entry} must be an object naming an upstream"));
            };
            let Some(Value::String(upstream)) = map.get("upstream") else {
                return Err(format!("Key \"upstream\" not found in {name}"));
            };
            let mut overrides = map.clone();
            overrides.remove("upstream");
            Definition::of(&Value::Object(overrides.clone()), name, UPSTREAM_KEYS)?;
            Ok((upstream.clone(), overrides))
        })
        .collect()
}

fn prefetch_of(n: f64) -> u16 {
    n.clamp(0.0, f64::from(u16::MAX)) as u16
}

fn delay(seconds: Option<f64>) -> Duration {
    Duration::from_secs_f64(
        seconds
            .unwrap_or(DEFAULT_RECONNECT_DELAY)
            .clamp(0.0, 86_400.0),
    )
}

/// A parameter's JSON object, read key by key with RabbitMQ's refusals.
struct Definition<'a> {
    map: &'a Map<String, Value>,
    /// The parameter's name, as RabbitMQ's refusals give it.
    name: String,
}

impl<'a> Definition<'a> {
    fn of(value: &'a Value, name: &str, known: &[&str]) -> Result<Definition<'a>, String> {
        let Value::Object(map) = value else {
            return Err(format!("{} must be a JSON object", erlang_term(value)));
        };
        let unknown: Vec<String> = map
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erlang_term(v)))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "Unrecognised terms [{}] in {name}",
                unknown.join(",")
            ));
        }
        Ok(Definition {
            map,
            name: name.to_string(),
        })
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn text(&self, key: &str) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!(
                "{key} should be binary, actually was {}",
                erlang_term(v)
            )),
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!(
                "{key} should be boolean, actually was {}",
                erlang_term(v)
            )),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(format!(
                "{key} should be a number, actually was {}",
                erlang_term(v)
            )),
        }
    }

    fn table(&self, key: &str) -> Result<Map<String, Value>, String> {
        match self.map.get(key) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(v) => Err(format!("{key} should be an object, actually was {v}")),
        }
    }

    /// One URI or a list of them (tried in turn), each an `amqp://` or
    /// `amqps://` URI.
    fn uris(&self, key: &str) -> Result<Vec<String>, String> {
        let list = match self.map.get(key) {
            None => return Err(format!("Key \"{key}\" not found in {}", self.name)),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "{key} should be list, actually was {}",
                        erlang_term(other)
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return Err(format!(
                    "{key} should be list, actually was {}",
                    erlang_term(v)
                ));
            }
        };
        for uri in &list {
            match uri.split_once("://") {
                Some(("amqp" | "amqps", _)) => {}
                Some((scheme, _)) => {
                    return Err(format!(
                        "\"{uri}\" not a valid URI: {{{{unexpected_uri_scheme,\"{scheme}\"}},\"{uri}\"}}"
                    ));
                }
                None => {
                    return Err(format!(
                        "\"{uri}\" not a valid URI: {{{{unable_to_parse_uri,no_scheme}},[]}}"
                    ));
                }
            }
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_minimal_shovel_gets_rabbitmqs_defaults() {
        let s = ShovelSpec::parse(&json!({
            "src-uri": "amqp://a", "src-queue": "q", "dest-uri": ["amqp://b", "amqp://c"]
        }))
        .unwrap();
        assert_eq!(s.ack_mode, AckMode::OnConfirm);
        assert_eq!(s.prefetch_count, 1000);
        assert_eq!(s.reconnect_delay, Duration::from_secs(5));
        assert_eq!(s.delete_after, DeleteAfter::Never);
        assert_eq!(s.dest_uris.len(), 2);
    }

    #[test]
    fn shovel_refusals() {
        let bad = [
            json!({"src-uri": "amqp://a", "dest-uri": "amqp://b"}),
            json!({"src-uri": "amqp://a", "src-queue": "q", "src-exchange": "x", "dest-uri": "amqp://b"}),
            json!({"src-uri": "amqp://a", "src-queue": "q", "dest-uri": "amqp://b", "ack-mode": "x"}),
            json!({"src-uri": "amqp://a", "src-queue": "q", "dest-uri": "amqp://b", "src-delete-after": "x"}),
            json!({"src-uri": "amqp://a", "src-queue": "q", "dest-uri": "amqp://b", "prefetch-count": "9"}),
            json!({"src-uri": "amqp://a", "src-queue": "q", "dest-uri": "amqp://b", "nope": 1}),
            json!({"src-uri": "foo://a", "src-queue": "q", "dest-uri": "amqp://b"}),
            json!({"src-uri": "amqp://a", "src-queue": "q"}),
            json!({"src-uri": "amqp://a", "src-queue": "q", "dest-uri": "amqp://b",
                   "ack-mode": "no-ack", "src-delete-after": 5}),
        ];
        for b in bad {
            assert!(ShovelSpec::parse(&b).is_err(), "{b}");
        }
    }

    #[test]
    fn upstreams_and_sets() {
        let u = UpstreamSpec::parse(&json!({"uri": "amqp://up", "max-hops": 3, "expires": 60000}))
            .unwrap();
        assert_eq!(
            (u.max_hops, u.expires, u.prefetch_count),
            (3, Some(60000), 1000)
        );
        assert!(UpstreamSpec::parse(&json!({"max-hops": 3})).is_err());
        assert_eq!(
            UpstreamSpec::parse(&json!({"uri": "amqp://up", "max-hops": 0}))
                .unwrap()
                .max_hops,
            0
        );
        assert!(UpstreamSpec::parse(&json!({"uri": "amqp://up", "ack-mode": "x"})).is_err());
        let set = parse_upstream_set(&json!([{"upstream": "a"}, {"upstream": "b", "max-hops": 2}]))
            .unwrap();
        assert_eq!(set[1].0, "b");
        assert!(parse_upstream_set(&json!([{"nope": 1}])).is_err());
    }
}
