//! The settings a queue runs with: its arguments merged with the policy
//! and the operator policy that apply to it, with RabbitMQ's precedence,
//! and what the retry settings make of a returned message.

use super::{
    Backoff, DeliveryLimit, Overflow, QUORUM_DEFAULT_DELIVERY_LIMIT, QueueArgs, QueueType,
    RetryType, Tunables,
};

/// Where a queue's dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterTarget {
    pub exchange: String,
    /// Replaces the message's routing keys when set.
    pub routing_key: Option<String>,
}

/// How long returned messages wait before they are delivered again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayedRetry {
    pub when: RetryType,
    pub min_ms: u64,
    /// Cap on one delay; `None` for no cap.
    pub max_ms: Option<u64>,
    pub backoff: Backoff,
}

impl DelayedRetry {
    /// The delay before the `count`th redelivery of a message that came back
    /// (`failed` tells which kind of return it was).
    pub fn delay_ms(&self, failed: bool, count: u32) -> u64 {
        let applies = match self.when {
            RetryType::Disabled => false,
            RetryType::All => true,
            RetryType::Failed => failed,
            RetryType::Returned => !failed,
        };
        if !applies || count == 0 {
            return 0;
        }
        let delay = match self.backoff {
            Backoff::Linear => self.min_ms.saturating_mul(u64::from(count)),
            Backoff::Exponential => {
                let base = self
                    .min_ms
                    .saturating_mul(1u64.checked_shl(count - 1).unwrap_or(u64::MAX));
                // Jitter only adds: a retry never comes back early.
                base.saturating_add(rand::random_range(0..=base / 4))
            }
        };
        self.max_ms.map_or(delay, |max| delay.min(max))
    }
}

/// The policies that apply to one queue, each with its name: at most one
/// user policy and one operator policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppliedPolicies<'a> {
    pub policy: Option<(&'a str, &'a Tunables)>,
    pub operator: Option<(&'a str, &'a Tunables)>,
}

impl<'a> AppliedPolicies<'a> {
    /// A user policy alone.
    pub fn policy(policy: Option<(&'a str, &'a Tunables)>) -> AppliedPolicies<'a> {
        AppliedPolicies {
            policy,
            operator: None,
        }
    }

    /// The user policy's settings with the operator policy's laid over
    /// them. An operator policy may only set limits and TTLs (RabbitMQ
    /// refuses other keys), and where both set one the lower value wins:
    /// operators cap what applications and their policies ask for, never
    /// raise it (RabbitMQ's `merge_policy_value`).
    fn combined(&self) -> Option<Tunables> {
        let op = match (self.policy, self.operator) {
            (None, None) => return None,
            (Some((_, p)), None) => return Some(p.clone()),
            (_, Some((_, op))) => op,
        };
        let mut t = self.policy.map(|(_, p)| p.clone()).unwrap_or_default();
        t.message_ttl = lower(t.message_ttl, op.message_ttl);
        t.expires = lower(t.expires, op.expires);
        t.max_length = lower(t.max_length, op.max_length);
        t.max_length_bytes = lower(t.max_length_bytes, op.max_length_bytes);
        t.max_age = lower(t.max_age, op.max_age);
        t.delivery_limit = match (t.delivery_limit, op.delivery_limit) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        Some(t)
    }
}

/// The lower of two limits, either of which may be unset.
pub fn lower(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The settings a queue runs with: its arguments merged with the policies
/// that apply to it, if any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueSettings {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub dead_letter: Option<DeadLetterTarget>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub delivery_limit: DeliveryLimit,
    pub delayed_retry: Option<DelayedRetry>,
    /// Ms a delivery from this queue may stay unacknowledged, if the queue
    /// or its policy says (the server-wide `consumer_timeout` otherwise).
    pub consumer_timeout: Option<u64>,
    /// The schema messages must match: the argument's, else the policy's.
    pub schema: Option<std::sync::Arc<crate::schema::Rule>>,
    /// The policy that applies, for operators.
    pub policy: Option<String>,
    /// The operator policy that applies.
    pub operator_policy: Option<String>,
}

