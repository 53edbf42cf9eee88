//! Queue arguments (`x-message-ttl`, `x-dead-letter-exchange`, …): parsing
//! and validation with RabbitMQ's error texts. The settings a queue runs
//! with once a policy is merged in are `settings`'s ([`QueueSettings`]).
//!
//! Some arguments fix what a queue *is* (type, priorities, single active
//! consumer) and only come from the declaration. The rest are [`Tunables`]:
//! a policy (and, for limits and TTLs, an operator policy) may set them
//! too, and [`QueueSettings::merge`] applies RabbitMQ's precedence — the
//! lower value wins for limits and TTLs, the queue's own argument wins for
//! everything else.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::fields::{int_value, type_name};

mod settings;
pub mod stream;

pub use settings::{AppliedPolicies, DeadLetterTarget, DelayedRetry, QueueSettings, lower};

/// RabbitMQ's highest supported `x-max-priority`.
pub const MAX_PRIORITY: u8 = 255;

/// The delivery limit quorum queues get when none is set (RabbitMQ 4.x).
pub const QUORUM_DEFAULT_DELIVERY_LIMIT: u32 = 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    #[default]
    Classic,
    /// Quorum-queue rules: durable, counts deliveries, default delivery
    /// limit. Not replicated (Warren runs one node).
    Quorum,
    /// An append-only log read by offset (`queue::stream`).
    Stream,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// What a full queue does with one more message (`x-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (dead-letter) the oldest messages.
    #[default]
    DropHead,
    /// Refuse the new message: nack its publisher.
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

impl Overflow {
    fn parse(s: &str) -> Option<Overflow> {
        Some(match s {
            "drop-head" => Overflow::DropHead,
            "reject-publish" => Overflow::RejectPublish,
            "reject-publish-dlx" => Overflow::RejectPublishDlx,
            _ => return None,
        })
    }

    pub fn rejects_publish(self) -> bool {
        self != Overflow::DropHead
    }
}

/// Which returned messages wait before they are delivered again
/// (`x-delayed-retry-type`, RabbitMQ 4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetryType {
    #[default]
    Disabled,
    All,
    /// Messages a consumer rejected or nacked.
    Failed,
    /// Messages that came back for other reasons (channel closed, recover).
    Returned,
}

impl RetryType {
    fn parse(s: &str) -> Option<RetryType> {
        Some(match s {
            "disabled" => RetryType::Disabled,
            "all" => RetryType::All,
            "failed" => RetryType::Failed,
            "returned" => RetryType::Returned,
            _ => return None,
        })
    }
}

/// How the retry delay grows with the delivery count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backoff {
    /// `min × count`, as RabbitMQ.
    #[default]
    Linear,
    /// `min × 2^(count-1)` plus up to a quarter more at random, so retries
    /// of many messages spread out (Warren's `x-delayed-retry-backoff`).
    Exponential,
}

/// A delivery limit: `-1` (any negative value) means unlimited, as in
/// RabbitMQ 4.x.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryLimit {
    #[default]
    Unlimited,
    Max(u32),
}

impl DeliveryLimit {
    fn min(self, other: DeliveryLimit) -> DeliveryLimit {
        match (self, other) {
            (DeliveryLimit::Max(a), DeliveryLimit::Max(b)) => DeliveryLimit::Max(a.min(b)),
            (DeliveryLimit::Max(a), _) | (_, DeliveryLimit::Max(a)) => DeliveryLimit::Max(a),
            _ => DeliveryLimit::Unlimited,
        }
    }
}

/// Settings a policy may also set; `None` where unset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tunables {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
    pub delivery_limit: Option<DeliveryLimit>,
    pub retry_type: Option<RetryType>,
    pub retry_min: Option<u64>,
    pub retry_max: Option<u64>,
    pub retry_backoff: Option<Backoff>,
    /// `x-consumer-timeout`: ms a delivery may stay unacknowledged.
    pub consumer_timeout: Option<u64>,
    /// A stream's `max-age` and `stream-max-segment-size-bytes` (policy
    /// keys; a stream's arguments are in `StreamArgs`).
    pub max_age: Option<u64>,
    pub stream_max_segment_size: Option<u64>,
    /// The schema its messages must match (`x-schema-subject`, policy
    /// `schema-subject`).
    pub schema: Option<crate::schema::Rule>,
}

