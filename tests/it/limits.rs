//! Every limit, refused with RabbitMQ's code and text before the newcomer
//! gets anything: connections per node, vhost and user; channels per
//! connection (channel_max) and per user; queues per vhost; frames when
//! frame_max is 0; message size.

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren::broker::access::Password;
use warren::broker::audit::Actor;
use warren::broker::limits::{UserLimits, VhostLimits};

use crate::common::{connect, expect_code, next_error, start, start_with};
use crate::raw::{RawClient, raw_frame};

async fn login(
    server: &warren::Server,
    user: &str,
    pass: &str,
) -> Result<Connection, lapin::Error> {
    let port = server.amqp_addr().port();
    Connection::connect(
        &format!("amqp://{user}:{pass}@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
}

#[tokio::test]
async fn the_node_connection_limit_refuses_with_530() {
    let mut config = warren::Config::ephemeral();
    config.limits.max_connections = 2;
    let server = start_with(config).await;
    let _a = connect(&server).await;
    let _b = connect(&server).await;
    let text = expect_code(login(&server, "guest", "guest").await.map(|_| ()), 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - connection refused: node connection limit (2) is reached"
    );
    drop(_a);
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(5), || {
            server.broker().connections().len() == 1
        })
        .await
    );
    login(&server, "guest", "guest")
        .await
        .expect("a place again");
}

#[tokio::test]
async fn vhost_and_user_connection_limits_refuse_with_530() {
    let server = start().await;
    let actor = Actor::internal();
    let broker = server.broker();
    broker
        .put_user("u1", Password::Clear("pw".into()), vec![], &actor)
        .unwrap();
    broker
        .set_permissions("u1", "/", ".*", ".*", ".*", &actor)
        .unwrap();

    broker
        .set_vhost_limits(
            "/",
            VhostLimits {
                max_connections: Some(1),
                ..Default::default()
            },
            &actor,
        )
        .unwrap();
    let first = connect(&server).await;
    let text = expect_code(login(&server, "u1", "pw").await.map(|_| ()), 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - access to vhost '/' refused for user 'u1': connection limit (1) is reached"
    );
    drop(first);
    broker
        .set_vhost_limits("/", VhostLimits::default(), &actor)
        .unwrap();

    broker
        .set_user_limits(
            "u1",
            UserLimits {
                max_connections: Some(1),
                ..Default::default()
            },
            &actor,
        )
        .unwrap();
    let _one = login(&server, "u1", "pw").await.unwrap();
    let text = expect_code(login(&server, "u1", "pw").await.map(|_| ()), 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - connection refused for user 'u1': user connection limit (1) is reached"
    );
    // Other users are not affected, and 0 refuses every connection.
    let _guest = connect(&server).await;
    broker
        .set_vhost_limits(
            "/",
            VhostLimits {
                max_connections: Some(0),
                ..Default::default()
            },
            &actor,
        )
        .unwrap();
    expect_code(login(&server, "guest", "guest").await.map(|_| ()), 530);
}

#[tokio::test]
async fn the_user_channel_limit_closes_the_connection_with_530() {
    let server = start().await;
    let actor = Actor::internal();
    server
        .broker()
        .set_user_limits(
            "guest",
            UserLimits {
                max_channels: Some(2),
                ..Default::default()
            },
            &actor,
        )
        .unwrap();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let _kept = a.create_channel().await.unwrap();
    let ch = b.create_channel().await.unwrap();
    // The limit is per user, across its connections.
    let text = expect_code(b.create_channel().await.map(|_| ()), 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum \
         allowed user limit of 2"
    );
    drop(ch);
    drop(b);
    // The channels of the closed connection no longer count.
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(5), || {
            server.broker().connections().len() == 1
        })
        .await
    );
    a.create_channel().await.expect("a place again");
}

#[tokio::test]
async fn channel_max_bounds_channels_per_connection() {
    let mut config = warren::Config::ephemeral();
    config.limits.channel_max = 2;
    let server = start_with(config).await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send(&crate::raw::method(
        3,
        amq_protocol::protocol::AMQPClass::Channel(
            amq_protocol::protocol::channel::AMQPMethod::Open(
                amq_protocol::protocol::channel::Open {},
            ),
        ),
    ))
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 530);
    assert_eq!(
        closed.text,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    );
}

#[tokio::test]
async fn the_vhost_queue_limit_refuses_new_queues_with_406() {
    let server = start().await;
    server
        .broker()
        .set_vhost_limits(
            "/",
            VhostLimits {
                max_queues: Some(1),
                ..Default::default()
            },
            &Actor::internal(),
        )
        .unwrap();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "one".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Declaring the existing queue again is not a new queue.
    ch.queue_declare(
        "one".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let text = expect_code(
        ch.queue_declare(
            "two".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ()),
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost '/' (1) is reached"
    );
}

#[tokio::test]
async fn an_oversized_publish_closes_the_channel_with_406() {
    let mut config = warren::Config::ephemeral();
    config.limits.max_message_size = 1000;
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    let mut events = conn.events_listener();
    ch.basic_publish(
        "".into(),
        "q".into(),
        BasicPublishOptions::default(),
        &[0u8; 1001],
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        next_error(&mut events).await,
        (
            406,
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
                .into()
        )
    );
}

/// With `frame_max` 0 ("no limit") a peer announcing a 4 GiB frame is
/// refused at once: frames are still bounded by the largest message, and
/// the reader never reserves memory for what was only announced.
#[tokio::test]
async fn frame_max_zero_does_not_let_a_peer_announce_a_4_gib_frame() {
    let mut config = warren::Config::ephemeral();
    config.limits.frame_max = 0;
    config.limits.max_message_size = 1 << 20;
    let server = start_with(config).await;
    let mut c = RawClient::open_with(server.amqp_addr(), 0, 0).await;
    c.open_channel(1).await;
    let mut frame = raw_frame(3, 1, &[]);
    frame[3..7].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    frame.truncate(7);
    frame.extend_from_slice(&[0u8; 64]);
    c.send(&frame).await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 501);
    assert!(
        closed.text.contains("frame_too_large,4294967280"),
        "{}",
        closed.text
    );
    // Frames up to the message size still pass.
    let mut ok = RawClient::open_with(server.amqp_addr(), 0, 0).await;
    ok.open_channel(1).await;
    ok.send(&crate::raw::publish(1, "", "nowhere")).await;
    ok.send(&crate::raw::header_frame(1, 500_000, &[0, 0]))
        .await;
    ok.send(&crate::raw::body_frame(1, &vec![7u8; 500_000]))
        .await;
    assert!(
        !ok.is_closed_by_peer(std::time::Duration::from_millis(300))
            .await
    );
}
