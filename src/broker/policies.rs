//! Policies: settings an operator applies to every queue (or exchange)
//! whose name matches a pattern, without touching the applications that
//! declare them.
//!
//! At most one policy applies to a queue: the matching one with the highest
//! priority (ties go to the name that sorts first). How its definition
//! combines with the queue's own arguments is [`QueueSettings::merge`]'s
//! business.
//!
//! [`QueueSettings::merge`]: crate::queue::args::QueueSettings::merge

use std::sync::Arc;

use super::pattern::Pattern;
use serde_json::{Map, Value};

use crate::queue::args::{Backoff, DeliveryLimit, Overflow, QueueType, RetryType, Tunables};
use crate::store::PolicyRecord;

/// What kind of entity a policy applies to (`apply-to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Queues,
    ClassicQueues,
    QuorumQueues,
    Streams,
    Exchanges,
}

impl ApplyTo {
    fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "all" => ApplyTo::All,
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            "exchanges" => ApplyTo::Exchanges,
            _ => return None,
        })
    }

    fn covers_queue(self, kind: QueueType) -> bool {
        match self {
            ApplyTo::All | ApplyTo::Queues => true,
            ApplyTo::ClassicQueues => kind == QueueType::Classic,
            ApplyTo::QuorumQueues => kind == QueueType::Quorum,
            ApplyTo::Streams => kind == QueueType::Stream,
            ApplyTo::Exchanges => false,
        }
    }
}

/// Definition keys Warren accepts but that change nothing here (mirroring,
/// queue versions, stream and federation settings), so definitions exported
/// from RabbitMQ import cleanly.
const IGNORED_KEYS: &[&str] = &[
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "queue-leader-locator",
    "dead-letter-strategy",
    "federation-upstream",
    "federation-upstream-set",
    "initial-cluster-size",
    "target-group-size",
];

/// The only keys an operator policy may set (RabbitMQ's
/// `operator_policy_validator`s): limits and TTLs, which it can only lower;
/// and, Warren's, a stream's `max-age`, so one operator policy caps the age
/// of every message in a vhost (`message-ttl` for queues).
pub const OPERATOR_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-age",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
];

/// Whether a policy is an operator's (limited keys) or a user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    User,
    Operator,
}

/// Why a policy is refused: the field at fault (`pattern`, `apply-to`,
/// `definition`) and the reason, in RabbitMQ's words where it has them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PolicyError {
    pub field: &'static str,
    pub reason: String,
}

impl PolicyError {
    fn definition(reason: String) -> PolicyError {
        PolicyError {
            field: "definition",
            reason,
        }
    }
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub record: PolicyRecord,
    pattern: Pattern,
    apply_to: ApplyTo,
    /// The definition's queue settings.
    pub queue: Tunables,
    /// The definition's `alternate-exchange`.
    pub alternate_exchange: Option<String>,
}

impl Policy {
    /// Validate a (user) policy; the error says what is wrong with it.
    pub fn new(record: PolicyRecord) -> Result<Policy, PolicyError> {
        Policy::of_kind(record, PolicyKind::User)
    }

    /// Validate an operator policy: as a policy, restricted to
    /// [`OPERATOR_KEYS`].
    pub fn operator(record: PolicyRecord) -> Result<Policy, PolicyError> {
        Policy::of_kind(record, PolicyKind::Operator)
    }

