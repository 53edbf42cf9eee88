//! Exchange declaration rules and routing for every exchange type.

use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::common::*;

async fn bind(ch: &Channel, q: &str, x: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .unwrap();
}

async fn publish(ch: &Channel, x: &str, key: &str, props: BasicProperties) {
    ch.basic_publish(
        x.into(),
        key.into(),
        BasicPublishOptions::default(),
        b"m",
        props,
    )
    .await
    .unwrap();
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[tokio::test]
async fn predeclared_exchanges_exist_and_amq_prefix_is_reserved() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let text = expect_code(
        ch.exchange_declare(
            "amq.mine".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'"
    );

    let ch = channel(&conn).await;
    let text = expect_code(
        ch.exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
            .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
    );
}

#[tokio::test]
async fn redeclaring_with_other_properties_is_a_precondition_failure() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "x".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Same declaration again is fine.
    ch.exchange_declare(
        "x".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let text = expect_code(
        ch.exchange_declare(
            "x".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
    );
    let ch = channel(&conn).await;
    let text = expect_code(
        ch.exchange_declare(
            "x".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'"
    );
    // The connection survived both channel errors.
    let ch = channel(&conn).await;
    let text = expect_code(
        ch.exchange_declare(
            "missing".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
    assert_eq!(text, "NOT_FOUND - no exchange 'missing' in vhost '/'");
}

#[tokio::test]
async fn unknown_exchange_type_is_a_connection_error() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let text = expect_code(
        ch.exchange_declare(
            "x".into(),
            ExchangeKind::Custom("foo".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        503,
    );
    assert_eq!(text, "COMMAND_INVALID - invalid exchange type 'foo'");
    assert!(eventually(Duration::from_secs(2), || !conn.status().connected()).await);
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name_and_cannot_be_bound_or_deleted() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "named").await;
    publish(&ch, "", "named", BasicProperties::default()).await;
    publish(&ch, "", "nonexistent", BasicProperties::default()).await;
    assert_eq!(depth(&ch, "named").await, 1);
    let text = expect_code(
        ch.queue_bind(
            "named".into(),
            "".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    let ch = channel(&conn).await;
    expect_code(
        ch.exchange_delete("".into(), ExchangeDeleteOptions::default())
            .await,
        403,
    );
}

#[tokio::test]
async fn direct_fanout_and_topic_routing() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    for q in ["d1", "d2", "f1", "f2", "t1", "t2", "t3"] {
        declare(&ch, q).await;
    }
    bind(&ch, "d1", "amq.direct", "red", FieldTable::default()).await;
    bind(&ch, "d2", "amq.direct", "blue", FieldTable::default()).await;
    bind(&ch, "f1", "amq.fanout", "", FieldTable::default()).await;
    bind(&ch, "f2", "amq.fanout", "ignored", FieldTable::default()).await;
    bind(&ch, "t1", "amq.topic", "*.orange.*", FieldTable::default()).await;
    bind(&ch, "t2", "amq.topic", "*.*.rabbit", FieldTable::default()).await;
    bind(&ch, "t2", "amq.topic", "lazy.#", FieldTable::default()).await;
    bind(&ch, "t3", "amq.topic", "#", FieldTable::default()).await;

    publish(&ch, "amq.direct", "red", BasicProperties::default()).await;
    publish(&ch, "amq.fanout", "whatever", BasicProperties::default()).await;
    for key in [
        "quick.orange.rabbit",  // t1, t2 (once), t3
        "lazy.orange.elephant", // t1, t2, t3
        "quick.orange.fox",     // t1, t3
        "lazy.brown.fox",       // t2, t3
        "lazy.pink.rabbit",     // t2 (matches twice, delivered once), t3
        "quick.brown.fox",      // t3
        "orange",               // t3
        "lazy",                 // t2 ("#" matches zero words), t3
        "",                     // t3
    ] {
        publish(&ch, "amq.topic", key, BasicProperties::default()).await;
    }
    assert_eq!(depth(&ch, "d1").await, 1);
    assert_eq!(depth(&ch, "d2").await, 0);
    assert_eq!(depth(&ch, "f1").await, 1);
    assert_eq!(depth(&ch, "f2").await, 1);
    assert_eq!(depth(&ch, "t1").await, 3);
    assert_eq!(depth(&ch, "t2").await, 5);
    assert_eq!(depth(&ch, "t3").await, 9);
}

#[tokio::test]
async fn topic_routing_with_ten_thousand_bindings() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "many").await;
    declare(&ch, "hit").await;
    for i in 0..10_000 {
        ch.queue_bind(
            "many".into(),
            "amq.topic".into(),
            format!("sensor.{i}.*").as_str().into(),
            QueueBindOptions { nowait: true },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    bind(
        &ch,
        "hit",
        "amq.topic",
        "sensor.4242.#",
        FieldTable::default(),
    )
    .await;
    publish(
        &ch,
        "amq.topic",
        "sensor.4242.temp",
        BasicProperties::default(),
    )
    .await;
    publish(
        &ch,
        "amq.topic",
        "sensor.99999.temp",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(depth(&ch, "many").await, 1);
    assert_eq!(depth(&ch, "hit").await, 1);
}

#[tokio::test]
async fn headers_exchange_matching_modes() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    for q in ["all", "any", "allx", "bad"] {
        declare(&ch, q).await;
    }
    bind(
        &ch,
        "all",
        "amq.headers",
        "",
        table(&[("format", s("pdf")), ("type", s("report"))]),
    )
    .await;
    bind(
        &ch,
        "any",
        "amq.headers",
        "",
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("log")),
        ]),
    )
    .await;
    bind(
        &ch,
        "allx",
        "amq.headers",
        "",
        table(&[("x-match", s("all-with-x")), ("x-tenant", s("acme"))]),
    )
    .await;
    let with = |pairs: &[(&str, AMQPValue)]| BasicProperties::default().with_headers(table(pairs));
    publish(
        &ch,
        "amq.headers",
        "",
        with(&[("format", s("pdf")), ("type", s("report"))]),
    )
    .await;
    publish(&ch, "amq.headers", "", with(&[("format", s("pdf"))])).await;
    publish(&ch, "amq.headers", "", with(&[("x-tenant", s("acme"))])).await;
    publish(&ch, "amq.headers", "", BasicProperties::default()).await;
    assert_eq!(depth(&ch, "all").await, 1);
    assert_eq!(depth(&ch, "any").await, 2);
    assert_eq!(depth(&ch, "allx").await, 1);
    let text = expect_code(
        ch.queue_bind(
            "bad".into(),
            "amq.headers".into(),
            "".into(),
            QueueBindOptions::default(),
            table(&[("x-match", s("some"))]),
        )
        .await,
        406,
    );
    assert!(text.contains("x-match"), "{text}");
}

#[tokio::test]
async fn exchange_to_exchange_bindings_and_unbind() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "src".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "dst".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "q").await;
    bind(&ch, "q", "dst", "", FieldTable::default()).await;
    ch.exchange_bind(
        "dst".into(),
        "src".into(),
        "a.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // A cycle must not loop forever.
    ch.exchange_bind(
        "src".into(),
        "dst".into(),
        "#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "src", "a.b", BasicProperties::default()).await;
    publish(&ch, "src", "b.b", BasicProperties::default()).await;
    assert_eq!(depth(&ch, "q").await, 1);
    ch.exchange_unbind(
        "dst".into(),
        "src".into(),
        "a.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "src", "a.b", BasicProperties::default()).await;
    assert_eq!(depth(&ch, "q").await, 1);
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "ae".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "main".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", s("ae"))]),
    )
    .await
    .unwrap();
    declare(&ch, "routed").await;
    declare(&ch, "unrouted").await;
    bind(&ch, "routed", "main", "k", FieldTable::default()).await;
    bind(&ch, "unrouted", "ae", "", FieldTable::default()).await;
    publish(&ch, "main", "k", BasicProperties::default()).await;
    publish(&ch, "main", "other", BasicProperties::default()).await;
    assert_eq!(depth(&ch, "routed").await, 1);
    assert_eq!(depth(&ch, "unrouted").await, 1);
}

#[tokio::test]
async fn internal_exchanges_refuse_direct_publishes() {
    let server = start().await;
    let conn = connect(&server).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "inner".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "inner", "", BasicProperties::default()).await;
    assert_eq!(
        next_error(&mut events).await,
        (
            403,
            "ACCESS_REFUSED - cannot publish to internal exchange 'inner' in vhost '/'".to_string()
        )
    );
}

#[tokio::test]
async fn delete_if_unused_and_auto_delete() {
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.exchange_declare(
        "busy".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "q").await;
    bind(&ch, "q", "busy", "k", FieldTable::default()).await;
    let text = expect_code(
        ch.exchange_delete(
            "busy".into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - exchange 'busy' in vhost '/' in use"
    );

    let ch = channel(&conn).await;
    ch.exchange_declare(
        "ephemeral".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    bind(&ch, "q", "ephemeral", "k", FieldTable::default()).await;
    ch.queue_unbind(
        "q".into(),
        "ephemeral".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    expect_code(
        ch.exchange_declare(
            "ephemeral".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
        404,
    );
    // Deleting a missing exchange succeeds, as in RabbitMQ.
    let ch = channel(&conn).await;
    ch.exchange_delete("never-existed".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

/// A channel remembers the exchange it last published to; that exchange
/// being deleted and declared again with another type, from another channel,
/// must be seen by the very next publish.
#[tokio::test]
async fn publishing_follows_an_exchange_deleted_and_declared_again() {
    let server = start().await;
    let conn = connect(&server).await;
    let admin = channel(&conn).await;
    let ch = channel(&conn).await;
    for q in ["q1", "q2"] {
        declare(&admin, q).await;
    }
    let declare_x = |kind: ExchangeKind| {
        admin.exchange_declare(
            "x".into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
    };
    declare_x(ExchangeKind::Direct).await.unwrap();
    bind(&admin, "q1", "x", "k", FieldTable::default()).await;
    publish(&ch, "x", "k", BasicProperties::default()).await;
    assert_eq!(depth(&admin, "q1").await, 1);

    admin
        .exchange_delete("x".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    declare_x(ExchangeKind::Fanout).await.unwrap();
    bind(&admin, "q2", "x", "", FieldTable::default()).await;
    publish(&ch, "x", "k", BasicProperties::default()).await;
    assert_eq!(depth(&admin, "q2").await, 1);
    assert_eq!(depth(&admin, "q1").await, 1);

    admin
        .exchange_delete("x".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let mut events = conn.events_listener();
    publish(&ch, "x", "k", BasicProperties::default()).await;
    assert_eq!(
        next_error(&mut events).await,
        (404, "NOT_FOUND - no exchange 'x' in vhost '/'".to_string())
    );
}

/// A channel remembers the queue it last reached through the default
/// exchange; that queue deleted (and declared again) from another channel
/// must be seen by the very next publish.
#[tokio::test]
async fn default_exchange_publishing_follows_a_queue_deleted_and_declared_again() {
    let server = start().await;
    let conn = connect(&server).await;
    let admin = channel(&conn).await;
    let ch = channel(&conn).await;
    declare(&admin, "dq").await;
    publish(&ch, "", "dq", BasicProperties::default()).await;
    assert_eq!(depth(&admin, "dq").await, 1);
    admin
        .queue_delete("dq".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // Unroutable now: with mandatory it comes back.
    ch.basic_publish(
        "".into(),
        "dq".into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"lost",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    declare(&admin, "dq").await;
    assert_eq!(depth(&admin, "dq").await, 0);
    publish(&ch, "", "dq", BasicProperties::default()).await;
    assert_eq!(depth(&admin, "dq").await, 1);
    // Another queue in between, then back.
    declare(&admin, "dq2").await;
    publish(&ch, "", "dq2", BasicProperties::default()).await;
    publish(&ch, "", "dq", BasicProperties::default()).await;
    assert_eq!(depth(&admin, "dq2").await, 1);
    assert_eq!(depth(&admin, "dq").await, 2);
}

/// The write check a channel remembers for its last exchange is made again
/// once permissions change: revoking write access stops the next publish.
#[tokio::test]
async fn revoking_write_permission_stops_the_next_publish() {
    let server = start().await;
    let conn = connect(&server).await;
    let admin = channel(&conn).await;
    let ch = channel(&conn).await;
    declare(&admin, "q").await;
    bind(&admin, "q", "amq.direct", "k", FieldTable::default()).await;
    publish(&ch, "amq.direct", "k", BasicProperties::default()).await;
    assert_eq!(depth(&admin, "q").await, 1);

    let read_only = warren::broker::auth::Permission::new(".*", "^$", ".*").unwrap();
    server
        .broker()
        .users
        .set_permission("guest", "/", read_only);
    let mut events = conn.events_listener();
    publish(&ch, "amq.direct", "k", BasicProperties::default()).await;
    assert_eq!(
        next_error(&mut events).await,
        (
            403,
            "ACCESS_REFUSED - write access to exchange 'amq.direct' in vhost '/' refused for user 'guest'"
                .to_string()
        )
    );
    assert_eq!(depth(&admin, "q").await, 1);
}
