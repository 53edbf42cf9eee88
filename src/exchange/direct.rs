//! Direct exchange: a message goes to the bindings whose key equals its
//! routing key exactly.

use std::collections::HashMap;

use amq_protocol::types::FieldTable;

use super::{Destination, Router};

#[derive(Debug, Default)]
pub struct DirectRouter {
    // A destination appears once per binding; two bindings of the same queue
    // and key (differing only in arguments) are two entries, so unbinding one
    // keeps the route alive.
    routes: HashMap<String, Vec<Destination>>,
}

impl Router for DirectRouter {
    fn bind(&mut self, destination: Destination, routing_key: &str, _arguments: &FieldTable) {
        self.routes
            .entry(routing_key.to_string())
            .or_default()
            .push(destination);
    }

    fn unbind(&mut self, destination: &Destination, routing_key: &str, _arguments: &FieldTable) {
        if let Some(list) = self.routes.get_mut(routing_key) {
            if let Some(pos) = list.iter().position(|d| d == destination) {
                list.swap_remove(pos);
            }
            if list.is_empty() {
                self.routes.remove(routing_key);
            }
        }
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        if let Some(list) = self.routes.get(routing_key) {
            out.extend(list.iter().cloned());
        }
    }
}