    pub fn of_kind(record: PolicyRecord, kind: PolicyKind) -> Result<Policy, PolicyError> {
        let pattern = Pattern::new(&record.pattern).map_err(|e| PolicyError {
            field: "pattern",
            reason: format!("pattern should be regular expression but is invalid: {e}"),
        })?;
        let apply_to = ApplyTo::parse(&record.apply_to).ok_or_else(|| PolicyError {
            field: "apply-to",
            reason: format!(
                "apply-to '{}' unrecognised; should be 'queues', 'classic_queues', \
                 'quorum_queues', 'exchanges' or 'all'",
                record.apply_to
            ),
        })?;
        if record.definition.is_empty() {
            return Err(PolicyError::definition("no policy provided".into()));
        }
        let (queue, alternate_exchange) =
            parse_definition(&record.definition, kind).map_err(PolicyError::definition)?;
        Ok(Policy {
            record,
            pattern,
            apply_to,
            queue,
            alternate_exchange,
        })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn applies_to_queue(&self, name: &str, kind: QueueType) -> bool {
        self.apply_to.covers_queue(kind) && self.pattern.is_match(name)
    }

    pub fn applies_to_exchange(&self, name: &str) -> bool {
        matches!(self.apply_to, ApplyTo::All | ApplyTo::Exchanges) && self.pattern.is_match(name)
    }
}

/// A JSON value as RabbitMQ's messages print the Erlang term it decodes
/// to: `<<"text">>`, `5`, `true`, lists and key-value pairs.
pub fn erlang_term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(erlang_term).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => format!(
            "[{}]",
            m.iter()
                .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erlang_term(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Pick the policy that applies among those that match.
pub fn winner<'a>(matching: impl Iterator<Item = &'a Arc<Policy>>) -> Option<&'a Arc<Policy>> {
    matching.min_by(|a, b| {
        b.record
            .priority
            .cmp(&a.record.priority)
            .then_with(|| a.record.name.cmp(&b.record.name))
    })
}

fn recognised(key: &str, kind: PolicyKind) -> bool {
    match kind {
        PolicyKind::Operator => OPERATOR_KEYS.contains(&key),
        PolicyKind::User => {
            IGNORED_KEYS.contains(&key)
                || OPERATOR_KEYS.contains(&key)
                || matches!(
                    key,
                    "overflow"
                        | "dead-letter-exchange"
                        | "dead-letter-routing-key"
                        | "delayed-retry-type"
                        | "delayed-retry-min"
                        | "delayed-retry-max"
                        | "delayed-retry-backoff"
                        | "consumer-timeout"
                        | "alternate-exchange"
                        | "max-age"
                        | "stream-max-segment-size-bytes"
                        | "schema-subject"
                        | "schema-version"
                        | "schema-invalid-exchange"
                )
        }
    }
}

fn parse_definition(
    def: &Map<String, Value>,
    kind: PolicyKind,
) -> Result<(Tunables, Option<String>), String> {
    // As RabbitMQ: keys nobody recognises are reported before any value.
    let unknown: Vec<String> = def
        .iter()
        .filter(|(k, _)| !recognised(k, kind))
        .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erlang_term(v)))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        ));
    }
    let mut t = Tunables {
        schema: crate::schema::Rule::from_policy(def)?,
        ..Default::default()
    };
    let mut alternate = None;
    for (key, value) in def {
        let invalid = |what: &str| format!("{} is not a valid {what}", erlang_term(value));
        let at_least = |min: u64, what: &str| {
            value
                .as_u64()
                .filter(|v| *v >= min)
                .ok_or_else(|| invalid(what))
        };
        let string = |what: &str| {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(what))
        };
        match key.as_str() {
            "message-ttl" => t.message_ttl = Some(at_least(0, "message TTL")?),
            "expires" => t.expires = Some(at_least(1, "queue expiry")?),
            "max-length" => t.max_length = Some(at_least(0, "maximum length")?),
            "max-length-bytes" => {
                t.max_length_bytes = Some(at_least(0, "maximum length in bytes")?)
            }
            "max-age" => {
                let text = value.as_str().unwrap_or_default();
                t.max_age = Some(
                    crate::queue::args::stream::duration_ms(text)
                        .ok_or_else(|| invalid("max-age"))?,
                );
            }
            "stream-max-segment-size-bytes" => {
                let n = at_least(1, "stream max segment size")?;
                if n > crate::queue::args::stream::MAX_SEGMENT_SIZE {
                    return Err(invalid("stream max segment size"));
                }
                t.stream_max_segment_size = Some(n);
            }
            // Accepted for compatibility; Warren keeps no separate
            // in-memory limit.
            "max-in-memory-length" | "max-in-memory-bytes" => {
                at_least(0, "maximum memory in bytes")?;
            }
            "overflow" => {
                t.overflow = Some(match value.as_str() {
                    Some("drop-head") => Overflow::DropHead,
                    Some("reject-publish") => Overflow::RejectPublish,
                    Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                    _ => return Err(invalid("overflow value")),
                })
            }
            "dead-letter-exchange" => {
                t.dead_letter_exchange = Some(string("dead letter exchange name")?)
            }
            "dead-letter-routing-key" => {
                t.dead_letter_routing_key = Some(string("dead letter routing key")?)
            }
            "delivery-limit" => {
                // Negative means unlimited, as in RabbitMQ 4.x.
                let v = value.as_i64().ok_or_else(|| invalid("delivery limit"))?;
                t.delivery_limit = Some(if v < 0 {
                    DeliveryLimit::Unlimited
                } else {
                    DeliveryLimit::Max(u32::try_from(v).unwrap_or(u32::MAX))
                });
            }
            "delayed-retry-type" => {
                t.retry_type = Some(match value.as_str() {
                    Some("disabled") => RetryType::Disabled,
                    Some("all") => RetryType::All,
                    Some("failed") => RetryType::Failed,
                    Some("returned") => RetryType::Returned,
                    _ => return Err(invalid("delayed-retry-type")),
                })
            }
            "delayed-retry-min" => t.retry_min = Some(at_least(0, "delayed-retry-min")?),
            "delayed-retry-max" => t.retry_max = Some(at_least(0, "delayed-retry-max")?),
            "delayed-retry-backoff" => {
                t.retry_backoff = Some(match value.as_str() {
                    Some("linear") => Backoff::Linear,
                    Some("exponential") => Backoff::Exponential,
                    _ => return Err(invalid("delayed-retry-backoff")),
                })
            }
            "consumer-timeout" => t.consumer_timeout = Some(at_least(1, "consumer timeout")?),
            "alternate-exchange" => alternate = Some(string("alternate exchange name")?),
            _ => {}
        }
    }
    Ok((t, alternate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, pattern: &str, priority: i64, definition: Value) -> PolicyRecord {
        PolicyRecord {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: "queues".into(),
            priority,
            definition: definition.as_object().cloned().unwrap_or_default(),
        }
    }

    fn policy(
        name: &str,
        pattern: &str,
        priority: i64,
        definition: Value,
    ) -> Result<Policy, String> {
        Policy::new(record(name, pattern, priority, definition)).map_err(|e| e.reason)
    }

    #[test]
    fn definitions_are_validated() {
        let p = policy(
            "ttl",
            "^orders\\.",
            0,
            json!({"message-ttl": 1000, "dead-letter-exchange": "dlx", "ha-mode": "all"}),
        )
        .unwrap();
        assert_eq!(p.queue.message_ttl, Some(1000));
        assert!(p.applies_to_queue("orders.eu", QueueType::Classic));
        assert!(!p.applies_to_queue("billing", QueueType::Classic));
        assert!(!p.applies_to_exchange("orders.x"));
        assert!(policy("x", "(", 0, json!({"max-length": 1})).is_err());
        assert!(policy("x", ".*", 0, json!({"max-length": -1})).is_err());
        assert!(policy("x", ".*", 0, json!({"overflow": "sideways"})).is_err());
    }

    /// The texts RabbitMQ 3.10.8 answers `PUT /api/policies` with (inside
    /// its "Validation failed" wrapper).
    #[test]
    fn refusals_carry_rabbitmq_texts() {
        let cases = [
            (
                json!({"colour": "blue", "size": 3}),
                "[{<<\"colour\">>,<<\"blue\">>},{<<\"size\">>,3}] are not recognised policy settings",
            ),
            (
                json!({"max-length": -1}),
                "-1 is not a valid maximum length",
            ),
            (
                json!({"max-length": "x"}),
                "<<\"x\">> is not a valid maximum length",
            ),
            (
                json!({"max-length": 1.5}),
                "1.5 is not a valid maximum length",
            ),
            (
                json!({"message-ttl": true}),
                "true is not a valid message TTL",
            ),
            (json!({"expires": 0}), "0 is not a valid queue expiry"),
            (
                json!({"max-length-bytes": -1}),
                "-1 is not a valid maximum length in bytes",
            ),
            (
                json!({"overflow": "sideways"}),
                "<<\"sideways\">> is not a valid overflow value",
            ),
            (
                json!({"dead-letter-exchange": 5}),
                "5 is not a valid dead letter exchange name",
            ),
            (
                json!({"dead-letter-routing-key": 5}),
                "5 is not a valid dead letter routing key",
            ),
            (
                json!({"alternate-exchange": 5}),
                "5 is not a valid alternate exchange name",
            ),
            (
                json!({"delivery-limit": "x"}),
                "<<\"x\">> is not a valid delivery limit",
            ),
            (json!({}), "no policy provided"),
        ];
        for (definition, text) in cases {
            assert_eq!(
                policy("x", ".*", 0, definition.clone()).unwrap_err(),
                text,
                "{definition}"
            );
        }
        let bad_pattern = Policy::new(record("x", "(", 0, json!({"max-length": 1}))).unwrap_err();
        assert_eq!(bad_pattern.field, "pattern");
        assert!(
            bad_pattern
                .reason
                .starts_with("pattern should be regular expression but is invalid: "),
            "{bad_pattern}"
        );
        assert!(!bad_pattern.reason.contains('\n'));
        let mut sideways = record("x", ".*", 0, json!({"max-length": 1}));
        sideways.apply_to = "sideways".into();
        let e = Policy::new(sideways).unwrap_err();
        assert_eq!(e.field, "apply-to");
        assert!(
            e.reason.starts_with("apply-to 'sideways' unrecognised"),
            "{e}"
        );
    }

    #[test]
    fn operator_policies_set_limits_and_ttls_only() {
        let op = Policy::operator(record(
            "cap",
            ".*",
            0,
            json!({"max-length": 2, "message-ttl": 10, "max-in-memory-length": 5,
                   "delivery-limit": 3, "expires": 1000, "max-length-bytes": 99}),
        ))
        .unwrap();
        assert_eq!(op.queue.max_length, Some(2));
        assert_eq!(op.queue.delivery_limit, Some(DeliveryLimit::Max(3)));
        // Warren's: a stream's max-age, to cap message age vhost-wide.
        let age = Policy::operator(record("age", ".*", 0, json!({"max-age": "7D"}))).unwrap();
        assert_eq!(age.queue.max_age, Some(7 * 24 * 3600 * 1000));
        for refused in [
            json!({"dead-letter-exchange": "x"}),
            json!({"overflow": "drop-head"}),
            json!({"alternate-exchange": "x"}),
            json!({"queue-mode": "lazy"}),
        ] {
            let e = Policy::operator(record("cap", ".*", 0, refused.clone())).unwrap_err();
            assert!(
                e.reason.ends_with("are not recognised policy settings"),
                "{refused}: {e}"
            );
        }
        assert_eq!(
            Policy::operator(record("cap", ".*", 0, json!({"max-length": -1})))
                .unwrap_err()
                .reason,
            "-1 is not a valid maximum length"
        );
    }

    #[test]
    fn highest_priority_wins_then_name() {
        let a = policy("a", ".*", 1, json!({"max-length": 1})).unwrap();
        let b = policy("b", ".*", 5, json!({"max-length": 2})).unwrap();
        let c = policy("c", ".*", 5, json!({"max-length": 3})).unwrap();
        let all = [a, c, b].map(Arc::new);
        assert_eq!(winner(all.iter()).map(|p| p.name()), Some("b"));
    }
}
