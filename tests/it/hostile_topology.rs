//! Topologies built to hurt the broker: topic bindings whose naive match is
//! exponential, and dead-letter cycles and chains.
//!
//! A regression here does not fail quickly — it spins a runtime worker, or
//! overflows a stack — so these tests run the broker on a runtime of their
//! own, wait for it with a deadline, and abandon it (`shutdown_background`)
//! rather than wait for a worker that never returns.

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use crate::common::*;

/// Run `test` on a runtime of its own; `None` if it did not finish within
/// `deadline`.
fn within<T: Send + 'static>(
    deadline: Duration,
    test: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async move {
        let task = tokio::spawn(test);
        tokio::time::timeout(deadline, task).await
    });
    rt.shutdown_background();
    match result {
        Ok(Ok(value)) => Some(value),
        Ok(Err(panicked)) => std::panic::resume_unwind(panicked.into_panic()),
        Err(_) => None,
    }
}

async fn confirming_channel(conn: &lapin::Connection) -> Channel {
    let ch = channel(conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// Publish and wait for the confirm (which follows routing).
async fn publish_confirmed(ch: &Channel, exchange: &str, key: &str) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
}

#[test]
fn hostile_topic_binding_routes_a_hundred_word_key() {
    let elapsed = within(Duration::from_secs(20), async {
        let server = start().await;
        let conn = connect(&server).await;
        let ch = confirming_channel(&conn).await;
        declare(&ch, "hostile").await;
        ch.queue_bind(
            "hostile".into(),
            "amq.topic".into(),
            "#.#.#.#.#.#.#.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // 100 one-letter words: 199 bytes, within a short string.
        let key = vec!["w"; 100].join(".");
        let started = Instant::now();
        publish_confirmed(&ch, "amq.topic", &key).await;
        let elapsed = started.elapsed();
        assert_eq!(depth(&ch, "hostile").await, 1);
        elapsed
    });
    let elapsed = elapsed.expect("the publish was routed (the router spun on `#.#.#…`)");
    // Microseconds of routing; the rest is the round trip on a loaded
    // machine.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
