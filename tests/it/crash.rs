//! Crash safety: the broker process is killed with SIGKILL at random moments
//! while publishers send persistent messages with confirms to a fanout
//! exchange bound to three durable queues, and a consumer acknowledges them.
//! After each restart, in each of the three queues:
//!
//! - every confirmed message is present (a message whose confirm never
//!   arrived may or may not be), and the queue can be read to its end;
//! - each publisher's messages are in the order they were published;
//! - a message acknowledged before the crash may come back only marked
//!   redelivered (its ack fell in the last, unflushed commit window);
//! - the store opens cleanly.
//!
//! `WARREN_CRASH_CYCLES` (default 20) sets the number of kills;
//! `WARREN_CRASH_SEED` replays a run. The long version:
//! `WARREN_CRASH_CYCLES=200 cargo test --test it crash -- --nocapture`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::{RngExt, SeedableRng};

use crate::common::{BrokerProcess, spawn_warren};

const PUBLISHERS: usize = 2;
const EXCHANGE: &str = "crash-fanout";
const QUEUES: [&str; 3] = ["crash-a", "crash-b", "crash-c"];

/// Start the real binary on `dir` (its records sealed with the key in
/// `key`, if given) and wait until it accepts connections.
fn spawn_broker(dir: &Path, key: Option<&Path>) -> BrokerProcess {
    let mut args = vec!["--data-dir".to_string(), dir.display().to_string()];
    if let Some(key) = key {
        args.push("--encryption-key-file".into());
        args.push(key.display().to_string());
    }
    spawn_warren(&args, &[("WARREN_STORAGE__FLUSH_INTERVAL_MS", "50")], None)
}

fn body(publisher: usize, seq: u64) -> Vec<u8> {
    format!("{publisher}:{seq}").into_bytes()
}

fn parse(body: &[u8]) -> (usize, u64) {
    let s = std::str::from_utf8(body).expect("utf-8 body");
    let (p, n) = s.split_once(':').expect("p:n body");
    (p.parse().expect("publisher"), n.parse().expect("seq"))
}

/// What one queue should hold.
#[derive(Default)]
struct Ledger {
    /// Confirmed and not yet seen by the checker.
    confirmed: [BTreeSet<u64>; PUBLISHERS],
    /// Published but never confirmed: may appear.
    uncertain: [BTreeSet<u64>; PUBLISHERS],
    /// Taken and acknowledged by the checker earlier.
    consumed: HashSet<(usize, u64)>,
}

