//! Dead-lettering: what a message becomes when its queue gives up on it,
//! and where it goes then.
//!
//! A queue collects the messages that die (rejected, expired, over a length
//! or delivery limit) while it holds its lock, and hands them to the broker
//! once the lock is released ([`QueueOwner::dead_letter`]), so a queue never
//! takes another queue's lock while holding its own. Here each is rewritten
//! the way RabbitMQ rewrites it and routed through the dead-letter exchange
//! like a publish.
//!
//! The rewrite follows RabbitMQ: an `x-death` entry per (queue, reason),
//! newest first, counting repeats; `x-first-death-*` set once and
//! `x-last-death-*` every time; the `expiration` property removed (kept as
//! `original-expiration`); with a dead-letter routing key the `CC` header is
//! dropped and the message routed with that key alone. A queue that would
//! close a cycle of deaths with no rejection in it is skipped
//! ([`DeadLetter::is_cycle`]).
//!
//! Counting, and dead letters that set off more dead letters (queued, not
//! recursed into), are `cascade`'s.
//!
//! [`QueueOwner::dead_letter`]: crate::queue::QueueOwner::dead_letter

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use smallvec::SmallVec;

use super::VHost;
use super::enqueue::enqueue;
use crate::exchange::RouteHeaders;
use crate::message::{self, Message};
use crate::metrics::MessageEvent;
use crate::queue::Reason;
use crate::queue::args::DeadLetterTarget;

impl VHost {
    /// Rewrite and route one queue's dead messages.
    pub(super) fn route_dead(
        &self,
        queue: &str,
        target: &DeadLetterTarget,
        dead: Vec<(Arc<Message>, Reason)>,
        now_ms: u64,
    ) {
        let mut routed = Vec::new();
        for (message, reason) in dead {
            let Some(letter) = rewrite(&message, reason, queue, target, now_ms) else {
                continue;
            };
            let Some(exchange) = self.exchange(&letter.exchange) else {
                tracing::debug!(exchange = %letter.exchange, "dead-letter exchange missing; message dropped");
                continue;
            };
            let headers = RouteHeaders::of_properties(&letter.message.properties);
            routed.clear();
            for key in &letter.routing_keys {
                self.route(&exchange, key.as_str(), &headers, &mut routed);
            }
            if letter.routing_keys.len() > 1 {
                routed.sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
                routed.dedup_by(|a, b| Arc::ptr_eq(a, b));
            }
            routed.retain(|q| !letter.is_cycle(q.name()));
            // Dead letters hold nobody back: the queue they died in has no
            // publisher to slow.
            enqueue(&letter.message, &mut routed, &mut Vec::new());
        }
    }
}

pub(super) fn dead_lettered(reason: Reason) -> MessageEvent {
    match reason {
        Reason::Expired => MessageEvent::DeadLetteredExpired,
        Reason::MaxLen => MessageEvent::DeadLetteredMaxLen,
        Reason::Rejected => MessageEvent::DeadLetteredRejected,
        Reason::DeliveryLimit => MessageEvent::DeadLetteredDeliveryLimit,
    }
}

/// A dead-lettered message, ready to route.
#[derive(Debug)]
pub struct DeadLetter {
    pub message: Arc<Message>,
    pub exchange: String,
    /// The keys to route with.
    pub routing_keys: SmallVec<[ShortString; 2]>,
    pub reason: Reason,
    /// The queue of each of its `x-death` entries, newest first, and
    /// whether it died there by a consumer's rejection.
    history: Vec<(String, bool)>,
}

impl DeadLetter {
    /// Whether routing this letter to `queue` would close a cycle: the
    /// message died in `queue` before, and neither that death nor any
    /// since was a consumer's rejection — RabbitMQ's rule: an automatic
    /// cycle is broken, one a consumer takes part in is the consumer's.
    pub fn is_cycle(&self, queue: &str) -> bool {
        if self.reason == Reason::Rejected {
            return false;
        }
        let Some(last_here) = self.history.iter().position(|(q, _)| q == queue) else {
            return false;
        };
        !self.history[..=last_here]
            .iter()
            .any(|&(_, rejected)| rejected)
    }
}

