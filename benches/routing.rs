//! Micro-benchmarks of exchange routing: one message through
//! `Exchange::route` (the router behind its read lock, as the vhost calls
//! it), every binding to its own queue. Topology is built once, outside the
//! timed loop; each iteration routes into a reused `Vec` and clears it.
//!
//! - `topic_10k/*`: 10,000 bindings, a third each of `a.*.c<i>`, `#.x<i>`
//!   and exact `a.b.k<i>`; keys that match one `*` pattern, one `#` pattern,
//!   one exact key, and nothing. `router_*` is the bare `TopicRouter`.
//! - `topic_hostile_1k/key_255b`: 1,000 bindings whose naive match is
//!   exponential in the key's length (a quarter each of `#.#.#.#.#.#.#.#`,
//!   `#.a.#.a.#.a.#.a`, `*.#.*.#.*.#.*.#` and `#.a.#.a.#.a.#.q<i>`), and a
//!   255-byte key of 128 words `a` that reaches 750 of them.
//! - `direct_10k/*`: 10,000 keys, a hit and a miss.
//! - `fanout_10`: 10 queues.
//! - `headers_1k/*`: 1,000 bindings, half `x-match: all` on two headers, half
//!   `x-match: any` of two; headers that match one of each, and none.
//!
//! Run with `cargo bench --bench routing` (about 20 s once built); add a filter
//! such as `cargo bench --bench routing -- topic` to run a subset.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use criterion::{Criterion, criterion_group, criterion_main};
use warren::exchange::{Destination, Exchange, ExchangeKind, RouteHeaders, Router, TopicRouter};
use warren::queue::args::QueueArgs;
use warren::queue::{Queue, QueueConfig, QueueEnv};

const BINDINGS: usize = 10_000;
const HEADER_BINDINGS: usize = 1_000;
const HOSTILE_BINDINGS: usize = 1_000;

/// A plain transient queue, as `queue.declare` with no arguments makes.
fn queue(env: &Arc<QueueEnv>, name: String) -> Destination {
    let config = QueueConfig {
        name: name.into(),
        vhost: "/".into(),
        durable: false,
        auto_delete: false,
        exclusive_owner: None,
        arguments: FieldTable::default(),
        args: QueueArgs::default(),
        uid: env.store.new_queue_uid(),
    };
    Destination::Queue(Queue::new(config, env.clone(), Default::default()))
}

fn exchange(kind: ExchangeKind) -> Exchange {
    Exchange::new(
        format!("bench.{}", kind.as_str()).into(),
        kind,
        false,
        false,
        false,
        FieldTable::default(),
    )
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    t
}

/// Route `key` once and return how many destinations it reached.
fn route_count(ex: &Exchange, key: &str, headers: Option<&FieldTable>) -> usize {
    let mut out = Vec::new();
    ex.route(key, &RouteHeaders::decoded(headers.cloned()), &mut out);
    out.len()
}

/// Time `ex.route(key, headers)` into a reused output vector.
fn bench_route(
    c: &mut Criterion,
    id: &str,
    ex: &Exchange,
    key: &str,
    headers: Option<&FieldTable>,
) {
    let mut out = Vec::with_capacity(16);
    let headers = RouteHeaders::decoded(headers.cloned());
    c.bench_function(id, |b| {
        b.iter(|| {
            out.clear();
            ex.route(black_box(key), black_box(&headers), &mut out);
            black_box(out.len())
        })
    });
}

fn topic_pattern(i: usize) -> String {
    match i % 3 {
        0 => format!("a.*.c{i}"),
        1 => format!("#.x{i}"),
        _ => format!("a.b.k{i}"),
    }
}

