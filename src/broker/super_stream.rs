//! Super streams declared in one call: `exchange.declare` of type
//! `x-super-stream` with `x-partitions: N` makes the exchange, N durable
//! streams `<name>-0` … `<name>-<N-1>` and their bindings (key `"<i>"`,
//! `x-stream-partition-order: i`) — what `rabbitmq-streams
//! add_super_stream <name> --partitions N` makes. The stream arguments
//! given to the exchange (retention, segment size) are given to each
//! partition. Without `x-partitions` the exchange starts with none and
//! partitions are bound by hand, as in RabbitMQ.
//!
//! Deleting the exchange leaves the partitions and their data: deleting a
//! stream is always its own, explicit step.

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use super::equivalence::check_queue_equivalence;
use super::vhost::{QueueDeclare, VHost};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::super_stream::{PARTITION_ORDER, partition_order};
use crate::exchange::{Exchange, ExchangeKind};
use crate::fields::{int_value, type_name};
use crate::queue::Queue;

/// The exchange argument that asks for partitions.
pub const PARTITIONS: &str = "x-partitions";

/// Enough for any partitioning a single node serves.
const MAX_PARTITIONS: i128 = 1024;

/// Exchange arguments passed on to each partition.
const STREAM_ARGUMENTS: [&str; 3] = [
    "x-max-age",
    "x-max-length-bytes",
    "x-stream-max-segment-size-bytes",
];

/// The partition streams a declaration asks for, in order (none when it
/// is not a super stream or gives no `x-partitions`).
pub fn partition_names(name: &str, kind: &str, arguments: &FieldTable) -> AmqpResult<Vec<String>> {
    if ExchangeKind::parse(kind) != Some(ExchangeKind::SuperStream) {
        return Ok(Vec::new());
    }
    let Some(v) = arguments.inner().get(PARTITIONS) else {
        return Ok(Vec::new());
    };
    let n = int_value(v)
        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
        .ok_or_else(|| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{PARTITIONS}' for exchange '{name}': an integer from 1 to {MAX_PARTITIONS}, not {} {}",
                type_name(v),
                crate::fields::value_text(v)
            ))
        })?;
    let names: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    if let Some(long) = names.iter().find(|n| n.len() > 255) {
        return Err(AmqpError::precondition_failed(format!(
            "cannot name partition '{long}': longer than 255 bytes"
        )));
    }
    Ok(names)
}

/// A stream bound to a super stream learns its partition index (which
/// member of a consumer group reads it).
pub(super) fn note_partition(source: &Exchange, queue: &Queue, arguments: &FieldTable) {
    if source.kind != ExchangeKind::SuperStream {
        return;
    }
    if let (Some(stream), Some(order)) = (&queue.stream, partition_order(arguments)) {
        stream.set_partition(u32::try_from(order.max(0)).unwrap_or(u32::MAX));
    }
}

/// How each partition is declared: a durable stream with the exchange's
/// stream arguments.
fn partition_declare(exchange_arguments: &FieldTable, name: &str) -> QueueDeclare {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    for key in STREAM_ARGUMENTS {
        if let Some(v) = exchange_arguments.inner().get(key) {
            arguments.insert(key.into(), v.clone());
        }
    }
    QueueDeclare {
        name: ShortString::from(name.to_string()),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments,
    }
}

impl VHost {
    /// Refuse, before anything is made, partitions that exist as queues a
    /// declaration of the partition would not match.
    pub(super) fn check_partitions(
        &self,
        exchange_arguments: &FieldTable,
        partitions: &[String],
    ) -> AmqpResult<()> {
        for name in partitions {
            let existing = self.queues.read().get(name.as_str()).cloned();
            if let Some(q) = existing {
                check_queue_equivalence(
                    &q,
                    &partition_declare(exchange_arguments, name),
                    &self.name,
                )?;
            }
        }
        Ok(())
    }

    /// Declare each partition (an existing one is kept) and bind it.
    pub(super) fn create_partitions(
        &self,
        exchange: &Exchange,
        partitions: &[String],
        by: &str,
    ) -> AmqpResult<()> {
        for (i, name) in partitions.iter().enumerate() {
            let declare = partition_declare(&exchange.arguments, name);
            // Not a client's declaration: no connection owns it.
            let _ = self.declare_queue(0, &declare, |_| Ok(()), by)?;
            let mut binding = FieldTable::default();
            binding.insert(PARTITION_ORDER.into(), AMQPValue::LongLongInt(i as i64));
            let _ = self.bind_queue(
                0,
                name,
                exchange.name.as_str(),
                &i.to_string(),
                &binding,
                by,
            )?;
        }
        Ok(())
    }
}