/// Declare the fanout exchange and its three durable queues (again).
async fn declare_topology(ch: &lapin::Channel) {
    ch.exchange_declare(
        EXCHANGE.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare exchange");
    for q in QUEUES {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
        ch.queue_bind(
            q.into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
}

/// Take everything from queue `q` (acking it), and check it against what
/// was confirmed and consumed before.
async fn check(url: &str, q: &str, ledger: &mut Ledger, cycle: usize) -> usize {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect after restart");
    let ch = conn.create_channel().await.expect("channel");
    declare_topology(&ch).await;
    let mut last_seen = [None::<u64>; PUBLISHERS];
    let mut taken = 0;
    let mut last_tag = 0;
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get (a wedged queue fails here)")
    {
        let (p, seq) = parse(&m.delivery.data);
        if let Some(prev) = last_seen[p] {
            assert!(
                seq > prev,
                "cycle {cycle}, {q}: publisher {p} out of order: {seq} after {prev}"
            );
        }
        last_seen[p] = Some(seq);
        let expected = ledger.confirmed[p].remove(&seq) || ledger.uncertain[p].remove(&seq);
        if !expected {
            assert!(
                ledger.consumed.contains(&(p, seq)),
                "cycle {cycle}, {q}: message {p}:{seq} was never published"
            );
            assert!(
                m.delivery.redelivered,
                "cycle {cycle}, {q}: acked message {p}:{seq} came back without redelivered"
            );
        }
        ledger.consumed.insert((p, seq));
        last_tag = m.delivery.delivery_tag;
        taken += 1;
    }
    for (p, missing) in ledger.confirmed.iter().enumerate() {
        assert!(
            missing.is_empty(),
            "cycle {cycle}, {q}: confirmed messages of publisher {p} lost: {:?}",
            missing.iter().take(10).collect::<Vec<_>>()
        );
    }
    if last_tag > 0 {
        ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
            .expect("ack");
    }
    let _ = conn.close(200, "checked".into()).await;
    taken
}

/// Publish in confirmed batches until the connection dies. Returns
/// (confirmed, unconfirmed) sequence numbers.
async fn publish_until_killed(url: String, publisher: usize, mut seq: u64) -> (Vec<u64>, Vec<u64>) {
    let mut confirmed = Vec::new();
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return (confirmed, Vec::new());
    };
    let Ok(ch) = conn.create_channel().await else {
        return (confirmed, Vec::new());
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return (confirmed, Vec::new());
    }
    loop {
        let batch: Vec<u64> = (seq..seq + 10).collect();
        seq += 10;
        let mut failed = false;
        for n in &batch {
            let published = ch
                .basic_publish(
                    EXCHANGE.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &body(publisher, *n),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            if published.is_err() {
                failed = true;
                break;
            }
        }
        let ok = !failed
            && matches!(
                tokio::time::timeout(Duration::from_secs(5), ch.wait_for_confirms()).await,
                Ok(Ok(ref returned)) if returned.is_empty()
            );
        if ok {
            confirmed.extend(batch);
        } else {
            return (confirmed, batch);
        }
    }
}

#[tokio::test]
async fn confirmed_messages_survive_sigkill() {
    let cycles: usize = std::env::var("WARREN_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    kill_and_check(cycles, None).await;
}

/// The same with every stored record sealed (encryption at rest).
#[tokio::test]
async fn confirmed_messages_survive_sigkill_with_encryption() {
    let cycles: usize = std::env::var("WARREN_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        / 2;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("store.key");
    // 32 bytes, base64.
    std::fs::write(&key, "c3VwZXItc2VjcmV0LWtleS1mb3ItdGhlLWNyYXNoLXQ=").unwrap();
    kill_and_check(cycles.max(1), Some(&key)).await;
}

async fn kill_and_check(cycles: usize, key: Option<&Path>) {
    let seed: u64 = std::env::var("WARREN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test: {cycles} cycles, WARREN_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut ledgers: [Ledger; 3] = Default::default();
    let mut next = [0u64; PUBLISHERS];
    let mut total_confirmed = 0;
    for cycle in 0..cycles {
        let broker = spawn_broker(dir.path(), key);
        for (q, ledger) in QUEUES.iter().zip(ledgers.iter_mut()) {
            check(&broker.url, q, ledger, cycle).await;
        }
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| tokio::spawn(publish_until_killed(broker.url.clone(), p, next[p])))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        drop(broker); // SIGKILL, then reap
        for (p, handle) in publishers.into_iter().enumerate() {
            let (confirmed, unconfirmed) = handle.await.expect("publisher task");
            total_confirmed += confirmed.len();
            let last = confirmed.iter().chain(&unconfirmed).max().copied();
            if let Some(last) = last {
                next[p] = last + 1;
            }
            for ledger in ledgers.iter_mut() {
                ledger.confirmed[p].extend(confirmed.iter().copied());
                ledger.uncertain[p].extend(unconfirmed.iter().copied());
            }
        }
    }
    let broker = spawn_broker(dir.path(), key);
    for (q, ledger) in QUEUES.iter().zip(ledgers.iter_mut()) {
        check(&broker.url, q, ledger, cycles).await;
    }
    assert!(total_confirmed > 0, "nothing was ever confirmed");
    eprintln!("crash test: {total_confirmed} confirmed messages over {cycles} kills, none lost");
}

/// A purge answered with purge-ok is durable: however long clearing the
/// purged messages takes, a SIGKILL right after it brings none back.
#[tokio::test]
async fn a_purge_followed_by_sigkill_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = spawn_broker(dir.path(), None);
    let conn = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_topology(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // 20 MiB per queue: clearing it is still going on when the kill comes.
    let body = vec![9u8; 1024];
    for _ in 0..20_000 {
        ch.basic_publish(
            EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    assert!(ch.wait_for_confirms().await.unwrap().is_empty());
    for q in QUEUES {
        let purged = ch
            .queue_purge(q.into(), QueuePurgeOptions::default())
            .await
            .unwrap();
        assert_eq!(purged, 20_000, "{q}");
    }
    drop(broker); // SIGKILL right after the last purge-ok
    let broker = spawn_broker(dir.path(), None);
    let conn = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in QUEUES {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let left = ch
            .queue_declare(q.into(), passive, FieldTable::default())
            .await
            .unwrap();
        let got = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert!(
            got.is_none(),
            "{q}: a purged message came back ({} counted)",
            left.message_count()
        );
    }
}
