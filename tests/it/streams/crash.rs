//! SIGKILL while publishers append to a stream (the real binary on a data
//! directory). After each restart the stream, read from "first", holds
//! every message whose confirm arrived, each publisher's in the order
//! published, at consecutive offsets from 0, each body whole, and the
//! messages read after the previous restart still first and unchanged.
//!
//! `WARREN_STREAM_CRASH_CYCLES` (default 5) sets the number of kills,
//! `WARREN_STREAM_CRASH_SEED` replays a run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use super::*;

const PUBLISHERS: usize = 3;
const Q: &str = "crash-stream";

/// "p:seq:" then 0..300 bytes that depend on both (so a torn or mixed-up
/// record does not parse); odd messages are persistent, even ones not.
fn body(p: usize, seq: u64) -> Vec<u8> {
    let mut b = format!("{p}:{seq}:").into_bytes();
    let len = (seq * 37 + p as u64 * 11) % 300;
    b.extend((0..len).map(|i| b'a' + ((seq + i + p as u64) % 26) as u8));
    b
}

fn delivery_mode(seq: u64) -> u8 {
    if seq % 2 == 1 { 2 } else { 1 }
}

/// The publisher and sequence number of a body, which must be one that
/// `body` makes.
fn parse(data: &[u8], at: u64) -> (usize, u64) {
    let garbage = || {
        format!(
            "garbage at offset {at}: {:?}",
            String::from_utf8_lossy(data)
        )
    };
    let text = std::str::from_utf8(data).unwrap_or_else(|_| panic!("{}", garbage()));
    let mut parts = text.splitn(3, ':');
    let p: Option<usize> = parts.next().and_then(|s| s.parse().ok());
    let seq: Option<u64> = parts.next().and_then(|s| s.parse().ok());
    let (Some(p), Some(seq)) = (p, seq) else {
        panic!("{}", garbage())
    };
    assert!(p < PUBLISHERS && body(p, seq) == data, "{}", garbage());
    (p, seq)
}

#[derive(Default)]
struct Ledger {
    /// Confirmed, per publisher.
    confirmed: [BTreeSet<u64>; PUBLISHERS],
    /// Published, confirmed or not.
    published: [BTreeSet<u64>; PUBLISHERS],
    /// What the last check read, in offset order.
    read: Vec<(usize, u64)>,
}

/// Read the whole stream from "first" and check it against the ledger.
async fn check(url: &str, ledger: &mut Ledger, cycle: usize) {
    let conn = open(url).await;
    let ch = conn.create_channel().await.expect("channel");
    declare_stream(&ch, Q, &[]).await;
    let count = u64::from(crate::common::depth(&ch, Q).await);
    let mut r = Reader::open(&conn, Q, Some(text("first")), 1000, "", &[])
        .await
        .manual();
    let mut read = Vec::new();
    let mut last = [None::<u64>; PUBLISHERS];
    for at in 0..count {
        let d = next(&mut r.consumer).await;
        assert_eq!(offset(&d), at, "cycle {cycle}: offsets not consecutive");
        let (p, seq) = parse(&d.data, at);
        assert!(
            ledger.published[p].contains(&seq),
            "cycle {cycle}: {p}:{seq} at {at} was never published"
        );
        assert!(
            last[p].is_none_or(|prev| seq > prev),
            "cycle {cycle}: publisher {p} out of order: {seq} after {last:?}"
        );
        last[p] = Some(seq);
        assert_eq!(
            *d.properties.delivery_mode(),
            Some(delivery_mode(seq)),
            "cycle {cycle}: {p}:{seq}"
        );
        read.push((p, seq));
        if at % 500 == 499 || at + 1 == count {
            d.ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    assert!(
        quiet(&mut r.consumer).await,
        "cycle {cycle}: more than the {count} messages counted"
    );
    assert!(
        read.starts_with(&ledger.read),
        "cycle {cycle}: what was read before the last kill changed"
    );
    for (p, confirmed) in ledger.confirmed.iter().enumerate() {
        let seen: BTreeSet<u64> = read.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
        let lost: Vec<_> = confirmed.difference(&seen).take(10).collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: publisher {p} lost {lost:?}"
        );
    }
    ledger.read = read;
    let _ = conn.close(200, "checked".into()).await;
}

/// Publish until the connection dies, with up to `WINDOW` messages
/// unconfirmed (a second task takes the confirms in order, so the broker
/// confirms some while it reads more); every message whose confirm came
/// back is confirmed. Returns (confirmed, published).
async fn publish_until_killed(
    url: String,
    p: usize,
    mut seq: u64,
    acks: Arc<AtomicUsize>,
) -> (Vec<u64>, Vec<u64>) {
    const WINDOW: usize = 64;
    let mut published = Vec::new();
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return (Vec::new(), published);
    };
    let Ok(ch) = conn.create_channel().await else {
        return (Vec::new(), published);
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return (Vec::new(), published);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, lapin::PublisherConfirm)>(WINDOW);
    let confirms = tokio::spawn(async move {
        let mut confirmed = Vec::new();
        while let Some((seq, confirm)) = rx.recv().await {
            match tokio::time::timeout(Duration::from_secs(5), confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => {
                    confirmed.push(seq);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                _ => break,
            }
        }
        confirmed
    });
    loop {
        let props = BasicProperties::default().with_delivery_mode(delivery_mode(seq));
        // Counted as published before it is sent: it may be stored.
        published.push(seq);
        let sent = ch
            .basic_publish(
                "".into(),
                Q.into(),
                BasicPublishOptions::default(),
                &body(p, seq),
                props,
            )
            .await;
        let Ok(confirm) = sent else { break };
        if tx.send((seq, confirm)).await.is_err() {
            break; // the confirms stopped: the broker is gone
        }
        seq += 1;
    }
    drop(tx);
    (confirms.await.expect("confirms task"), published)
}

#[tokio::test]
async fn confirmed_appends_survive_sigkill() {
    let cycles: usize = std::env::var("WARREN_STREAM_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("WARREN_STREAM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("stream crash test: {cycles} cycles, WARREN_STREAM_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    let mut next_seq = [0u64; PUBLISHERS];
    let mut confirmed = 0;
    for cycle in 0..cycles {
        let broker = spawn_on(dir.path());
        check(&broker.url, &mut ledger, cycle).await;
        let acks = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let publish =
                    publish_until_killed(broker.url.clone(), p, next_seq[p], acks.clone());
                tokio::spawn(publish)
            })
            .collect();
        // The kill comes at a random moment once the broker confirms (a
        // loaded machine may take a while to get there).
        let ready = tokio::time::Instant::now() + Duration::from_secs(15);
        while acks.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < ready {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        drop(broker); // SIGKILL, then reap
        for (p, handle) in publishers.into_iter().enumerate() {
            let (acked, published) = handle.await.expect("publisher task");
            confirmed += acked.len();
            if let Some(last) = published.last() {
                next_seq[p] = last + 1;
            }
            ledger.confirmed[p].extend(acked);
            ledger.published[p].extend(published);
        }
    }
    let broker = spawn_on(dir.path());
    check(&broker.url, &mut ledger, cycles).await;
    assert!(confirmed > 0, "nothing was ever confirmed");
    eprintln!(
        "stream crash test: {confirmed} confirmed over {cycles} kills, {} in the stream",
        ledger.read.len()
    );
}
