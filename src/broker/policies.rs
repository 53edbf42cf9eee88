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

use regex::Regex;
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
    Exchanges,
}

impl ApplyTo {
    fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "all" => ApplyTo::All,
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "exchanges" => ApplyTo::Exchanges,
            _ => return None,
        })
    }

    fn covers_queue(self, kind: QueueType) -> bool {
        match self {
            ApplyTo::All | ApplyTo::Queues => true,
            ApplyTo::ClassicQueues => kind == QueueType::Classic,
            ApplyTo::QuorumQueues => kind == QueueType::Quorum,
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
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "queue-leader-locator",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "dead-letter-strategy",
    "max-age",
    "stream-max-segment-size-bytes",
    "federation-upstream",
    "federation-upstream-set",
    "initial-cluster-size",
    "target-group-size",
];

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub record: PolicyRecord,
    pattern: Regex,
    apply_to: ApplyTo,
    /// The definition's queue settings.
    pub queue: Tunables,
    /// The definition's `alternate-exchange`.
    pub alternate_exchange: Option<String>,
}

impl Policy {
    /// Validate a policy definition; the error says what is wrong with it.
    pub fn new(record: PolicyRecord) -> Result<Policy, String> {
        let pattern = Regex::new(&record.pattern)
            .map_err(|e| format!("invalid pattern '{}': {e}", record.pattern))?;
        let apply_to = ApplyTo::parse(&record.apply_to).ok_or_else(|| {
            format!(
                "'{}' is not a valid apply-to value (all, queues, classic_queues, \
                 quorum_queues, exchanges)",
                record.apply_to
            )
        })?;
        if record.definition.is_empty() {
            return Err("a policy definition must set at least one key".into());
        }
        let (queue, alternate_exchange) = parse_definition(&record.definition)?;
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

/// Pick the policy that applies among those that match.
pub fn winner<'a>(matching: impl Iterator<Item = &'a Arc<Policy>>) -> Option<&'a Arc<Policy>> {
    matching.min_by(|a, b| {
        b.record
            .priority
            .cmp(&a.record.priority)
            .then_with(|| a.record.name.cmp(&b.record.name))
    })
}

fn parse_definition(def: &Map<String, Value>) -> Result<(Tunables, Option<String>), String> {
    let mut t = Tunables::default();
    let mut alternate = None;
    let mut unknown = Vec::new();
    for (key, value) in def {
        let non_negative = || {
            value
                .as_u64()
                .ok_or_else(|| format!("{key} must be a non-negative integer, got {value}"))
        };
        let string = || {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{key} must be a string, got {value}"))
        };
        match key.as_str() {
            "message-ttl" => t.message_ttl = Some(non_negative()?),
            "expires" => {
                let v = non_negative()?;
                if v == 0 {
                    return Err("expires must be greater than 0".into());
                }
                t.expires = Some(v);
            }
            "max-length" => t.max_length = Some(non_negative()?),
            "max-length-bytes" => t.max_length_bytes = Some(non_negative()?),
            "overflow" => {
                t.overflow = Some(match string()?.as_str() {
                    "drop-head" => Overflow::DropHead,
                    "reject-publish" => Overflow::RejectPublish,
                    "reject-publish-dlx" => Overflow::RejectPublishDlx,
                    other => return Err(format!("{other} is not a valid overflow value")),
                })
            }
            "dead-letter-exchange" => t.dead_letter_exchange = Some(string()?),
            "dead-letter-routing-key" => t.dead_letter_routing_key = Some(string()?),
            "delivery-limit" => {
                let v = value
                    .as_i64()
                    .ok_or_else(|| format!("delivery-limit must be an integer, got {value}"))?;
                t.delivery_limit = Some(if v < 0 {
                    DeliveryLimit::Unlimited
                } else {
                    DeliveryLimit::Max(u32::try_from(v).unwrap_or(u32::MAX))
                });
            }
            "delayed-retry-type" => {
                t.retry_type = Some(match string()?.as_str() {
                    "disabled" => RetryType::Disabled,
                    "all" => RetryType::All,
                    "failed" => RetryType::Failed,
                    "returned" => RetryType::Returned,
                    other => return Err(format!("{other} is not a valid delayed-retry-type")),
                })
            }
            "delayed-retry-min" => t.retry_min = Some(non_negative()?),
            "delayed-retry-max" => t.retry_max = Some(non_negative()?),
            "delayed-retry-backoff" => {
                t.retry_backoff = Some(match string()?.as_str() {
                    "linear" => Backoff::Linear,
                    "exponential" => Backoff::Exponential,
                    other => return Err(format!("{other} is not a valid delayed-retry-backoff")),
                })
            }
            "consumer-timeout" => {
                let v = non_negative()?;
                if v == 0 {
                    return Err("consumer-timeout must be greater than 0".into());
                }
                t.consumer_timeout = Some(v);
            }
            "alternate-exchange" => alternate = Some(string()?),
            k if IGNORED_KEYS.contains(&k) => {}
            other => unknown.push(other.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "{} are not recognised policy settings",
            unknown.join(", ")
        ));
    }
    Ok((t, alternate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(
        name: &str,
        pattern: &str,
        priority: i64,
        definition: Value,
    ) -> Result<Policy, String> {
        Policy::new(PolicyRecord {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: "queues".into(),
            priority,
            definition: definition.as_object().cloned().unwrap_or_default(),
        })
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
        assert_eq!(
            policy("x", ".*", 0, json!({"colour": "blue"})).unwrap_err(),
            "colour are not recognised policy settings"
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
