//! Topic exchange: dot-separated routing keys matched against binding
//! patterns where `*` is exactly one word and `#` is zero or more words.
//!
//! Bindings live in a word trie, so routing costs a walk proportional to the
//! key's length, not to the number of bindings. Keys split exactly as
//! RabbitMQ splits them: `""` is zero words, `"a..b"` is `a`, `""`, `b`.

use std::collections::HashMap;

use amq_protocol::types::FieldTable;
use smallvec::SmallVec;

use super::{Destination, Router};

#[derive(Debug, Default)]
pub struct TopicRouter {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    words: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    destinations: Vec<Destination>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.destinations.is_empty()
    }

    fn child_mut(&mut self, word: &str) -> &mut Node {
        match word {
            "*" => self.star.get_or_insert_with(Default::default),
            "#" => self.hash.get_or_insert_with(Default::default),
            w => self.words.entry(w.into()).or_default(),
        }
    }

    /// Remove one occurrence of `destination` under `words`; returns whether
    /// this node became empty and can be pruned.
    fn remove(&mut self, words: &[&str], destination: &Destination) -> bool {
        match words.split_first() {
            None => {
                if let Some(pos) = self.destinations.iter().position(|d| d == destination) {
                    self.destinations.swap_remove(pos);
                }
            }
            Some((&word, rest)) => match word {
                "*" => {
                    if let Some(star) = self.star.as_mut()
                        && star.remove(rest, destination)
                    {
                        self.star = None;
                    }
                }
                "#" => {
                    if let Some(hash) = self.hash.as_mut()
                        && hash.remove(rest, destination)
                    {
                        self.hash = None;
                    }
                }
                w => {
                    if let Some(child) = self.words.get_mut(w)
                        && child.remove(rest, destination)
                    {
                        self.words.remove(w);
                    }
                }
            },
        }
        self.is_empty()
    }

    fn walk(&self, words: &[&str], out: &mut Vec<Destination>) {
        if let Some(hash) = &self.hash {
            for skip in 0..=words.len() {
                hash.walk(&words[skip..], out);
            }
        }
        match words.split_first() {
            None => out.extend(self.destinations.iter().cloned()),
            Some((word, rest)) => {
                if let Some(child) = self.words.get(*word) {
                    child.walk(rest, out);
                }
                if let Some(star) = &self.star {
                    star.walk(rest, out);
                }
            }
        }
    }
}

/// Split a key into words the way RabbitMQ does.
fn split(key: &str) -> SmallVec<[&str; 8]> {
    if key.is_empty() {
        SmallVec::new()
    } else {
        key.split('.').collect()
    }
}

impl Router for TopicRouter {
    fn bind(&mut self, destination: Destination, routing_key: &str, _arguments: &FieldTable) {
        let mut node = &mut self.root;
        for word in split(routing_key) {
            node = node.child_mut(word);
        }
        node.destinations.push(destination);
    }

    fn unbind(&mut self, destination: &Destination, routing_key: &str, _arguments: &FieldTable) {
        self.root.remove(&split(routing_key), destination);
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        self.root.walk(&split(routing_key), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, ExchangeKind};
    use std::sync::Arc;

    fn dest(name: &str) -> Destination {
        Destination::Exchange(Arc::new(Exchange::new(
            name.into(),
            ExchangeKind::Fanout,
            false,
            false,
            false,
            FieldTable::default(),
        )))
    }

    fn matches(pattern: &str, key: &str) -> bool {
        let mut r = TopicRouter::default();
        let d = dest("d");
        r.bind(d.clone(), pattern, &FieldTable::default());
        let mut out = Vec::new();
        r.route(key, None, &mut out);
        out.contains(&d)
    }

    /// The match table RabbitMQ 3.10.8 produced for these bindings and keys
    /// (Y = routed), recorded by a differential probe against the real broker.
    const RABBITMQ_TABLE: &str = "
        binding   | '' a a.b a..b . a.b.c a.x.y.b b.a a.b.b a.a .. a. .a A.B
        #         | Y  Y Y   Y    Y Y     Y       Y   Y     Y   Y  Y  Y  Y
        *         | .  Y .   .    . .     .       .   .     .   .  .  .  .
        a.#       | .  Y Y   Y    . Y     Y       .   Y     Y   .  Y  .  .
        #.a       | .  Y .   .    . .     .       Y   .     Y   .  .  Y  .
        a.*.b     | .  . .   Y    . .     .       .   Y     .   .  .  .  .
        *.*       | .  . Y   .    Y .     .       Y   .     Y   .  Y  Y  Y
        a.#.b     | .  . Y   Y    . .     Y       .   Y     .   .  .  .  .
        #.#       | Y  Y Y   Y    Y Y     Y       Y   Y     Y   Y  Y  Y  Y
        ''        | Y  . .   .    . .     .       .   .     .   .  .  .  .
        a.*       | .  . Y   .    . .     .       .   .     Y   .  Y  .  .
        *.a       | .  . .   .    . .     .       Y   .     Y   .  .  Y  .
        #.b       | .  . Y   Y    . .     Y       .   Y     .   .  .  .  .
        a         | .  Y .   .    . .     .       .   .     .   .  .  .  .
        a.#.#.b   | .  . Y   Y    . .     Y       .   Y     .   .  .  .  .
        *.#       | .  Y Y   Y    Y Y     Y       Y   Y     Y   Y  Y  Y  Y
        #.*       | .  Y Y   Y    Y Y     Y       Y   Y     Y   Y  Y  Y  Y
        a.*.#     | .  . Y   Y    . Y     Y       .   Y     Y   .  Y  .  .
    ";

    fn unquote(s: &str) -> &str {
        if s == "''" { "" } else { s }
    }

    #[test]
    fn matches_rabbitmq_exactly() {
        let mut lines = RABBITMQ_TABLE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        let header = lines.next().unwrap();
        let keys: Vec<&str> = header
            .split('|')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(unquote)
            .collect();
        for line in lines {
            let (binding, cells) = line.split_once('|').unwrap();
            let binding = unquote(binding.trim());
            for (key, cell) in keys.iter().zip(cells.split_whitespace()) {
                assert_eq!(
                    matches(binding, key),
                    cell == "Y",
                    "binding {binding:?} vs key {key:?}"
                );
            }
        }
    }

    #[test]
    fn unbind_prunes_and_keeps_other_bindings() {
        let mut r = TopicRouter::default();
        let (a, b) = (dest("a"), dest("b"));
        r.bind(a.clone(), "x.*", &FieldTable::default());
        r.bind(b.clone(), "x.*", &FieldTable::default());
        r.unbind(&a, "x.*", &FieldTable::default());
        let mut out = Vec::new();
        r.route("x.y", None, &mut out);
        assert_eq!(out, vec![b.clone()]);
        r.unbind(&b, "x.*", &FieldTable::default());
        assert!(r.root.is_empty());
    }
}
