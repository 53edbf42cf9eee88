//! Vhost and user limits, as RabbitMQ's `vhost-limits` parameter and user
//! `limits` carry them: `max-connections` and `max-queues` per vhost,
//! `max-connections` and `max-channels` per user. A missing or negative
//! value means no limit; 0 refuses every new connection, queue or channel.
//!
//! The values are checked where RabbitMQ checks them — `connection.open`,
//! `channel.open`, the declaration of a new queue — before anything is
//! allocated for the newcomer, and the refusals carry RabbitMQ's texts.

use serde::{Deserialize, Serialize};

/// Limits of one vhost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostLimits {
    #[serde(
        rename = "max-connections",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_connections: Option<i64>,
    #[serde(
        rename = "max-queues",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_queues: Option<i64>,
}

/// Limits of one user, across every vhost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimits {
    #[serde(
        rename = "max-connections",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_connections: Option<i64>,
    #[serde(
        rename = "max-channels",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_channels: Option<i64>,
}

impl UserLimits {
    pub fn is_empty(&self) -> bool {
        *self == UserLimits::default()
    }
}

/// The limit that `count` existing things would exceed by one more, if any.
pub fn reached(limit: Option<i64>, count: usize) -> Option<i64> {
    match limit {
        Some(l) if l >= 0 && count as u64 >= l as u64 => Some(l),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_means_unlimited_and_zero_refuses() {
        assert_eq!(reached(None, 1000), None);
        assert_eq!(reached(Some(-1), 1000), None);
        assert_eq!(reached(Some(0), 0), Some(0));
        assert_eq!(reached(Some(2), 1), None);
        assert_eq!(reached(Some(2), 2), Some(2));
    }

    #[test]
    fn limits_read_rabbitmq_json() {
        let v: VhostLimits = serde_json::from_str(r#"{"max-queues": 3}"#).unwrap();
        assert_eq!(v.max_queues, Some(3));
        assert_eq!(v.max_connections, None);
        let u: UserLimits =
            serde_json::from_str(r#"{"max-connections": 1, "max-channels": 2}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"max-connections":1,"max-channels":2}"#
        );
    }
}