/// Everything a declaration's arguments say, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueArgs {
    pub queue_type: QueueType,
    /// Highest priority level; `None` for a queue without priorities.
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    /// A last-value queue's key header (`x-last-value-key`, or Qpid's
    /// `qpid.last_value_queue_key`).
    pub last_value_key: Option<String>,
    /// Message deduplication (`x-message-deduplication` and companions).
    pub dedup: Option<super::dedup::DedupArgs>,
    pub tunables: Tunables,
    /// A stream's own arguments.
    pub stream: stream::StreamArgs,
}

/// What `queue.declare` asks for besides the arguments, for the checks that
/// depend on it.
#[derive(Clone, Copy, Debug)]
pub struct DeclareFlags {
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
}

/// Why an argument value is invalid, worded as RabbitMQ's error terms.
enum Invalid {
    /// `"expected integer, got longstr"` — RabbitMQ quotes these.
    Quoted(String),
    /// `{value_negative,-1}`, `invalid_overflow`, … — bare Erlang terms.
    Term(String),
}

struct Parser<'a> {
    queue: &'a str,
    vhost: &'a str,
}

impl Parser<'_> {
    fn error(&self, arg: &str, why: Invalid) -> AmqpError {
        let why = match why {
            Invalid::Quoted(s) => format!("\"{s}\""),
            Invalid::Term(s) => s,
        };
        AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for queue '{}' in vhost '{}': {why}",
            self.queue, self.vhost
        ))
    }

    fn integer(&self, arg: &str, v: &AMQPValue) -> AmqpResult<i128> {
        int_value(v).ok_or_else(|| {
            self.error(
                arg,
                Invalid::Quoted(format!("expected integer, got {}", type_name(v))),
            )
        })
    }

    fn non_negative(&self, arg: &str, v: &AMQPValue) -> AmqpResult<u64> {
        let i = self.integer(arg, v)?;
        if i < 0 {
            return Err(self.error(arg, Invalid::Term(format!("{{value_negative,{i}}}"))));
        }
        Ok(u64::try_from(i).unwrap_or(u64::MAX))
    }

    /// A time in ms: RabbitMQ caps these at 2^32-1 seconds.
    fn duration(&self, arg: &str, v: &AMQPValue) -> AmqpResult<u64> {
        const MAX: u64 = 4_294_967_295_000;
        let i = self.non_negative(arg, v)?;
        if i > MAX {
            return Err(self.error(arg, Invalid::Term(format!("{{value_too_large,{i}}}"))));
        }
        Ok(i)
    }

    fn positive(&self, arg: &str, v: &AMQPValue) -> AmqpResult<u64> {
        let i = self.non_negative(arg, v)?;
        if i == 0 {
            return Err(self.error(arg, Invalid::Term("{value_zero,0}".into())));
        }
        Ok(i)
    }

    fn string<'v>(&self, arg: &str, v: &'v AMQPValue) -> AmqpResult<std::borrow::Cow<'v, str>> {
        string_value(v).ok_or_else(|| {
            self.error(
                arg,
                Invalid::Term(format!("{{unacceptable_type,{}}}", type_name(v))),
            )
        })
    }

    /// The dead-letter exchange words a type error differently.
    fn dead_letter_name(&self, arg: &str, v: &AMQPValue) -> AmqpResult<String> {
        string_value(v).map(|s| s.into_owned()).ok_or_else(|| {
            AmqpError::precondition_failed(format!(
                "invalid type '{}' for arg '{arg}' in queue '{}' in vhost '{}'",
                type_name(v),
                self.queue,
                self.vhost
            ))
        })
    }
}

/// Quorum (and stream) queues must be durable, shared and kept.
fn check_replicated_flags(queue: &str, vhost: &str, flags: DeclareFlags) -> AmqpResult<()> {
    let invalid = |property: &str| {
        Err(AmqpError::precondition_failed(format!(
            "invalid property '{property}' for queue '{queue}' in vhost '{vhost}'"
        )))
    };
    if flags.auto_delete {
        return invalid("auto-delete");
    }
    if flags.exclusive {
        return invalid("exclusive-owner");
    }
    if !flags.durable {
        return invalid("non-durable");
    }
    Ok(())
}

fn string_value(v: &AMQPValue) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

