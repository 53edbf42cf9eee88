//! Super stream exchange (`x-super-stream`): a partitioned stream. Each
//! binding is one partition, ordered by its `x-stream-partition-order`
//! argument (RabbitMQ's binding argument for super streams). A message
//! whose routing key is a binding key goes to that partition, as with
//! RabbitMQ's super stream exchange (a direct one) and clients that pick a
//! partition themselves; any other key is hashed — MurmurHash3 (x86, 32
//! bit, seed 104729) modulo the number of partitions, the hash RabbitMQ's
//! stream clients use — so a key always reaches the same partition and
//! Warren picks the partition a stream client would.

use std::io::Cursor;

use amq_protocol::types::FieldTable;

use super::{Destination, Router};
use crate::fields::int_value;

/// The binding argument that orders partitions.
pub const PARTITION_ORDER: &str = "x-stream-partition-order";

/// The seed RabbitMQ's stream clients hash routing keys with.
const SEED: u32 = 104_729;

#[derive(Debug)]
struct Partition {
    order: i64,
    key: String,
    destination: Destination,
}

#[derive(Debug, Default)]
pub struct SuperStreamRouter {
    /// Sorted by order, then key.
    partitions: Vec<Partition>,
}

/// Where a routing key lands among `n` partitions.
pub fn partition_of(routing_key: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    // Reading from a byte slice cannot fail.
    let hash = murmur3::murmur3_32(&mut Cursor::new(routing_key.as_bytes()), SEED).unwrap_or(0);
    hash as usize % n
}

/// A binding's partition order, if it has one.
pub fn partition_order(arguments: &FieldTable) -> Option<i64> {
    arguments
        .inner()
        .get(PARTITION_ORDER)
        .and_then(int_value)
        .and_then(|v| i64::try_from(v).ok())
}

impl Router for SuperStreamRouter {
    fn bind(&mut self, destination: Destination, routing_key: &str, arguments: &FieldTable) {
        let order = partition_order(arguments).unwrap_or(i64::MAX);
        let at = self
            .partitions
            .partition_point(|p| (p.order, p.key.as_str()) <= (order, routing_key));
        self.partitions.insert(
            at,
            Partition {
                order,
                key: routing_key.to_string(),
                destination,
            },
        );
    }

    fn unbind(&mut self, destination: &Destination, routing_key: &str, arguments: &FieldTable) {
        let order = partition_order(arguments).unwrap_or(i64::MAX);
        if let Some(i) = self
            .partitions
            .iter()
            .position(|p| p.order == order && p.key == routing_key && &p.destination == destination)
        {
            self.partitions.remove(i);
        }
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let exact: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.key == routing_key)
            .collect();
        if !exact.is_empty() {
            out.extend(exact.into_iter().map(|p| p.destination.clone()));
            return;
        }
        if let Some(p) = self
            .partitions
            .get(partition_of(routing_key, self.partitions.len()))
        {
            out.push(p.destination.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate is MurmurHash3 x86_32 (its published test vector), and
    /// routing is that hash modulo the partitions.
    #[test]
    fn the_hash_is_murmur3_with_the_stream_clients_seed() {
        let h = |s: &str| murmur3::murmur3_32(&mut Cursor::new(s.as_bytes()), SEED).unwrap();
        assert_eq!(
            murmur3::murmur3_32(&mut Cursor::new(b"hello".as_slice()), 0).unwrap(),
            0x248b_fa47
        );
        assert_eq!(partition_of("hello", 3), h("hello") as usize % 3);
        assert_eq!(partition_of("anything", 0), 0);
    }
}
