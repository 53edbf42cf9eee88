//! Access control, operation by operation, as RabbitMQ's access-control
//! table says: for each row a user without the right is refused with 403
//! and RabbitMQ's text, and the same user with it succeeds — permissions
//! changed through the broker's API while the user stays connected.

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use warren::broker::access::Password;
use warren::broker::audit::Actor;

use crate::common::{channel, connect, declare, depth, expect_code, next_error, start};

const DENIED: &str = "^$";

fn admin() -> Actor {
    Actor::internal()
}

async fn as_user(server: &warren::Server, user: &str, pass: &str) -> Connection {
    let port = server.amqp_addr().port();
    Connection::connect(
        &format!("amqp://{user}:{pass}@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .expect("user connects")
}

fn allow(server: &warren::Server, configure: &str, write: &str, read: &str) {
    server
        .broker()
        .set_permissions("bob", "/", configure, write, read, &admin())
        .unwrap();
}

fn args(key: &str, value: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from(key),
        AMQPValue::LongString(value.as_bytes().to_vec().into()),
    );
    t
}

fn refused(right: &str, kind: &str, name: &str) -> String {
    format!(
        "ACCESS_REFUSED - {right} access to {kind} '{name}' in vhost '/' refused for user 'bob'"
    )
}

/// A broker with user bob (no rights yet) and, made by guest, queue
/// `res-q`, exchanges `res-x`, `res-x2` (direct) and `res-t` (topic).
async fn setup() -> (warren::Server, Connection, Channel) {
    let server = start().await;
    server
        .broker()
        .put_user("bob", Password::Clear("bob-pw".into()), vec![], &admin())
        .unwrap();
    allow(&server, DENIED, DENIED, DENIED);
    let guest = connect(&server).await;
    let g = channel(&guest).await;
    declare(&g, "res-q").await;
    for (x, kind) in [
        ("res-x", ExchangeKind::Direct),
        ("res-x2", ExchangeKind::Direct),
        ("res-t", ExchangeKind::Topic),
    ] {
        g.exchange_declare(
            x.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    (server, guest, g)
}

/// Run `op` on a fresh channel of `conn` with `denied` permissions (expect
/// 403 and `text`), then with `granted` (expect success).
macro_rules! row {
    ($server:expr, $conn:expr, denied = $d:expr, granted = $g:expr, text = $text:expr, $op:expr) => {{
        let (c, w, r) = $d;
        allow(&$server, c, w, r);
        let ch = $conn.create_channel().await.unwrap();
        let got = expect_code($op(ch).await, 403);
        assert_eq!(got, $text);
        let (c, w, r) = $g;
        allow(&$server, c, w, r);
        let ch = $conn.create_channel().await.unwrap();
        $op(ch)
            .await
            .expect("allowed once the permission is granted");
    }};
}

#[tokio::test]
async fn every_operation_is_checked_as_rabbitmqs_table_says() {
    let (server, _guest, g) = setup().await;
    let bob = as_user(&server, "bob", "bob-pw").await;
    let all = ".*";

    // exchange.declare / delete: configure on the exchange.
    row!(
        server,
        bob,
        denied = (DENIED, all, all),
        granted = ("^bob-", DENIED, DENIED),
        text = refused("configure", "exchange", "bob-x"),
        |ch: Channel| async move {
            ch.exchange_declare(
                "bob-x".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    );
    row!(
        server,
        bob,
        denied = (DENIED, all, all),
        granted = ("^bob-", DENIED, DENIED),
        text = refused("configure", "exchange", "bob-x"),
        |ch: Channel| async move {
            ch.exchange_delete("bob-x".into(), ExchangeDeleteOptions::default())
                .await
        }
    );
    // A new exchange with an alternate exchange: read on itself, write on
    // the alternate.
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = (all, "^res-x$", "^bob-"),
        text = refused("read", "exchange", "bob-ae"),
        |ch: Channel| async move {
            ch.exchange_declare(
                "bob-ae".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                args("alternate-exchange", "res-x"),
            )
            .await
        }
    );
    row!(
        server,
        bob,
        denied = (all, DENIED, all),
        granted = (all, "^res-x$", all),
        text = refused("write", "exchange", "res-x"),
        |ch: Channel| async move {
            ch.exchange_declare(
                "bob-ae2".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                args("alternate-exchange", "res-x"),
            )
            .await
        }
    );

    // queue.declare / delete: configure on the queue.
    row!(
        server,
        bob,
        denied = (DENIED, all, all),
        granted = ("^bob-", DENIED, DENIED),
        text = refused("configure", "queue", "bob-q"),
        |ch: Channel| async move {
            ch.queue_declare(
                "bob-q".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ())
        }
    );
    row!(
        server,
        bob,
        denied = (DENIED, all, all),
        granted = ("^bob-", DENIED, DENIED),
        text = refused("configure", "queue", "bob-q"),
        |ch: Channel| async move {
            ch.queue_delete("bob-q".into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
        }
    );
    // A new queue with a dead-letter exchange: read on the queue, write on
    // the dead-letter exchange.
    row!(
        server,
        bob,
        denied = (all, DENIED, all),
        granted = ("^bob-", "^res-x$", "^bob-"),
        text = refused("write", "exchange", "res-x"),
        |ch: Channel| async move {
            ch.queue_declare(
                "bob-dl1".into(),
                QueueDeclareOptions::default(),
                args("x-dead-letter-exchange", "res-x"),
            )
            .await
            .map(|_| ())
        }
    );
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = ("^bob-", "^res-x$", "^bob-"),
        text = refused("read", "queue", "bob-dl2"),
        |ch: Channel| async move {
            ch.queue_declare(
                "bob-dl2".into(),
                QueueDeclareOptions::default(),
                args("x-dead-letter-exchange", "res-x"),
            )
            .await
            .map(|_| ())
        }
    );

    // A passive declare needs some right, any one of the three.
    row!(
        server,
        bob,
        denied = (DENIED, DENIED, DENIED),
        granted = (DENIED, DENIED, "^res-q$"),
        text = refused("configure", "queue", "res-q"),
        |ch: Channel| async move {
            ch.queue_declare(
                "res-q".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|_| ())
        }
    );
    row!(
        server,
        bob,
        denied = (DENIED, DENIED, DENIED),
        granted = (DENIED, "^res-x$", DENIED),
        text = refused("configure", "exchange", "res-x"),
        |ch: Channel| async move {
            ch.exchange_declare(
                "res-x".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
        }
    );

    // queue.bind / unbind: write on the queue, read on the exchange.
    row!(
        server,
        bob,
        denied = (all, DENIED, all),
        granted = (DENIED, "^res-q$", "^res-x$"),
        text = refused("write", "queue", "res-q"),
        |ch: Channel| async move {
            ch.queue_bind(
                "res-q".into(),
                "res-x".into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    );
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = (DENIED, "^res-q$", "^res-x$"),
        text = refused("read", "exchange", "res-x"),
        |ch: Channel| async move {
            ch.queue_unbind(
                "res-q".into(),
                "res-x".into(),
                "k".into(),
                FieldTable::default(),
            )
            .await
        }
    );
    // exchange.bind: write on the destination, read on the source.
    row!(
        server,
        bob,
        denied = (all, DENIED, all),
        granted = (DENIED, "^res-x2$", "^res-x$"),
        text = refused("write", "exchange", "res-x2"),
        |ch: Channel| async move {
            ch.exchange_bind(
                "res-x2".into(),
                "res-x".into(),
                "k".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    );
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = (DENIED, "^res-x2$", "^res-x$"),
        text = refused("read", "exchange", "res-x"),
        |ch: Channel| async move {
            ch.exchange_bind(
                "res-x2".into(),
                "res-x".into(),
                "k2".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    );

    // basic.get, basic.consume and queue.purge: read on the queue.
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = (DENIED, DENIED, "^res-q$"),
        text = refused("read", "queue", "res-q"),
        |ch: Channel| async move {
            ch.basic_get("res-q".into(), BasicGetOptions::default())
                .await
                .map(|_| ())
        }
    );
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = (DENIED, DENIED, "^res-q$"),
        text = refused("read", "queue", "res-q"),
        |ch: Channel| async move {
            ch.basic_consume(
                "res-q".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ())
        }
    );
    row!(
        server,
        bob,
        denied = (all, all, DENIED),
        granted = (DENIED, DENIED, "^res-q$"),
        text = refused("read", "queue", "res-q"),
        |ch: Channel| async move {
            ch.queue_purge("res-q".into(), QueuePurgeOptions::default())
                .await
                .map(|_| ())
        }
    );
    drop(g);
}

/// basic.publish needs write on the exchange; the default exchange is
/// checked as `amq.default`. A refused publish closes the channel
/// asynchronously, so the error arrives as an event.
#[tokio::test]
async fn publishing_needs_write_on_the_exchange_and_amq_default() {
    let (server, _guest, g) = setup().await;
    g.queue_bind(
        "res-q".into(),
        "res-x".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // A connection per publish: lapin may hand out a channel it is still
    // closing after an asynchronous error.
    for (exchange, key, name) in [("res-x", "k", "res-x"), ("", "res-q", "amq.default")] {
        allow(&server, ".*", DENIED, ".*");
        let bob = as_user(&server, "bob", "bob-pw").await;
        let ch = bob.create_channel().await.unwrap();
        let mut events = bob.events_listener();
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            next_error(&mut events).await,
            (403, refused("write", "exchange", name))
        );
        allow(&server, DENIED, &format!("^{name}$"), DENIED);
        let bob = as_user(&server, "bob", "bob-pw").await;
        let ch = bob.create_channel().await.unwrap();
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        // A close handshake flushes the publish; a dropped connection may not.
        bob.close(200, "done".into()).await.unwrap();
    }
    let queue = server
        .broker()
        .vhost("/")
        .unwrap()
        .queues()
        .into_iter()
        .find(|q| q.name() == "res-q")
        .unwrap();
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(5), || queue.counts().0 == 2)
            .await
    );
    assert_eq!(depth(&g, "res-q").await, 2);
}

#[tokio::test]
async fn topic_permissions_allow_and_deny_by_routing_and_binding_key() {
    let (server, _guest, g) = setup().await;
    g.queue_bind(
        "res-q".into(),
        "res-t".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    allow(&server, ".*", ".*", ".*");
    server
        .broker()
        .set_topic_permissions(
            "bob",
            "/",
            "res-t",
            "^{username}\\.",
            "^public\\.",
            &admin(),
        )
        .unwrap();
    let bob = as_user(&server, "bob", "bob-pw").await;
    let ch = bob.create_channel().await.unwrap();
    let publish = |ch: Channel, key: &'static str| async move {
        ch.basic_publish(
            "res-t".into(),
            key.into(),
            BasicPublishOptions::default(),
            b"t",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    };
    publish(ch.clone(), "bob.1").await;
    publish(ch.clone(), "bob.2").await;
    let mut events = bob.events_listener();
    // Keep a handle: lapin closes a channel when its last handle drops,
    // and a close racing the broker's 403 may swallow the error event.
    publish(ch.clone(), "alice.1").await;
    assert_eq!(
        next_error(&mut events).await,
        (
            403,
            "ACCESS_REFUSED - write access to topic 'alice.1' in exchange 'res-t' in vhost \
               '/' refused for user 'bob'"
                .to_string()
        )
    );
    assert_eq!(depth(&g, "res-q").await, 2);

    // Binding keys need the read pattern.
    let bob = as_user(&server, "bob", "bob-pw").await;
    let ch = bob.create_channel().await.unwrap();
    ch.queue_bind(
        "res-q".into(),
        "res-t".into(),
        "public.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let text = expect_code(
        ch.queue_bind(
            "res-q".into(),
            "res-t".into(),
            "private.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(
        text,
        "ACCESS_REFUSED - read access to topic 'private.#' in exchange 'res-t' in \
                      vhost '/' refused for user 'bob'"
    );

    // No topic permission on an exchange means allowed.
    let bob = as_user(&server, "bob", "bob-pw").await;
    let ch = bob.create_channel().await.unwrap();
    ch.basic_publish(
        "amq.topic".into(),
        "alice.1".into(),
        BasicPublishOptions::default(),
        b"t",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    // CC routing keys are checked too.
    let mut headers = FieldTable::default();
    headers.insert(
        "CC".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString(b"mallory.1".to_vec().into())].into()),
    );
    let mut events = bob.events_listener();
    ch.basic_publish(
        "res-t".into(),
        "bob.3".into(),
        BasicPublishOptions::default(),
        b"t",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap();
    let (code, text) = next_error(&mut events).await;
    assert_eq!(code, 403);
    assert!(text.contains("topic 'mallory.1'"), "{text}");
    assert_eq!(depth(&g, "res-q").await, 2);

    // Cleared, the exchange is open again.
    server
        .broker()
        .clear_topic_permissions("bob", "/", None, &admin())
        .unwrap();
    let bob = as_user(&server, "bob", "bob-pw").await;
    let ch = bob.create_channel().await.unwrap();
    publish(ch, "alice.2").await;
    let g2 = channel(&_guest).await;
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(5), || {
            server
                .broker()
                .vhost("/")
                .unwrap()
                .queues()
                .iter()
                .any(|q| q.name() == "res-q" && q.counts().0 == 3)
        })
        .await
    );
    drop(g2);
}

#[tokio::test]
async fn a_permission_revoked_while_connected_applies_to_the_next_operation() {
    let (server, _guest, _g) = setup().await;
    allow(&server, ".*", ".*", ".*");
    let bob = as_user(&server, "bob", "bob-pw").await;
    let ch = bob.create_channel().await.unwrap();
    ch.queue_declare(
        "bob-1".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    server
        .broker()
        .clear_permissions("bob", "/", &admin())
        .unwrap();
    let text = expect_code(
        ch.queue_declare(
            "bob-2".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        403,
    );
    assert_eq!(text, refused("configure", "queue", "bob-2"));
    // And a new connection is refused the vhost.
    let port = server.amqp_addr().port();
    let r = Connection::connect(
        &format!("amqp://bob:bob-pw@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await;
    let text = expect_code(r.map(|_| ()), 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - access to vhost '/' refused for user 'bob'"
    );
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections() {
    let (server, _guest, _g) = setup().await;
    let bob = as_user(&server, "bob", "bob-pw").await;
    let ch = bob.create_channel().await.unwrap();
    server.broker().delete_user("bob", &admin()).unwrap();
    let e = ch
        .queue_declare(
            "x".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    let text = expect_code(e.map(|_| ()), 320);
    assert_eq!(text, "CONNECTION_FORCED - user 'bob' is deleted");
    assert!(server.broker().users.user("bob").is_none());
    assert!(!server.broker().users.can_access_vhost("bob", "/"));
}
