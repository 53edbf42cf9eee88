//! Redeclaration checks: whether an `exchange.declare` or `queue.declare`
//! for a name that exists asks for what exists, answered with RabbitMQ's
//! error texts (clients and their tests match on them).
//!
//! Pure functions of the existing entity and the request; they change
//! nothing.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::vhost::{ExchangeDeclare, QueueDeclare};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::Exchange;
use crate::fields::{int_value, type_name, value_text};
use crate::queue::Queue;

/// Queue arguments whose values must match on redeclaration, as RabbitMQ's
/// `declare_args`; other arguments are not compared.
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-queue-master-locator",
    "x-queue-leader-locator",
    "x-delivery-limit",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-backoff",
];

pub(super) fn check_exchange_equivalence(
    existing: &Exchange,
    d: &ExchangeDeclare,
    vhost: &str,
) -> AmqpResult<()> {
    let name = existing.name.as_str();
    let mismatch = |arg: &str, received: &str, current: &str| {
        AmqpError::precondition_failed(format!(
            "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received \
             '{received}' but current is '{current}'"
        ))
    };
    if existing.kind.as_str() != d.kind {
        return Err(mismatch("type", &d.kind, existing.kind.as_str()));
    }
    for (arg, received, current) in [
        ("durable", d.durable, existing.durable),
        ("auto_delete", d.auto_delete, existing.auto_delete),
        ("internal", d.internal, existing.internal),
    ] {
        if received != current {
            return Err(mismatch(arg, &received.to_string(), &current.to_string()));
        }
    }
    check_args_equivalence(
        &existing.arguments,
        &d.arguments,
        &["alternate-exchange"],
        &format!("exchange '{name}' in vhost '{vhost}'"),
    )
}

pub(super) fn check_queue_equivalence(
    existing: &Queue,
    d: &QueueDeclare,
    vhost: &str,
) -> AmqpResult<()> {
    let name = existing.name();
    let c = &existing.config;
    if d.exclusive != c.exclusive_owner.is_some() {
        // RabbitMQ treats an exclusive-flag mismatch as a locking failure.
        return Err(existing.locked_error());
    }
    for (arg, received, current) in [
        ("durable", d.durable, c.durable),
        ("auto_delete", d.auto_delete, c.auto_delete),
    ] {
        if received != current {
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received \
                 '{received}' but current is '{current}'"
            )));
        }
    }
    check_args_equivalence(
        &c.arguments,
        &d.arguments,
        EQUIVALENCE_ARGS,
        &format!("queue '{name}' in vhost '{vhost}'"),
    )
}

fn check_args_equivalence(
    current: &FieldTable,
    received: &FieldTable,
    keys: &[&str],
    what: &str,
) -> AmqpResult<()> {
    for key in keys {
        let (r, c) = (received.inner().get(*key), current.inner().get(*key));
        // No queue type means classic.
        let classic = |v: Option<&AMQPValue>| v.is_none_or(|v| value_text(v) == "classic");
        if *key == "x-queue-type" && classic(r) && classic(c) {
            continue;
        }
        if !arg_equal(r, c) {
            // Two values of one type are quoted bare; otherwise each is
            // described with its type, or as "none".
            let (r, c) = match (r, c) {
                (Some(r), Some(c)) if type_name(r) == type_name(c) => (
                    format!("'{}'", value_text(r)),
                    format!("'{}'", value_text(c)),
                ),
                _ => (describe_arg(r), describe_arg(c)),
            };
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{key}' for {what}: received {r} but current is {c}"
            )));
        }
    }
    Ok(())
}

/// RabbitMQ treats integer arguments of different widths as equal.
fn arg_equal(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (int_value(x), int_value(y)) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => false,
    }
}

/// Describe an argument the way RabbitMQ's equivalence errors do:
/// `the value '2000' of type 'signedint'` or `none`.
fn describe_arg(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => format!("the value '{}' of type '{}'", value_text(v), type_name(v)),
    }
}
