//! Store faults at run time: a store that cannot write (a full disk, an I/O
//! error, a data directory removed). Publishes that are not durable are
//! nacked, never confirmed; the disk alarm blocks publishers; nothing
//! confirmed is lost; when writes work again the alarm clears. Start-up
//! faults are in `store_faults.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use warren::broker::alarms::Resource;
use warren::store::{Store, StoreError};
use warren::{Config, Server};

use crate::common::*;
use crate::store_faults::durable;

/// A disk that fails every write while `broken`.
fn failing_disk(broken: &Arc<AtomicBool>) -> Arc<HookedBackend> {
    let broken = broken.clone();
    Arc::new(HookedBackend::new(move || {
        if broken.load(Ordering::SeqCst) {
            Err(StoreError::Io(
                "No space left on device (os error 28)".into(),
            ))
        } else {
            Ok(())
        }
    }))
}

/// Publish `body` and wait for its confirm: true for an ack.
async fn confirmed(ch: &Channel, q: &str, body: &[u8], persistent: bool) -> bool {
    let props = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    let publish = async {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap()
    };
    let confirm = tokio::time::timeout(Duration::from_secs(5), publish)
        .await
        .expect("a confirm or a nack within 5 s");
    matches!(confirm, Confirmation::Ack(_))
}

/// Every body left in `q`, taken.
async fn bodies(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

fn disk_alarm(server: &Server) -> bool {
    server.broker().alarms.is_on(Resource::Disk)
}

#[tokio::test]
async fn a_failing_disk_nacks_blocks_publishers_and_clears_when_writes_work_again() {
    let broken = Arc::new(AtomicBool::new(false));
    let disk = failing_disk(&broken);
    let store = Store::over(disk.clone()).unwrap();
    let server = Server::start_with_store(Config::ephemeral(), store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("kept".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        let body = format!("before-{i}");
        assert!(confirmed(&ch, "kept", body.as_bytes(), true).await);
        acked.push(body);
    }

    broken.store(true, Ordering::SeqCst);
    assert!(
        !confirmed(&ch, "kept", b"during", true).await,
        "a publish the disk could not take was confirmed"
    );
    assert!(disk_alarm(&server), "no disk alarm");
    assert!(
        eventually(Duration::from_secs(3), || conn.status().blocked()).await,
        "publishers were not blocked"
    );

    // Nobody publishes now (they are blocked): the store must find out by
    // itself that it writes again.
    broken.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || !disk_alarm(&server)).await,
        "the disk alarm stayed on after the disk recovered"
    );
    assert!(
        eventually(Duration::from_secs(3), || !conn.status().blocked()).await,
        "publishers stayed blocked"
    );
    for i in 0..10 {
        let body = format!("after-{i}");
        assert!(confirmed(&ch, "kept", body.as_bytes(), true).await);
        acked.push(body);
    }
    conn.close(200, "bye".into()).await.unwrap();
    server.shutdown().await;

    // What the disk holds: every confirmed message, in order (the nacked
    // one may be there too).
    let store = Store::over(disk).unwrap();
    let server = Server::start_with_store(Config::ephemeral(), store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let found: Vec<String> = bodies(&ch, "kept")
        .await
        .into_iter()
        .filter(|b| b != "during")
        .collect();
    assert_eq!(found, acked);
    server.shutdown().await;
}

/// Messages of a long queue live only in the store: a write that fails
/// must not drop them (transient ones were confirmed at once).
#[tokio::test]
async fn messages_paged_out_while_the_disk_fails_are_kept() {
    let broken = Arc::new(AtomicBool::new(false));
    let store = Store::over(failing_disk(&broken)).unwrap();
    let mut config = Config::ephemeral();
    config.storage.queue_memory_messages = 10;
    let server = Server::start_with_store(config, store).await.unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["transient", "persistent"] {
        ch.queue_declare(q.into(), durable(), FieldTable::default())
            .await
            .unwrap();
    }
    // Publishes go out without waiting for confirms, from a task: once a
    // write fails the alarm blocks the connection (and lapin holds back
    // the rest) until it clears.
    broken.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for i in 0..250 {
        let (q, size) = if i < 200 {
            ("transient", 1000)
        } else {
            ("persistent", 10)
        };
        let mut body = format!("{q}-{i:04}").into_bytes();
        body.resize(size, b'.');
        sent.push((q, String::from_utf8(body).unwrap()));
    }
    let publisher = {
        let ch = ch.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut confirms = Vec::new();
            for (q, body) in sent {
                let mode = if q == "transient" { 1 } else { 2 };
                let props = BasicProperties::default().with_delivery_mode(mode);
                let options = BasicPublishOptions::default();
                let c = ch.basic_publish("".into(), q.into(), options, body.as_bytes(), props);
                confirms.push(c.await.unwrap());
            }
            for c in confirms {
                c.await.unwrap();
            }
        })
    };
    // Let a few commits fail.
    assert!(eventually(Duration::from_secs(5), || disk_alarm(&server)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    broken.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || !disk_alarm(&server)).await,
        "the disk alarm stayed on after the disk recovered"
    );
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("every publish answered once the disk is back")
        .unwrap();
    let sent: Vec<String> = sent.into_iter().map(|(_, b)| b).collect();
    // Nacked or not, every message is still queued: a failed write drops
    // none of them from memory.
    let mut kept = bodies(&ch, "transient").await;
    kept.extend(bodies(&ch, "persistent").await);
    assert_eq!(kept.len(), sent.len(), "missing: {:?}", {
        let kept: std::collections::HashSet<_> = kept.iter().collect();
        sent.iter()
            .filter(|b| !kept.contains(b))
            .map(|b| &b[..b.len().min(16)])
            .collect::<Vec<_>>()
    });
    assert_eq!(kept, sent);
    server.shutdown().await;
}
