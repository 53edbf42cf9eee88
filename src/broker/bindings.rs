//! The canonical set of bindings in one vhost.
//!
//! Exchange routers are a fast index derived from this set; this is the
//! record of what was bound, used to answer "is this exchange in use", to
//! remove every binding of a deleted queue or exchange, and to list bindings.
//! A binding is identified by source, destination, routing key and
//! arguments, as in RabbitMQ.

use std::collections::{HashMap, HashSet};

use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::{FieldTable, ShortString};

use crate::fields;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestinationName {
    Queue(ShortString),
    Exchange(ShortString),
}

impl DestinationName {
    pub fn name(&self) -> &str {
        match self {
            DestinationName::Queue(n) | DestinationName::Exchange(n) => n.as_str(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub source: ShortString,
    pub destination: DestinationName,
    pub routing_key: ShortString,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BindingKey {
    source: ShortString,
    destination: DestinationName,
    routing_key: ShortString,
    /// Arguments in wire form: FieldTable is sorted, so this is canonical.
    arguments: Vec<u8>,
}

impl BindingKey {
    fn of(b: &Binding) -> BindingKey {
        BindingKey {
            source: b.source.clone(),
            destination: b.destination.clone(),
            routing_key: b.routing_key.clone(),
            arguments: fields::generate(|ctx| gen_field_table(&b.arguments)(ctx)),
        }
    }
}

#[derive(Debug, Default)]
pub struct Bindings {
    all: HashMap<BindingKey, Binding>,
    by_source: HashMap<ShortString, HashSet<BindingKey>>,
    by_destination: HashMap<DestinationName, HashSet<BindingKey>>,
}

impl Bindings {
    /// Record a binding; false if it already existed.
    pub fn insert(&mut self, binding: Binding) -> bool {
        let key = BindingKey::of(&binding);
        if self.all.contains_key(&key) {
            return false;
        }
        self.by_source
            .entry(binding.source.clone())
            .or_default()
            .insert(key.clone());
        self.by_destination
            .entry(binding.destination.clone())
            .or_default()
            .insert(key.clone());
        self.all.insert(key, binding);
        true
    }

    pub fn contains(&self, binding: &Binding) -> bool {
        self.all.contains_key(&BindingKey::of(binding))
    }

    /// Forget a binding; false if there was no such binding.
    pub fn remove(&mut self, binding: &Binding) -> bool {
        let key = BindingKey::of(binding);
        self.remove_key(&key).is_some()
    }

    fn remove_key(&mut self, key: &BindingKey) -> Option<Binding> {
        let binding = self.all.remove(key)?;
        if let Some(set) = self.by_source.get_mut(&key.source) {
            set.remove(key);
            if set.is_empty() {
                self.by_source.remove(&key.source);
            }
        }
        if let Some(set) = self.by_destination.get_mut(&key.destination) {
            set.remove(key);
            if set.is_empty() {
                self.by_destination.remove(&key.destination);
            }
        }
        Some(binding)
    }

    pub fn has_source(&self, exchange: &str) -> bool {
        self.by_source.contains_key(exchange)
    }

    pub fn has_destination(&self, destination: &DestinationName) -> bool {
        self.by_destination.contains_key(destination)
    }

    /// Remove and return every binding that leads to `destination`.
    pub fn remove_destination(&mut self, destination: &DestinationName) -> Vec<Binding> {
        let keys: Vec<BindingKey> = self
            .by_destination
            .get(destination)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter().filter_map(|k| self.remove_key(k)).collect()
    }

    /// Remove and return every binding whose source is `exchange`.
    pub fn remove_source(&mut self, exchange: &str) -> Vec<Binding> {
        let keys: Vec<BindingKey> = self
            .by_source
            .get(exchange)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter().filter_map(|k| self.remove_key(k)).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.all.values()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(src: &str, q: &str, rk: &str) -> Binding {
        Binding {
            source: src.into(),
            destination: DestinationName::Queue(q.into()),
            routing_key: rk.into(),
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn insert_is_idempotent_and_indexes_both_ends() {
        let mut s = Bindings::default();
        assert!(s.insert(b("x", "q", "k")));
        assert!(!s.insert(b("x", "q", "k")));
        assert!(s.insert(b("x", "q", "k2")));
        assert!(s.has_source("x"));
        assert_eq!(
            s.remove_destination(&DestinationName::Queue("q".into()))
                .len(),
            2
        );
        assert!(!s.has_source("x"));
        assert!(s.is_empty());
    }
}
