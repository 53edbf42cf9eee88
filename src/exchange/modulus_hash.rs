//! Modulus-hash exchange (`x-modulus-hash`, in RabbitMQ's core since 4.3):
//! a message goes to one of the bound destinations, the one at its routing
//! key's hash modulo their number, with the destinations in a fixed order
//! (exchanges, then queues, by name, as RabbitMQ sorts them). Binding keys
//! are ignored; a destination bound twice counts twice. While the bindings
//! stay the same, a key always reaches the same destination, across
//! restarts too — so N queues with single active consumers give ordered,
//! partitioned work. Any change of the bindings moves most keys (that is
//! `x-consistent-hash`'s job).

use std::io::Cursor;

use amq_protocol::types::FieldTable;

use super::{Destination, Router};

#[derive(Debug)]
struct Bound {
    /// Sort key: kind (exchange < queue) and name.
    order: (bool, String),
    key: String,
    destination: Destination,
}

#[derive(Debug, Default)]
pub struct ModulusHashRouter {
    bound: Vec<Bound>,
}

impl Router for ModulusHashRouter {
    fn bind(&mut self, destination: Destination, routing_key: &str, _arguments: &FieldTable) {
        let order = destination.sort_key();
        let at = self.bound.partition_point(|b| b.order <= order);
        self.bound.insert(
            at,
            Bound {
                order,
                key: routing_key.to_string(),
                destination,
            },
        );
    }

    fn unbind(&mut self, destination: &Destination, routing_key: &str, _arguments: &FieldTable) {
        if let Some(i) = self
            .bound
            .iter()
            .position(|b| &b.destination == destination && b.key == routing_key)
        {
            self.bound.remove(i);
        }
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        if self.bound.is_empty() {
            return;
        }
        // Reading from a byte slice cannot fail.
        let hash =
            murmur3::murmur3_x64_128(&mut Cursor::new(routing_key.as_bytes()), 0).unwrap_or(0);
        let i = (hash % self.bound.len() as u128) as usize;
        out.push(self.bound[i].destination.clone());
    }
}
