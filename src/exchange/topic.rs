//! Topic exchange: dot-separated routing keys matched against binding
//! patterns where `*` is exactly one word and `#` is zero or more words.
//!
//! Bindings live in a word trie, so routing costs a walk proportional to the
//! key's length, not to the number of bindings. Keys split exactly as
//! RabbitMQ splits them: `""` is zero words, `"a..b"` is `a`, `""`, `b`.
//!
//! Routing is polynomial whatever the bindings. A `#` can swallow any
//! number of words, so a naive walk tries every split of the key between
//! the `#`s of a pattern: `#.#.#.#.#.#.#.#` against a 40-word key is
//! hundreds of millions of paths (RabbitMQ itself takes seconds on 20
//! words). Two things prevent it: bindings are stored in a canonical form
//! where each run of wildcards is its `*`s followed by at most one `#`
//! (`#.#` → `#`, `#.*.#` → `*.#`: the same words match), and the walk
//! remembers, for each `#` node it reaches through another `#`, the lowest
//! key position it has been expanded from — expanding from a position
//! covers every later one, so each (node, position) pair is visited at
//! most once: at worst nodes × words, usually the handful of nodes on the
//! key's path.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use amq_protocol::types::FieldTable;
use rustc_hash::FxHashMap;
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
}

/// One routing of one key through the trie.
struct Walk<'k, 'o> {
    words: &'k [&'k str],
    out: &'o mut Vec<Destination>,
    /// For each `#` node reached below another `#` (the only nodes that can
    /// be reached at more than one position), the lowest position it has
    /// been expanded from. A node reached only through words and `*`s sits
    /// at the one position its depth gives, and is reached once.
    expanded: FxHashMap<*const Node, usize>,
}

impl Walk<'_, '_> {
    /// `node` has matched the key's words before `pos`.
    fn node(&mut self, node: &Node, pos: usize, below_hash: bool) {
        if let Some(hash) = &node.hash {
            self.hash(hash, pos, below_hash);
        }
        match self.words.get(pos) {
            None => self.out.extend(node.destinations.iter().cloned()),
            Some(&word) => {
                if let Some(child) = node.words.get(word) {
                    self.node(child, pos + 1, below_hash);
                }
                if let Some(star) = &node.star {
                    self.node(star, pos + 1, below_hash);
                }
            }
        }
    }

    /// The `#` node `hash`, entered at `from`: it matches the words from
    /// `from` up to any later position, each of which then goes on from it.
    fn hash(&mut self, hash: &Node, from: usize, below_hash: bool) {
        let mut until = self.words.len() + 1;
        if below_hash {
            match self.expanded.entry(std::ptr::from_ref(hash)) {
                Entry::Occupied(mut lowest) => {
                    if from >= *lowest.get() {
                        return;
                    }
                    until = lowest.insert(from);
                }
                Entry::Vacant(lowest) => {
                    lowest.insert(from);
                }
            }
        }
        for pos in from..until {
            self.node(hash, pos, true);
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

/// A binding key's words in canonical form: each run of wildcards becomes
/// its `*`s followed by one `#` if it had any. A run of k `*`s and at least
/// one `#` matches k or more words whatever their order, so the binding
/// matches the same keys; bind and unbind both use this form.
fn canonical(key: &str) -> SmallVec<[&str; 8]> {
    let mut out = SmallVec::new();
    let mut pending_hash = false;
    for word in split(key) {
        match word {
            "#" => pending_hash = true,
            "*" => out.push("*"),
            w => {
                if std::mem::take(&mut pending_hash) {
                    out.push("#");
                }
                out.push(w);
            }
        }
    }
    if pending_hash {
        out.push("#");
    }
    out
}

impl Router for TopicRouter {
    fn bind(&mut self, destination: Destination, routing_key: &str, _arguments: &FieldTable) {
        let mut node = &mut self.root;
        for word in canonical(routing_key) {
            node = node.child_mut(word);
        }
        node.destinations.push(destination);
    }

    fn unbind(&mut self, destination: &Destination, routing_key: &str, _arguments: &FieldTable) {
        self.root.remove(&canonical(routing_key), destination);
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let words = split(routing_key);
        Walk {
            words: &words,
            out,
            expanded: FxHashMap::default(),
        }
        .node(&self.root, 0, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, ExchangeKind};
    use proptest::prelude::*;
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

    /// The definition of a match, tried every way: exponential, so only for
    /// short patterns and keys.
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
            Some((&p, rest)) => match key.split_first() {
                Some((&k, key_rest)) => (p == "*" || p == k) && reference(rest, key_rest),
                None => false,
            },
        }
    }

    fn words(max: usize, alphabet: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(alphabet), 0..=max)
            .prop_map(|w| w.join("."))
    }

    proptest! {
        /// Canonical forms and the memoised walk match what the definition
        /// says, for several bindings at once sharing the trie.
        #[test]
        fn routes_as_the_definition_says(
            patterns in proptest::collection::vec(words(6, &["a", "b", "", "*", "#"]), 1..6),
            keys in proptest::collection::vec(words(7, &["a", "b", ""]), 1..8),
        ) {
            let mut r = TopicRouter::default();
            let dests: Vec<Destination> =
                (0..patterns.len()).map(|i| dest(&format!("d{i}"))).collect();
            for (p, d) in patterns.iter().zip(&dests) {
                r.bind(d.clone(), p, &FieldTable::default());
            }
            for key in &keys {
                let mut out = Vec::new();
                r.route(key, None, &mut out);
                for (p, d) in patterns.iter().zip(&dests) {
                    let expected = reference(&split(p), &split(key));
                    prop_assert_eq!(out.contains(d), expected, "binding {:?} vs key {:?}", p, key);
                }
            }
            for (p, d) in patterns.iter().zip(&dests) {
                r.unbind(d, p, &FieldTable::default());
            }
            prop_assert!(r.root.is_empty());
        }
    }

    /// Patterns whose naive walk is exponential in the key's length route
    /// at once: each (node, position) pair is visited at most once.
    #[test]
    fn hostile_patterns_route_long_keys() {
        let hundred_words = vec!["w"; 100].join(".");
        let all_a = vec!["a"; 128].join(".");
        for (pattern, key) in [
            ("#.#.#.#.#.#.#.#", hundred_words.as_str()),
            ("#.*.#.*.#.*.#.*.#", hundred_words.as_str()),
            ("#.a.#.a.#.a.#.a.#.a.#", all_a.as_str()),
            ("#.a.#.a.#.a.#.a.#.a.#.b", all_a.as_str()),
        ] {
            let expected = !pattern.ends_with('b');
            assert_eq!(matches(pattern, key), expected, "{pattern}");
        }
    }

    #[test]
    fn equivalent_spellings_are_separate_bindings() {
        let mut r = TopicRouter::default();
        let d = dest("d");
        r.bind(d.clone(), "a.#.*", &FieldTable::default());
        r.bind(d.clone(), "a.*.#.#", &FieldTable::default());
        r.unbind(&d, "a.#.*", &FieldTable::default());
        assert!(matches_in(&r, "a.b", &d));
        r.unbind(&d, "a.*.#.#", &FieldTable::default());
        assert!(r.root.is_empty());
    }

    fn matches_in(r: &TopicRouter, key: &str, d: &Destination) -> bool {
        let mut out = Vec::new();
        r.route(key, None, &mut out);
        out.contains(d)
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