impl QueueSettings {
    /// RabbitMQ's precedence: for TTLs and limits the lower value wins;
    /// otherwise the queue's argument wins over the policy.
    pub fn merge(args: &QueueArgs, policies: AppliedPolicies<'_>) -> QueueSettings {
        let a = &args.tunables;
        let combined = policies.combined().unwrap_or_default();
        let p = &combined;
        let limit = match (a.delivery_limit, p.delivery_limit) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let exchange = a
            .dead_letter_exchange
            .clone()
            .or_else(|| p.dead_letter_exchange.clone());
        // The routing key goes with the exchange it was declared with.
        let routing_key = if a.dead_letter_exchange.is_some() {
            a.dead_letter_routing_key.clone()
        } else {
            a.dead_letter_routing_key
                .clone()
                .or_else(|| p.dead_letter_routing_key.clone())
        };
        let retry_type = a.retry_type.or(p.retry_type).unwrap_or_default();
        let delayed_retry = (retry_type != RetryType::Disabled).then(|| DelayedRetry {
            when: retry_type,
            min_ms: a.retry_min.or(p.retry_min).unwrap_or(0),
            max_ms: a.retry_max.or(p.retry_max),
            backoff: a.retry_backoff.or(p.retry_backoff).unwrap_or_default(),
        });
        QueueSettings {
            message_ttl: lower(a.message_ttl, p.message_ttl),
            expires: lower(a.expires, p.expires),
            dead_letter: exchange.map(|exchange| DeadLetterTarget {
                exchange,
                routing_key,
            }),
            max_length: lower(a.max_length, p.max_length),
            max_length_bytes: lower(a.max_length_bytes, p.max_length_bytes),
            overflow: a.overflow.or(p.overflow).unwrap_or_default(),
            delivery_limit: limit.unwrap_or(match args.queue_type {
                QueueType::Quorum => DeliveryLimit::Max(QUORUM_DEFAULT_DELIVERY_LIMIT),
                QueueType::Classic | QueueType::Stream => DeliveryLimit::Unlimited,
            }),
            delayed_retry,
            consumer_timeout: lower(a.consumer_timeout, p.consumer_timeout),
            schema: a
                .schema
                .clone()
                .or_else(|| p.schema.clone())
                .map(std::sync::Arc::new),
            policy: policies.policy.map(|(name, _)| name.to_string()),
            operator_policy: policies.operator.map(|(name, _)| name.to_string()),
        }
    }

    pub fn has_length_limit(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, text};
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn policy_precedence_lower_limit_wins_argument_wins_otherwise() {
        let args = parse(&[
            ("x-message-ttl", AMQPValue::LongInt(5000)),
            ("x-overflow", text("reject-publish")),
            ("x-max-length", AMQPValue::LongInt(10)),
        ])
        .unwrap();
        let policy = Tunables {
            message_ttl: Some(1000),
            max_length: Some(100),
            overflow: Some(Overflow::DropHead),
            dead_letter_exchange: Some("dlx".into()),
            dead_letter_routing_key: Some("dead".into()),
            ..Default::default()
        };
        let s = QueueSettings::merge(&args, AppliedPolicies::policy(Some(("p", &policy))));
        assert_eq!(s.message_ttl, Some(1000));
        assert_eq!(s.max_length, Some(10));
        assert_eq!(s.overflow, Overflow::RejectPublish);
        assert_eq!(
            s.dead_letter,
            Some(DeadLetterTarget {
                exchange: "dlx".into(),
                routing_key: Some("dead".into())
            })
        );
        assert_eq!(s.policy.as_deref(), Some("p"));
    }

    #[test]
    fn an_operator_policy_caps_arguments_and_the_policy() {
        let args = parse(&[
            ("x-max-length", AMQPValue::LongInt(10)),
            ("x-message-ttl", AMQPValue::LongInt(500)),
        ])
        .unwrap();
        let policy = Tunables {
            max_length_bytes: Some(4096),
            expires: Some(60_000),
            dead_letter_exchange: Some("dlx".into()),
            ..Default::default()
        };
        let operator = Tunables {
            max_length: Some(2),
            message_ttl: Some(1000),
            max_length_bytes: Some(1 << 20),
            expires: Some(1000),
            delivery_limit: Some(DeliveryLimit::Max(3)),
            ..Default::default()
        };
        let s = QueueSettings::merge(
            &args,
            AppliedPolicies {
                policy: Some(("p", &policy)),
                operator: Some(("op", &operator)),
            },
        );
        assert_eq!(s.max_length, Some(2), "the operator's lower cap wins");
        assert_eq!(s.message_ttl, Some(500), "the argument's lower TTL wins");
        assert_eq!(
            s.max_length_bytes,
            Some(4096),
            "the policy's lower cap wins"
        );
        assert_eq!(s.expires, Some(1000));
        assert_eq!(s.delivery_limit, DeliveryLimit::Max(3));
        assert_eq!(s.dead_letter.map(|d| d.exchange).as_deref(), Some("dlx"));
        assert_eq!(s.policy.as_deref(), Some("p"));
        assert_eq!(s.operator_policy.as_deref(), Some("op"));
        let alone = QueueSettings::merge(
            &parse(&[]).unwrap(),
            AppliedPolicies {
                policy: None,
                operator: Some(("op", &operator)),
            },
        );
        assert_eq!(alone.max_length, Some(2));
        assert_eq!(alone.policy, None);
    }

    #[test]
    fn retry_delays() {
        let linear = DelayedRetry {
            when: RetryType::Failed,
            min_ms: 100,
            max_ms: Some(250),
            backoff: Backoff::Linear,
        };
        assert_eq!(linear.delay_ms(true, 1), 100);
        assert_eq!(linear.delay_ms(true, 2), 200);
        assert_eq!(linear.delay_ms(true, 3), 250);
        assert_eq!(linear.delay_ms(false, 3), 0);
        let exp = DelayedRetry {
            when: RetryType::All,
            max_ms: None,
            backoff: Backoff::Exponential,
            ..linear
        };
        for count in 1..6 {
            let base = 100u64 << (count - 1);
            let d = exp.delay_ms(false, count);
            assert!(d >= base && d <= base + base / 4, "{count}: {d}");
        }
        let capped = DelayedRetry {
            max_ms: Some(300),
            ..exp
        };
        assert_eq!(capped.delay_ms(true, 5), 300);
    }
}
