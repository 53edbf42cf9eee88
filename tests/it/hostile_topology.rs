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
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

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

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn declare_with(ch: &Channel, q: &str, arguments: FieldTable) {
    ch.queue_declare(q.into(), QueueDeclareOptions::default(), arguments)
        .await
        .unwrap();
}

/// The `(reason, queue)` of each `x-death` entry, newest first.
fn deaths(properties: &BasicProperties) -> Vec<(String, String)> {
    let Some(AMQPValue::FieldArray(a)) = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return Vec::new();
    };
    a.as_slice()
        .iter()
        .map(|v| {
            let AMQPValue::FieldTable(t) = v else {
                panic!("x-death entry {v:?}")
            };
            let s = |k: &str| match t.inner().get(k) {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => panic!("{k}: {other:?}"),
            };
            (s("reason"), s("queue"))
        })
        .collect()
}

/// The broker runs as a child process: a regression (a stack overflow)
/// kills it rather than the test binary.
async fn connect_to(broker: &BrokerProcess) -> Connection {
    Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .expect("lapin connects")
}

/// A message rejected once, then dead-lettered round a cycle of queues
/// whose messages expire at once (`x-message-ttl: 0`). RabbitMQ breaks the
/// cycle when the message comes back to a queue it died in with no
/// rejection since: here, on its second arrival at `ttl_b`. The rejection
/// before the cycle does not keep it going.
#[tokio::test]
async fn dead_letter_cycle_after_a_rejection_terminates() {
    let broker = spawn_warren(&["--ephemeral".into()], &[], None);
    let conn = connect_to(&broker).await;
    let ch = confirming_channel(&conn).await;
    ch.exchange_declare(
        "dlx_c".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let to = |key: &str| {
        vec![
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(key)),
        ]
    };
    declare_with(&ch, "rq", args(&to("ttl_b"))).await;
    let mut b = to("ttl_c");
    b.push(("x-message-ttl", AMQPValue::LongInt(0)));
    declare_with(&ch, "ttl_b", args(&b)).await;
    declare_with(
        &ch,
        "ttl_c",
        args(&[
            ("x-dead-letter-exchange", text("dlx_c")),
            ("x-message-ttl", AMQPValue::LongInt(0)),
        ]),
    )
    .await;
    declare(&ch, "seen").await;
    for q in ["ttl_b", "seen"] {
        ch.queue_bind(
            q.into(),
            "dlx_c".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    publish_confirmed(&ch, "", "rq").await;
    let got = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the message is in rq");
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let mut seen = None;
    for _ in 0..500 {
        seen = ch
            .basic_get("seen".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("the broker is still up")
            .map(|m| m.delivery);
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.expect("the dead letter went round once");
    let expired = |q: &str| ("expired".to_string(), q.to_string());
    assert_eq!(
        deaths(&seen.properties),
        vec![
            expired("ttl_c"),
            expired("ttl_b"),
            ("rejected".into(), "rq".into())
        ]
    );
    // The copy for ttl_b closed a cycle and was dropped: nothing more
    // arrives, and every queue is empty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for q in ["rq", "ttl_b", "ttl_c", "seen"] {
        assert_eq!(depth(&ch, q).await, 0, "{q}");
    }
}

/// Queues `chain0` … `chain1999`, each holding one message at its
/// `x-max-length` of 1 and dead-lettering to the next: a publish to the
/// first pushes every queue's message one queue on, 2,000 dead letters
/// deep, all on the publisher's thread.
#[tokio::test]
async fn a_long_dead_letter_chain_does_not_overflow_the_stack() {
    const QUEUES: usize = 2_000;
    let broker = spawn_warren(&["--ephemeral".into()], &[], None);
    let conn = connect_to(&broker).await;
    let ch = confirming_channel(&conn).await;
    for i in 0..QUEUES {
        let mut a = vec![("x-max-length", AMQPValue::LongInt(1))];
        if i + 1 < QUEUES {
            a.push(("x-dead-letter-exchange", text("")));
            a.push((
                "x-dead-letter-routing-key",
                text(&format!("chain{}", i + 1)),
            ));
        }
        declare_with(&ch, &format!("chain{i}"), args(&a)).await;
    }
    let mut confirms = Vec::with_capacity(QUEUES);
    for i in 0..QUEUES {
        let body = format!("m{i}");
        let key = format!("chain{i}");
        confirms.push(
            ch.basic_publish(
                "".into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    ch.basic_publish(
        "".into(),
        "chain0".into(),
        BasicPublishOptions::default(),
        b"p",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .expect("the broker survived the cascade");
    let body = |q: String| {
        let ch = &ch;
        async move {
            let got = ch
                .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .expect("one message");
            String::from_utf8(got.delivery.data).unwrap()
        }
    };
    assert_eq!(body("chain0".into()).await, "p");
    assert_eq!(body("chain1".into()).await, "m0");
    let last = QUEUES - 1;
    assert_eq!(body(format!("chain{last}")).await, format!("m{}", last - 1));
}

/// Ten queues whose messages expire at once, each dead-lettering to a
/// fanout exchange bound to all ten: every death makes a copy for each
/// queue it has not died in yet, a copy for every path through them —
/// about ten million dead letters from one publish if nothing cut it, ten
/// thousand with the cascade budget.
#[tokio::test]
async fn dead_letters_a_fanout_cycle_multiplies_are_bounded() {
    const QUEUES: usize = 10;
    let broker = spawn_warren(&["--ephemeral".into()], &[], None);
    let conn = connect_to(&broker).await;
    let ch = confirming_channel(&conn).await;
    ch.exchange_declare(
        "fan".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..QUEUES {
        let q = format!("fan{i}");
        declare_with(
            &ch,
            &q,
            args(&[
                ("x-dead-letter-exchange", text("fan")),
                ("x-message-ttl", AMQPValue::LongInt(0)),
            ]),
        )
        .await;
        ch.queue_bind(
            q.as_str().into(),
            "fan".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let started = Instant::now();
    let confirmed =
        tokio::time::timeout(Duration::from_secs(60), publish_confirmed(&ch, "fan", "")).await;
    assert!(confirmed.is_ok(), "the cascade did not end");
    eprintln!("cascade routed in {:?}", started.elapsed());
    for i in 0..QUEUES {
        assert_eq!(depth(&ch, &format!("fan{i}")).await, 0);
    }
}
