//! Exact filtering: `x-stream-filter-value` on publish, `x-stream-filter`
//! (a value or a list) and `x-stream-match-unfiltered` on consume. A
//! consumer never gets a message it did not ask for: not from the
//! in-memory tail, not from the segments after a restart (where whole
//! chunks without a wanted value are skipped), not live.

use lapin::types::{AMQPValue, FieldArray};

use super::*;
use crate::common::{on_disk, start_with};

/// Publish one message per value (`x-stream-filter-value` unless None),
/// 1 KiB bodies, as a burst; `first` is the offset of the first.
async fn publish_values(ch: &Channel, q: &str, values: &[Option<String>], first: u64) {
    let mut confirms = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut body = format!("m{}", first + i as u64).into_bytes();
        body.resize(1024, b'.');
        let mut props = BasicProperties::default();
        if let Some(v) = v {
            props = props.with_headers(args(&[("x-stream-filter-value", text(v))]));
        }
        let c = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
    }
}

fn filter_value(d: &Delivery) -> Option<String> {
    match d
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get("x-stream-filter-value")
    {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
        None => None,
        other => panic!("x-stream-filter-value came back as {other:?}"),
    }
}

/// A consumer's filter arguments and what it accepts.
struct Wants {
    name: &'static str,
    filter: AMQPValue,
    unfiltered: bool,
    accepts: fn(Option<&str>) -> bool,
}

fn consumers() -> Vec<Wants> {
    let list = |items: &[&str]| {
        AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(|s| text(s)).collect::<Vec<_>>(),
        ))
    };
    vec![
        Wants {
            name: "a",
            filter: text("a"),
            unfiltered: false,
            accepts: |v| v == Some("a"),
        },
        Wants {
            name: "[a, c]",
            filter: list(&["a", "c"]),
            unfiltered: false,
            accepts: |v| matches!(v, Some("a" | "c")),
        },
        Wants {
            name: "a + unfiltered",
            filter: text("a"),
            unfiltered: true,
            accepts: |v| matches!(v, Some("a") | None),
        },
        Wants {
            name: "v7 among 600",
            filter: list(&["v7"]),
            unfiltered: false,
            accepts: |v| v == Some("v7"),
        },
        Wants {
            name: "nothing there",
            filter: text("zzz"),
            unfiltered: false,
            accepts: |v| v == Some("zzz"),
        },
    ]
}

/// Each consumer from "first" gets exactly the offsets of the values it
/// accepts, each carrying its value.
async fn check(conn: &Connection, q: &str, values: &[Option<String>]) -> Vec<Reader> {
    let mut readers = Vec::new();
    for w in consumers() {
        let mut extra = vec![("x-stream-filter", w.filter.clone())];
        if w.unfiltered {
            extra.push(("x-stream-match-unfiltered", AMQPValue::Boolean(true)));
        }
        let mut r = Reader::open(conn, q, Some(text("first")), 50, "", &extra).await;
        let want: Vec<u64> = (0..values.len() as u64)
            .filter(|&i| (w.accepts)(values[i as usize].as_deref()))
            .collect();
        r.exactly(&want).await;
        for d in &r.got {
            let v = filter_value(d);
            assert!((w.accepts)(v.as_deref()), "{}: got {v:?}", w.name);
            assert_eq!(v, values[offset(d) as usize], "{}", w.name);
            assert!(d.data.starts_with(format!("m{}.", offset(d)).as_bytes()));
        }
        readers.push(r);
    }
    readers
}

#[tokio::test]
async fn filtered_consumers_get_exactly_the_matching_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = open(&server.amqp_url()).await;
    let q = "filtered";
    declare_stream(&conn.create_channel().await.unwrap(), q, &[]).await;
    let publisher = confirming(&conn).await;
    // "a" at the start and the end, 600 others (several chunks with none
    // of the wanted values) in between.
    let some = |s: &str| Some(s.to_string());
    let mut values = vec![some("a"), some("b"), None, some("a"), some("c")];
    values.extend((0..600).map(|i| Some(format!("v{i}"))));
    values.extend([some("a"), None, some("c")]);
    publish_values(&publisher, q, &values, 0).await;
    let mut readers = check(&conn, q, &values).await;

    // Published while they consume: filtered as exactly.
    let live = [
        some("b"),
        some("a"),
        None,
        some("ab"),
        some("A"),
        some("c"),
        some("v7"),
    ];
    publish_values(&publisher, q, &live, values.len() as u64).await;
    values.extend(live);
    for (r, w) in readers.iter_mut().zip(consumers()) {
        let want: Vec<u64> = (0..values.len() as u64)
            .filter(|&i| (w.accepts)(values[i as usize].as_deref()))
            .collect();
        r.exactly(&want).await;
    }
    conn.close(200, "restart".into()).await.unwrap();
    server.shutdown().await;

    // After a restart everything is read from the segments.
    let server = start_with(on_disk(dir.path())).await;
    let conn = open(&server.amqp_url()).await;
    check(&conn, q, &values).await;
    server.shutdown().await;
}