fn topic(c: &mut Criterion) {
    let env = QueueEnv::for_tests();
    let ex = exchange(ExchangeKind::Topic);
    let mut bare = TopicRouter::default();
    let none = FieldTable::default();
    for i in 0..BINDINGS {
        let q = queue(&env, format!("q{i}"));
        let pattern = topic_pattern(i);
        ex.bind(q.clone(), &pattern, &none);
        bare.bind(q, &pattern, &none);
    }
    let keys = [
        ("match_star", "a.b.c4242"),
        ("match_hash", "eu.orders.created.x4243"),
        ("match_exact", "a.b.k4244"),
        ("miss", "a.b.nothing"),
    ];
    for (name, key) in keys {
        let expected = usize::from(name != "miss");
        assert_eq!(route_count(&ex, key, None), expected, "{key}");
        bench_route(c, &format!("topic_10k/{name}"), &ex, key, None);
    }
    let mut out = Vec::with_capacity(16);
    for (name, key) in [keys[0], keys[3]] {
        c.bench_function(&format!("topic_10k/router_{name}"), |b| {
            b.iter(|| {
                out.clear();
                bare.route(black_box(key), None, &mut out);
                black_box(out.len())
            })
        });
    }
}

fn hostile_pattern(i: usize) -> String {
    match i % 4 {
        0 => "#.#.#.#.#.#.#.#".to_string(),
        1 => "#.a.#.a.#.a.#.a".to_string(),
        2 => "*.#.*.#.*.#.*.#".to_string(),
        _ => format!("#.a.#.a.#.a.#.q{i}"),
    }
}

fn topic_hostile(c: &mut Criterion) {
    let env = QueueEnv::for_tests();
    let ex = exchange(ExchangeKind::Topic);
    let none = FieldTable::default();
    for i in 0..HOSTILE_BINDINGS {
        ex.bind(queue(&env, format!("q{i}")), &hostile_pattern(i), &none);
    }
    let key = vec!["a"; 128].join(".");
    assert_eq!(key.len(), 255);
    assert_eq!(route_count(&ex, &key, None), HOSTILE_BINDINGS / 4 * 3);
    bench_route(c, "topic_hostile_1k/key_255b", &ex, &key, None);
}

fn direct(c: &mut Criterion) {
    let env = QueueEnv::for_tests();
    let ex = exchange(ExchangeKind::Direct);
    let none = FieldTable::default();
    for i in 0..BINDINGS {
        ex.bind(queue(&env, format!("q{i}")), &format!("rk.{i}"), &none);
    }
    assert_eq!(route_count(&ex, "rk.4242", None), 1);
    assert_eq!(route_count(&ex, "rk.none", None), 0);
    bench_route(c, "direct_10k/match", &ex, "rk.4242", None);
    bench_route(c, "direct_10k/miss", &ex, "rk.none", None);
}

fn fanout(c: &mut Criterion) {
    let env = QueueEnv::for_tests();
    let ex = exchange(ExchangeKind::Fanout);
    let none = FieldTable::default();
    for i in 0..10 {
        ex.bind(queue(&env, format!("q{i}")), "", &none);
    }
    assert_eq!(route_count(&ex, "any", None), 10);
    bench_route(c, "fanout_10", &ex, "any", None);
}

fn headers(c: &mut Criterion) {
    let env = QueueEnv::for_tests();
    let ex = exchange(ExchangeKind::Headers);
    for i in 0..HEADER_BINDINGS {
        let region = format!("r{}", i % 10);
        let arguments = if i % 2 == 0 {
            let kind = format!("t{i}");
            table(&[("x-match", "all"), ("region", &region), ("type", &kind)])
        } else {
            let color = format!("c{i}");
            table(&[("x-match", "any"), ("color", &color), ("size", &region)])
        };
        ex.validate_binding("", &arguments).unwrap();
        ex.bind(queue(&env, format!("q{i}")), "", &arguments);
    }
    // Matches binding 42 (all: region r2, type t42) and 421 (any: color c421).
    let hit = table(&[
        ("region", "r2"),
        ("type", "t42"),
        ("color", "c421"),
        ("trace", "4bf92f3577b34da6"),
    ]);
    let miss = table(&[("region", "r2"), ("type", "none"), ("color", "none")]);
    assert_eq!(route_count(&ex, "", Some(&hit)), 2);
    assert_eq!(route_count(&ex, "", Some(&miss)), 0);
    bench_route(c, "headers_1k/match", &ex, "", Some(&hit));
    bench_route(c, "headers_1k/miss", &ex, "", Some(&miss));
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = topic, topic_hostile, direct, fanout, headers
}
criterion_main!(benches);