/// Rewrite `message` (which died in `queue` for `reason`) for `target`.
/// `None` if its properties cannot be parsed (they were validated on
/// publish, so only a corrupt store could cause that).
pub fn rewrite(
    message: &Message,
    reason: Reason,
    queue: &str,
    target: &DeadLetterTarget,
    now_ms: u64,
) -> Option<DeadLetter> {
    let props = message::parse(&message.properties)?;
    // The delivery count belongs to the queue the message died in.
    let mut headers = without(
        &props.headers().clone().unwrap_or_default(),
        "x-delivery-count",
    );
    let mut original_keys: SmallVec<[ShortString; 2]> = SmallVec::new();
    original_keys.push(message.routing_key.clone());
    original_keys.extend(
        message::header_routing_keys(&headers, "CC")
            .unwrap_or_default()
            .into_iter()
            .map(ShortString::from),
    );
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(1));
    entry.insert("reason".into(), long_string(reason.as_str()));
    entry.insert("queue".into(), long_string(queue));
    entry.insert("time".into(), AMQPValue::Timestamp(now_ms / 1000));
    entry.insert("exchange".into(), long_string(message.exchange.as_str()));
    entry.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(
            original_keys
                .iter()
                .map(|k| long_string(k.as_str()))
                .collect::<Vec<_>>(),
        )),
    );
    if let Some(expiration) = props.expiration() {
        entry.insert(
            "original-expiration".into(),
            long_string(expiration.as_str()),
        );
    }
    record_death(&mut headers, entry, queue, reason);
    for (suffix, value) in [
        ("reason", reason.as_str()),
        ("queue", queue),
        ("exchange", message.exchange.as_str()),
    ] {
        let first = ShortString::from(format!("x-first-death-{suffix}"));
        if !headers.inner().contains_key(&first) {
            headers.insert(first, long_string(value));
        }
        headers.insert(format!("x-last-death-{suffix}").into(), long_string(value));
    }
    let routing_keys = match &target.routing_key {
        Some(key) => {
            headers = without(&headers, "CC");
            SmallVec::from_iter([ShortString::from(key.clone())])
        }
        None => original_keys,
    };
    let history = history(&headers);
    let mut props = props.with_headers(headers);
    if props.expiration().is_some() {
        props = message::without(&props, message::Property::Expiration);
    }
    let routing_key = routing_keys
        .first()
        .cloned()
        .unwrap_or_else(|| message.routing_key.clone());
    Some(DeadLetter {
        message: Arc::new(Message {
            exchange: target.exchange.as_str().into(),
            routing_key,
            properties: message::encode(&props),
            body: message.body.clone(),
            persistent: message.persistent,
            priority: message.priority,
            expiration_ms: None,
            // It waits in its new queues from now.
            received_ms: now_ms,
        }),
        exchange: target.exchange.clone(),
        routing_keys,
        reason,
        history,
    })
}

/// The (queue, rejected) of each `x-death` entry, newest first.
fn history(headers: &FieldTable) -> Vec<(String, bool)> {
    let Some(AMQPValue::FieldArray(list)) = headers.inner().get("x-death") else {
        return Vec::new();
    };
    list.as_slice()
        .iter()
        .filter_map(|v| match v {
            AMQPValue::FieldTable(t) => Some((
                text(t, "queue").unwrap_or_default(),
                text(t, "reason").as_deref() == Some(Reason::Rejected.as_str()),
            )),
            _ => None,
        })
        .collect()
}

/// Add a death to `x-death`: an entry for the same queue and reason has its
/// count raised and moves to the front; otherwise `entry` goes first.
fn record_death(headers: &mut FieldTable, entry: FieldTable, queue: &str, reason: Reason) {
    let mut list: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = list.iter().position(|v| match v {
        AMQPValue::FieldTable(t) => {
            text(t, "queue").as_deref() == Some(queue)
                && text(t, "reason").as_deref() == Some(reason.as_str())
        }
        _ => false,
    });
    let head = match same.map(|i| list.remove(i)) {
        Some(AMQPValue::FieldTable(mut earlier)) => {
            let count = earlier
                .inner()
                .get("count")
                .and_then(crate::fields::int_value)
                .unwrap_or(0);
            earlier.insert(
                "count".into(),
                AMQPValue::LongLongInt(i64::try_from(count + 1).unwrap_or(i64::MAX)),
            );
            earlier
        }
        _ => entry,
    };
    list.insert(0, AMQPValue::FieldTable(head));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(list)),
    );
}

