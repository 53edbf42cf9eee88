//! A stream consumer's arguments, read as RabbitMQ reads them:
//! `x-stream-offset` (where to start), `x-stream-filter` and
//! `x-stream-match-unfiltered` (which messages), and Warren's
//! `x-stream-automatic-offset-tracking` (remember where it got to) and
//! `x-stream-consumer-group` (one reader at a time among a group).

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;

use crate::error::AmqpError;
use crate::fields::{int_value, type_name};
use crate::store::log::Filter;

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    First,
    /// The last chunk written (RabbitMQ's "last").
    Last,
    /// What is published from now on (the default).
    Next,
    Offset(u64),
    /// The first chunk written at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// A consumer's stream arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConsumerArgs {
    pub start: StartAt,
    pub filter: Option<Filter>,
    /// Remember the offset acked through, per consumer tag.
    pub track: bool,
    /// Warren's `x-stream-consumer-group`: one consumer of the group reads
    /// the stream at a time, from where the group got to.
    pub group: Option<String>,
}

impl StreamConsumerArgs {
    /// `queue` names the stream in errors (`queue 'q' in vhost '/'`).
    pub fn parse(
        args: &FieldTable,
        now_ms: u64,
        queue: &str,
    ) -> Result<StreamConsumerArgs, AmqpError> {
        let a = args.inner();
        let start = match a.get("x-stream-offset") {
            None => StartAt::Next,
            Some(v) => start_at(v, now_ms).ok_or_else(|| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-stream-offset' for {queue}: {{invalid_stream_offset_arg,{}}}",
                    erlang_arg(v)
                ))
            })?,
        };
        let values: Option<Vec<Bytes>> = match a.get("x-stream-filter") {
            None => None,
            Some(AMQPValue::LongString(s)) => Some(vec![Bytes::copy_from_slice(s.as_bytes())]),
            Some(AMQPValue::ShortString(s)) => {
                Some(vec![Bytes::copy_from_slice(s.as_str().as_bytes())])
            }
            Some(AMQPValue::FieldArray(items)) => Some(
                items
                    .as_slice()
                    .iter()
                    .filter_map(|i| match i {
                        AMQPValue::LongString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
                        AMQPValue::ShortString(s) => {
                            Some(Bytes::copy_from_slice(s.as_str().as_bytes()))
                        }
                        _ => None,
                    })
                    .collect(),
            ),
            Some(other) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid x-stream-filter: a string or an array of strings, not {}",
                    type_name(other)
                )));
            }
        };
        let match_unfiltered = matches!(
            a.get("x-stream-match-unfiltered"),
            Some(AMQPValue::Boolean(true))
        );
        let track = matches!(
            a.get("x-stream-automatic-offset-tracking"),
            Some(AMQPValue::Boolean(true))
        );
        let group = match a.get("x-stream-consumer-group") {
            None => None,
            Some(v @ (AMQPValue::LongString(_) | AMQPValue::ShortString(_))) => {
                let name = crate::fields::value_text(v);
                if name.is_empty() || name.len() > 255 {
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid arg 'x-stream-consumer-group' for {queue}: a name of 1 to 255 bytes"
                    )));
                }
                Some(name)
            }
            Some(other) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg 'x-stream-consumer-group' for {queue}: a string, not {}",
                    type_name(other)
                )));
            }
        };
        Ok(StreamConsumerArgs {
            start,
            filter: values.map(|v| Filter::new(v, match_unfiltered)),
            track,
            group,
        })
    }
}

/// An argument as RabbitMQ's error terms print it: `{longstr,<<"5">>}`.
fn erlang_arg(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            format!("{{longstr,<<\"{}\">>}}", crate::fields::value_text(v))
        }
        other => format!(
            "{{{},{}}}",
            type_name(other),
            crate::fields::value_text(other)
        ),
    }
}

fn start_at(v: &AMQPValue, now_ms: u64) -> Option<StartAt> {
    match v {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            let text = crate::fields::value_text(v);
            match text.as_str() {
                "first" => Some(StartAt::First),
                "last" => Some(StartAt::Last),
                "next" => Some(StartAt::Next),
                interval => {
                    let ms = crate::queue::args::stream::duration_ms(interval)?;
                    Some(StartAt::Timestamp(now_ms.saturating_sub(ms)))
                }
            }
        }
        // AMQP timestamps are seconds.
        AMQPValue::Timestamp(secs) => Some(StartAt::Timestamp(secs.saturating_mul(1000))),
        // A negative offset is the first, as RabbitMQ's log reads it.
        other => match int_value(other)? {
            n if n < 0 => Some(StartAt::First),
            n => Some(StartAt::Offset(u64::try_from(n).unwrap_or(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldArray, LongString};

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
    }

    #[test]
    fn every_offset_spec_reads() {
        let now = 10_000_000;
        let start = |v: AMQPValue| {
            StreamConsumerArgs::parse(&args(&[("x-stream-offset", v)]), now, "queue 's'")
                .map(|a| a.start)
        };
        assert_eq!(
            StreamConsumerArgs::parse(&args(&[]), now, "queue 's'")
                .unwrap()
                .start,
            StartAt::Next
        );
        assert_eq!(start(text("first")), Ok(StartAt::First));
        assert_eq!(start(text("last")), Ok(StartAt::Last));
        assert_eq!(start(AMQPValue::LongLongInt(42)), Ok(StartAt::Offset(42)));
        assert_eq!(start(AMQPValue::ShortInt(3)), Ok(StartAt::Offset(3)));
        assert_eq!(start(AMQPValue::Timestamp(5)), Ok(StartAt::Timestamp(5000)));
        assert_eq!(start(text("10s")), Ok(StartAt::Timestamp(now - 10_000)));
        assert_eq!(start(text("1h")), Ok(StartAt::Timestamp(now - 3_600_000)));
        assert_eq!(start(AMQPValue::LongLongInt(-1)), Ok(StartAt::First));
        let e = start(text("5")).unwrap_err();
        assert_eq!(
            e.detail,
            "invalid arg 'x-stream-offset' for queue 's': {invalid_stream_offset_arg,{longstr,<<\"5\">>}}"
        );
        assert!(start(text("bogus")).is_err());
        assert!(start(AMQPValue::Boolean(true)).is_err());
    }

    #[test]
    fn filters_read_as_a_value_or_a_list() {
        let a = StreamConsumerArgs::parse(
            &args(&[
                (
                    "x-stream-filter",
                    AMQPValue::FieldArray(FieldArray::from(vec![text("a"), text("b")])),
                ),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
                (
                    "x-stream-automatic-offset-tracking",
                    AMQPValue::Boolean(true),
                ),
            ]),
            0,
            "queue 's'",
        )
        .unwrap();
        let f = a.filter.unwrap();
        assert!(f.accepts(Some(b"b")) && f.accepts(None) && !f.accepts(Some(b"c")));
        assert!(a.track);
    }
}
