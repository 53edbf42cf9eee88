//! Fanout exchange: every bound destination gets every message; routing
//! keys are ignored.

use amq_protocol::types::FieldTable;

use super::{Destination, Router};

#[derive(Debug, Default)]
pub struct FanoutRouter {
    destinations: Vec<Destination>,
}

impl Router for FanoutRouter {
    fn bind(&mut self, destination: Destination, _routing_key: &str, _arguments: &FieldTable) {
        self.destinations.push(destination);
    }

    fn unbind(&mut self, destination: &Destination, _routing_key: &str, _arguments: &FieldTable) {
        if let Some(pos) = self.destinations.iter().position(|d| d == destination) {
            self.destinations.swap_remove(pos);
        }
    }

    fn route(&self, _routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        out.extend(self.destinations.iter().cloned());
    }
}