#[cfg(test)]
fn deaths(headers: &FieldTable) -> Option<Vec<FieldTable>> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => Some(
            a.as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::FieldTable(t) => Some(t.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn text(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn without(headers: &FieldTable, name: &str) -> FieldTable {
    FieldTable::from(
        headers
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;

    fn published(props: BasicProperties) -> Message {
        Message {
            exchange: "".into(),
            routing_key: "work".into(),
            properties: message::encode(&props),
            body: bytes::Bytes::from_static(b"body"),
            persistent: true,
            priority: 0,
            expiration_ms: None,
            received_ms: 0,
        }
    }

    fn headers_of(m: &Message) -> FieldTable {
        message::parse(&m.properties)
            .unwrap()
            .headers()
            .clone()
            .unwrap()
    }

    fn to_dlx(routing_key: Option<&str>) -> DeadLetterTarget {
        DeadLetterTarget {
            exchange: "dlx".into(),
            routing_key: routing_key.map(str::to_string),
        }
    }

    #[test]
    fn first_death_as_rabbitmq_writes_it() {
        let mut h = FieldTable::default();
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long_string("cc1")])),
        );
        let m = published(
            BasicProperties::default()
                .with_expiration("20".into())
                .with_headers(h)
                .with_delivery_mode(2),
        );
        let dl = rewrite(&m, Reason::Expired, "src", &to_dlx(None), 1_700_000_000_123).unwrap();
        assert_eq!(
            dl.routing_keys.as_slice(),
            &["work".into(), "cc1".into()][..]
        );
        let props = message::parse(&dl.message.properties).unwrap();
        assert_eq!(props.expiration(), &None);
        assert_eq!(props.delivery_mode(), &Some(2));
        let h = headers_of(&dl.message);
        let death = &deaths(&h).unwrap()[0];
        assert_eq!(death.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(text(death, "reason").as_deref(), Some("expired"));
        assert_eq!(text(death, "queue").as_deref(), Some("src"));
        assert_eq!(text(death, "exchange").as_deref(), Some(""));
        assert_eq!(text(death, "original-expiration").as_deref(), Some("20"));
        assert_eq!(
            death.inner().get("time"),
            Some(&AMQPValue::Timestamp(1_700_000_000))
        );
        for (k, v) in [
            ("x-first-death-reason", "expired"),
            ("x-first-death-queue", "src"),
            ("x-last-death-queue", "src"),
            ("x-first-death-exchange", ""),
        ] {
            assert_eq!(text(&h, k).as_deref(), Some(v), "{k}");
        }
    }

    #[test]
    fn repeated_deaths_merge_newest_first_and_cycles_are_detected() {
        let m = published(BasicProperties::default());
        let a = rewrite(&m, Reason::Expired, "a", &to_dlx(Some("k")), 1000).unwrap();
        let b = rewrite(&a.message, Reason::Expired, "b", &to_dlx(None), 2000).unwrap();
        let a2 = rewrite(&b.message, Reason::Expired, "a", &to_dlx(None), 3000).unwrap();
        let h = headers_of(&a2.message);
        let d = deaths(&h).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(text(&d[0], "queue").as_deref(), Some("a"));
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(text(&h, "x-first-death-queue").as_deref(), Some("a"));
        assert_eq!(text(&h, "x-last-death-queue").as_deref(), Some("a"));
        assert_eq!(b.routing_keys.as_slice(), &["k".into()][..]);
        assert!(a2.is_cycle("b"));
        assert!(!a2.is_cycle("c"));
        let rejected = rewrite(&b.message, Reason::Rejected, "c", &to_dlx(None), 4000).unwrap();
        assert!(!rejected.is_cycle("a"));
        let after_rejection =
            rewrite(&rejected.message, Reason::Expired, "d", &to_dlx(None), 5000).unwrap();
        assert!(!after_rejection.is_cycle("a"));
        assert!(!after_rejection.is_cycle("c"));
        // Only deaths since the last one in the target queue count: an
        // automatic cycle after a rejection is still a cycle.
        let again = rewrite(
            &after_rejection.message,
            Reason::Expired,
            "e",
            &to_dlx(None),
            6000,
        )
        .unwrap();
        assert!(again.is_cycle("d"));
        assert!(again.is_cycle("e"));
        assert!(!again.is_cycle("a"));
    }
}
