//! Arguments of a stream queue: retention (`x-max-length-bytes`,
//! `x-max-age`, `x-stream-max-segment-size-bytes`) and the queue
//! arguments that make no sense on a log, refused as RabbitMQ refuses them.

use amq_protocol::types::FieldTable;

use super::{Invalid, Parser};
use crate::error::{AmqpError, AmqpResult};

/// RabbitMQ's largest `x-stream-max-segment-size-bytes` (3 GB).
pub const MAX_SEGMENT_SIZE: u64 = 3_000_000_000;

/// Queue arguments a stream refuses: RabbitMQ's stream queue type does not
/// list them among its own (and Warren's delayed retries are for queues).
const NOT_FOR_STREAMS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-delivery-limit",
    "x-overflow",
    "x-single-active-consumer",
    "x-max-priority",
    "x-message-ttl",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
    "x-queue-mode",
    "x-queue-master-locator",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-backoff",
];

/// Leader locators RabbitMQ knows (one node here: all the same).
const LOCATORS: &[&str] = &["client-local", "balanced", "random", "least-leaders"];

/// What a stream's arguments say about retention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamArgs {
    pub max_age_ms: Option<u64>,
    pub max_segment_bytes: Option<u64>,
}

/// A RabbitMQ duration (`x-max-age`, an `x-stream-offset` interval): a
/// positive number and a unit, `Y` (365 days), `M` (30 days), `D`, `h`,
/// `m` or `s`.
pub fn duration_ms(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let number: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let ms: u64 = match unit {
        'Y' => 365 * 86_400_000,
        'M' => 30 * 86_400_000,
        'D' => 86_400_000,
        'h' => 3_600_000,
        'm' => 60_000,
        's' => 1_000,
        _ => return None,
    };
    (number > 0).then(|| number.saturating_mul(ms))
}

/// Check a stream declaration's arguments (flags are checked with the
/// quorum queue's rules by the caller), with RabbitMQ 3.10's texts.
pub(super) fn parse(p: &Parser<'_>, arguments: &FieldTable) -> AmqpResult<StreamArgs> {
    let mut out = StreamArgs::default();
    for (key, value) in arguments.inner() {
        let key = key.as_str();
        if NOT_FOR_STREAMS.contains(&key) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{}' in vhost '{}' of queue type \
                 rabbit_stream_queue",
                p.queue, p.vhost
            )));
        }
        match key {
            "x-max-age" => {
                let text = p.string(key, value)?;
                out.max_age_ms = Some(
                    duration_ms(&text)
                        .ok_or_else(|| p.error(key, Invalid::Term("invalid_max_age".into())))?,
                );
            }
            "x-max-length-bytes" => {
                p.non_negative(key, value)?;
            }
            "x-stream-max-segment-size-bytes" => {
                let n = p.non_negative(key, value)?;
                if n > MAX_SEGMENT_SIZE {
                    return Err(AmqpError::precondition_failed(
                        "Exceeded max value for x-stream-max-segment-size-bytes",
                    ));
                }
                out.max_segment_bytes = Some(n);
            }
            "x-initial-cluster-size" => {
                p.positive(key, value)?;
            }
            "x-queue-leader-locator" => {
                let s = p.string(key, value)?;
                if !LOCATORS.contains(&s.as_ref()) {
                    return Err(p.error(key, Invalid::Term("invalid_queue_locator_arg".into())));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_rabbitmq_reads_them() {
        assert_eq!(duration_ms("10s"), Some(10_000));
        assert_eq!(duration_ms("30m"), Some(1_800_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("7D"), Some(604_800_000));
        assert_eq!(duration_ms("1M"), Some(2_592_000_000));
        assert_eq!(duration_ms("1Y"), Some(31_536_000_000));
        for bad in ["", "s", "0s", "7X", "1.5h", "-1s", "h1"] {
            assert_eq!(duration_ms(bad), None, "{bad}");
        }
    }
}