impl QueueArgs {
    /// Validate a declaration's arguments as RabbitMQ does, with its reply
    /// texts. Unknown arguments are ignored, as RabbitMQ ignores them.
    pub fn parse(
        queue: &str,
        vhost: &str,
        flags: DeclareFlags,
        arguments: &FieldTable,
    ) -> AmqpResult<QueueArgs> {
        let p = Parser { queue, vhost };
        let mut out = QueueArgs::default();
        let t = &mut out.tunables;
        let args = arguments.inner();
        if let Some(v) = args.get("x-queue-type") {
            let kind = p.string("x-queue-type", v)?;
            out.queue_type = match kind.as_ref() {
                "classic" => QueueType::Classic,
                "quorum" => QueueType::Quorum,
                "stream" => {
                    check_replicated_flags(queue, vhost, flags)?;
                    out.queue_type = QueueType::Stream;
                    out.stream = stream::parse(&p, arguments)?;
                    if let Some(v) = args.get("x-max-length-bytes") {
                        t.max_length_bytes = Some(p.non_negative("x-max-length-bytes", v)?);
                    }
                    return Ok(out);
                }
                other => {
                    return Err(p.error(
                        "x-queue-type",
                        Invalid::Quoted(format!("unsupported queue type '{other}'")),
                    ));
                }
            };
        }
        t.schema = crate::schema::Rule::from_arguments(arguments).map_err(|e| {
            AmqpError::precondition_failed(format!(
                "invalid arg for queue '{queue}' in vhost '{vhost}': {e}"
            ))
        })?;
        for (key, value) in args {
            let key = key.as_str();
            match key {
                "x-message-ttl" => t.message_ttl = Some(p.duration(key, value)?),
                "x-expires" => {
                    p.positive(key, value)?;
                    t.expires = Some(p.duration(key, value)?);
                }
                "x-max-length" => t.max_length = Some(p.non_negative(key, value)?),
                "x-consumer-timeout" => {
                    p.positive(key, value)?;
                    t.consumer_timeout = Some(p.duration(key, value)?);
                }
                "x-max-length-bytes" => t.max_length_bytes = Some(p.non_negative(key, value)?),
                "x-max-priority" => {
                    let n = p.positive(key, value)?;
                    if n > u64::from(MAX_PRIORITY) {
                        return Err(
                            p.error(key, Invalid::Term(format!("{{max_value_exceeded,{n}}}")))
                        );
                    }
                    out.max_priority = Some(n as u8);
                }
                "x-overflow" => {
                    let s = p.string(key, value)?;
                    t.overflow =
                        Some(Overflow::parse(&s).ok_or_else(|| {
                            p.error(key, Invalid::Term("invalid_overflow".into()))
                        })?);
                }
                "x-dead-letter-exchange" => {
                    t.dead_letter_exchange = Some(p.dead_letter_name(key, value)?)
                }
                "x-dead-letter-routing-key" => {
                    t.dead_letter_routing_key = Some(p.string(key, value)?.into_owned())
                }
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(b) => out.single_active_consumer = *b,
                    other => {
                        return Err(p.error(
                            key,
                            Invalid::Term(format!("{{unacceptable_type,{}}}", type_name(other))),
                        ));
                    }
                },
                "x-last-value-key" | "qpid.last_value_queue_key" => {
                    out.last_value_key = Some(p.string(key, value)?.into_owned());
                }
                "x-delivery-limit" => {
                    let n = p.integer(key, value)?;
                    t.delivery_limit = Some(if n < 0 {
                        DeliveryLimit::Unlimited
                    } else {
                        DeliveryLimit::Max(u32::try_from(n).unwrap_or(u32::MAX))
                    });
                }
                "x-delayed-retry-type" => {
                    let s = p.string(key, value)?;
                    t.retry_type = Some(RetryType::parse(&s).ok_or_else(|| {
                        p.error(
                            key,
                            Invalid::Quoted(format!("unsupported delayed retry type '{s}'")),
                        )
                    })?);
                }
                "x-delayed-retry-min" => t.retry_min = Some(p.non_negative(key, value)?),
                "x-delayed-retry-max" => t.retry_max = Some(p.non_negative(key, value)?),
                "x-delayed-retry-backoff" => {
                    let s = p.string(key, value)?;
                    t.retry_backoff = Some(match s.as_ref() {
                        "linear" => Backoff::Linear,
                        "exponential" => Backoff::Exponential,
                        _ => {
                            return Err(p.error(
                                key,
                                Invalid::Quoted(format!("unsupported back-off '{s}'")),
                            ));
                        }
                    });
                }
                "x-queue-mode" => {
                    // Every Warren queue pages like a lazy queue; both modes
                    // are accepted for compatibility.
                    let s = p.string(key, value)?;
                    if !matches!(s.as_ref(), "default" | "lazy") {
                        return Err(p.error(
                            key,
                            Invalid::Quoted(format!("unsupported queue mode '{s}'")),
                        ));
                    }
                }
                _ => {}
            }
        }
        out.dedup = super::dedup::DedupArgs::parse(arguments).map_err(|why| {
            AmqpError::precondition_failed(format!(
                "invalid arg for queue '{queue}' in vhost '{vhost}': {why}"
            ))
        })?;
        if t.dead_letter_routing_key.is_some() && t.dead_letter_exchange.is_none() {
            return Err(p.error(
                "x-dead-letter-routing-key",
                Invalid::Term("routing_key_but_no_dlx_defined".into()),
            ));
        }
        if out.queue_type == QueueType::Quorum {
            check_replicated_flags(queue, vhost, flags)?;
        }
        Ok(out)
    }

    /// Number of priority levels (1 for a queue without priorities).
    pub fn levels(&self) -> usize {
        self.max_priority.map_or(1, |m| usize::from(m) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: DeclareFlags = DeclareFlags {
        durable: true,
        exclusive: false,
        auto_delete: false,
    };

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    pub(super) fn parse(pairs: &[(&str, AMQPValue)]) -> Result<QueueArgs, String> {
        QueueArgs::parse("q", "/", FLAGS, &table(pairs)).map_err(|e| e.reply_text())
    }

    pub(super) fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    #[test]
    fn rabbitmq_error_texts() {
        let cases: &[(&str, AMQPValue, &str)] = &[
            (
                "x-message-ttl",
                AMQPValue::LongInt(-1),
                "{value_negative,-1}",
            ),
            (
                "x-message-ttl",
                text("1000"),
                "\"expected integer, got longstr\"",
            ),
            (
                "x-message-ttl",
                AMQPValue::Double(1.5),
                "\"expected integer, got double\"",
            ),
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(4_294_967_296_000),
                "{value_too_large,4294967296000}",
            ),
            (
                "x-max-priority",
                AMQPValue::LongInt(256),
                "{max_value_exceeded,256}",
            ),
            ("x-max-priority", AMQPValue::LongInt(0), "{value_zero,0}"),
            (
                "x-max-length",
                AMQPValue::LongInt(-1),
                "{value_negative,-1}",
            ),
            ("x-overflow", text("foo"), "invalid_overflow"),
            (
                "x-overflow",
                AMQPValue::LongInt(1),
                "{unacceptable_type,signedint}",
            ),
            ("x-expires", AMQPValue::LongInt(0), "{value_zero,0}"),
            (
                "x-single-active-consumer",
                text("yes"),
                "{unacceptable_type,longstr}",
            ),
            (
                "x-queue-type",
                text("foo"),
                "\"unsupported queue type 'foo'\"",
            ),
        ];
        for (arg, value, why) in cases {
            let err = parse(&[(arg, value.clone())]).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "PRECONDITION_FAILED - invalid arg '{arg}' for queue 'q' in vhost '/': {why}"
                )
            );
        }
        assert_eq!(
            parse(&[("x-dead-letter-exchange", AMQPValue::LongInt(1))]).unwrap_err(),
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in \
             queue 'q' in vhost '/'"
        );
        assert!(
            parse(&[("x-dead-letter-routing-key", text("k"))])
                .unwrap_err()
                .ends_with("routing_key_but_no_dlx_defined")
        );
    }

    #[test]
    fn quorum_queues_must_be_durable_shared_and_kept() {
        let quorum = table(&[("x-queue-type", text("quorum"))]);
        let check = |durable, exclusive, auto_delete| {
            QueueArgs::parse(
                "q",
                "/",
                DeclareFlags {
                    durable,
                    exclusive,
                    auto_delete,
                },
                &quorum,
            )
            .map_err(|e| e.reply_text())
        };
        assert_eq!(
            check(true, false, false).unwrap().queue_type,
            QueueType::Quorum
        );
        assert!(
            check(false, false, false)
                .unwrap_err()
                .contains("'non-durable'")
        );
        assert!(
            check(true, true, false)
                .unwrap_err()
                .contains("'exclusive-owner'")
        );
        assert!(
            check(true, false, true)
                .unwrap_err()
                .contains("'auto-delete'")
        );
        let s = QueueSettings::merge(
            &check(true, false, false).unwrap(),
            AppliedPolicies::default(),
        );
        assert_eq!(s.delivery_limit, DeliveryLimit::Max(20));
    }
}
