//! Connection lifecycle: handshake, authentication, negotiation,
//! heartbeats, blocking, and closing from either side.

use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use lapin::options::*;
use lapin::{Connection, ConnectionProperties};
use tokio::io::AsyncWriteExt;

use crate::common::*;
use crate::raw::*;

async fn start_frame(server: &warren::Server) -> connection::Start {
    let mut c = RawClient::connect(server.amqp_addr()).await;
    c.send(b"AMQP\x00\x00\x09\x01").await;
    match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
        other => panic!("expected connection.start, got {other:?}"),
    }
}

#[tokio::test]
async fn advertised_product_and_version_come_from_the_config() {
    let mut config = warren::Config::ephemeral();
    config.server_properties.product = "Warren".into();
    config.server_properties.version = "3.13.7".into();
    let server = start_with(config).await;
    let s = start_frame(&server).await;
    let props = s.server_properties.inner();
    assert_eq!(text(props.get("product")), "Warren");
    assert_eq!(text(props.get("version")), "3.13.7");
}

fn text(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("expected a long string, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_start_advertises_rabbitmq_compatible_properties() {
    let server = start().await;
    let s = start_frame(&server).await;
    assert_eq!((s.version_major, s.version_minor), (0, 9));
    assert_eq!(s.mechanisms.as_bytes(), b"PLAIN AMQPLAIN");
    assert_eq!(s.locales.as_bytes(), b"en_US");
    let props = s.server_properties.inner();
    // As RabbitMQ, by default (docs/compatibility.md): clients' own tests
    // check it; Warren names itself in `information`.
    assert_eq!(text(props.get("product")), "RabbitMQ");
    assert_eq!(text(props.get("version")), "4.3.0");
    assert!(text(props.get("information")).starts_with("Warren "));
    let version = text(props.get("version"));
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(parts.len(), 3, "version {version} is not X.Y.Z");
    assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{version}");
    assert!(!text(props.get("platform")).is_empty());
    assert!(!text(props.get("cluster_name")).is_empty());
    let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
        panic!("no capabilities table");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "{cap}"
        );
    }
}

#[tokio::test]
async fn tune_offers_configured_limits_and_accepts_lower_values() {
    let mut config = warren::Config::ephemeral();
    config.limits.heartbeat = 30;
    config.limits.channel_max = 100;
    let server = start_with(config).await;
    let mut c = RawClient::connect(server.amqp_addr()).await;
    c.send(b"AMQP\x00\x00\x09\x01").await;
    c.next_method().await;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        })),
    )
    .await;
    match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => {
            assert_eq!((t.channel_max, t.frame_max, t.heartbeat), (100, 131072, 30));
        }
        other => panic!("unexpected {other:?}"),
    }
    // A client asking for more than offered is refused, as RabbitMQ does.
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 100,
            frame_max: 200_000,
            heartbeat: 0,
        })),
    )
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 530);
    assert!(closed.text.contains("frame_max"), "{}", closed.text);

    // Lower values are fine, and channel_max bounds open channels.
    let mut c = RawClient::connect(server.amqp_addr()).await;
    c.send(b"AMQP\x00\x00\x09\x01").await;
    c.next_method().await;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        })),
    )
    .await;
    c.next_method().await;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2,
            frame_max: 8192,
            heartbeat: 0,
        })),
    )
    .await;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    c.next_method().await;
    c.open_channel(1).await;
    c.open_channel(7).await;
    c.send_method(
        3,
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
            amq_protocol::protocol::channel::Open {},
        )),
    )
    .await;
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 530);
    assert_eq!(
        closed.text,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    );
}

#[tokio::test]
async fn amqplain_login_works() {
    let server = start().await;
    let url = format!("{}?auth_mechanism=amqplain", server.amqp_url());
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("AMQPLAIN login");
    channel(&conn).await;
}

#[tokio::test]
async fn wrong_password_is_refused_with_403() {
    let server = start().await;
    let url = server.amqp_url().replace("guest:guest", "guest:nope");
    let err = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect_err("login must fail");
    let (code, text) = amqp_error(&err).expect("a protocol error");
    assert_eq!(code, 403);
    assert_eq!(
        text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    );
}

#[tokio::test]
async fn wrong_password_without_the_capability_just_closes() {
    let server = start().await;
    let mut c = RawClient::connect(server.amqp_addr()).await;
    c.send(b"AMQP\x00\x00\x09\x01").await;
    c.next_method().await;
    c.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0wrong"),
            locale: "en_US".into(),
        })),
    )
    .await;
    assert!(c.next_frame().await.is_none(), "expected a silent close");
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let server = start().await;
    let url = server.amqp_url().replace("/%2F", "/nosuchvhost");
    let err = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect_err("open must fail");
    let (code, text) = amqp_error(&err).expect("a protocol error");
    assert_eq!(code, 530);
    assert_eq!(text, "NOT_ALLOWED - vhost nosuchvhost not found");
}

#[tokio::test]
async fn default_user_and_vhost_come_from_the_config() {
    let mut config = warren::Config::ephemeral();
    config.auth.default_user = "app".into();
    config.auth.default_pass = "s3cret".into();
    config.auth.default_vhost = "apps".into();
    let server = start_with(config).await;
    assert!(
        server.amqp_url().ends_with("/apps"),
        "{}",
        server.amqp_url()
    );
    let conn = connect(&server).await;
    channel(&conn).await;
    // guest does not exist on such a broker.
    let url = server.amqp_url().replace("app:s3cret", "guest:guest");
    assert!(
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .is_err()
    );
}

fn connection_close() -> Vec<u8> {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

/// A publish of `body` to the default exchange on channel 1, as bytes.
fn unroutable_publish(body: &[u8]) -> Vec<u8> {
    let mut bytes = publish(1, "", "nowhere");
    bytes.extend(header_frame(1, body.len() as u64, &[0, 0]));
    bytes.extend(body_frame(1, body));
    bytes
}

async fn expect_close_ok(c: &mut RawClient) {
    loop {
        match c.next_frame().await {
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
            )) => return,
            Some(AMQPFrame::Heartbeat) => continue,
            other => panic!("expected close-ok, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_close_is_answered_with_close_ok() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.send(&connection_close()).await;
    expect_close_ok(&mut c).await;
    // As RabbitMQ: closing the socket is left to the client; once it does,
    // the broker lets go at once.
    c.stream.shutdown().await.unwrap();
    assert!(c.is_closed_by_peer(Duration::from_secs(2)).await);
    assert!(
        eventually(Duration::from_secs(2), || server
            .broker()
            .connections()
            .is_empty())
        .await
    );
}

/// amqplib's muxer interleaves `connection.close` with publishes it still
/// has buffered, and goes on writing them after it. RabbitMQ answers
/// `close-ok` and discards what follows until the client closes the socket;
/// closing at once resets the connection and fails the client's writes
/// (`write EPIPE`) before it sees `close-ok`.
#[tokio::test]
async fn frames_after_client_close_are_discarded_until_the_client_hangs_up() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    let burst: Vec<u8> = unroutable_publish(b"m").repeat(100);
    let mut bytes = burst.clone();
    bytes.extend(connection_close());
    bytes.extend(&burst);
    c.send(&bytes).await;
    expect_close_ok(&mut c).await;
    // The client is still writing: none of it fails, nothing is answered,
    // and the socket stays open.
    for _ in 0..10 {
        c.stream
            .write_all(&burst)
            .await
            .expect("writes after close-ok must not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !c.is_closed_by_peer(Duration::from_millis(300)).await,
        "the broker closed the socket before the client did"
    );
    c.stream.shutdown().await.unwrap();
    assert!(c.is_closed_by_peer(Duration::from_secs(2)).await);
}

/// A client that never hangs up is let go after the heartbeat interval (at
/// most 30 s), as RabbitMQ does.
#[tokio::test]
async fn a_closed_connection_left_open_by_the_client_is_dropped_after_the_heartbeat() {
    let server = start().await;
    let mut c = RawClient::open_with(server.amqp_addr(), 131072, 1).await;
    c.send(&connection_close()).await;
    expect_close_ok(&mut c).await;
    assert!(!c.is_closed_by_peer(Duration::from_millis(300)).await);
    assert!(c.is_closed_by_peer(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn broker_sends_heartbeats_and_drops_a_silent_peer() {
    let server = start().await;
    let mut c = RawClient::open_with(server.amqp_addr(), 131072, 1).await;
    // The broker heartbeats an idle connection...
    match c.next_frame().await {
        Some(AMQPFrame::Heartbeat) => {}
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    // ...and, as we never send anything, drops us after two intervals.
    assert!(c.is_closed_by_peer(Duration::from_secs(4)).await);
}

#[tokio::test]
async fn heartbeat_zero_disables_heartbeats() {
    let server = start().await;
    let mut c = RawClient::open_with(server.amqp_addr(), 131072, 0).await;
    assert!(!c.is_closed_by_peer(Duration::from_millis(2500)).await);
}

#[tokio::test]
async fn connection_blocked_and_unblocked_reach_capable_clients() {
    // A watermark of 1 KiB: one queued 4 KiB message raises the alarm.
    let mut config = warren::Config::ephemeral();
    config.limits.memory_high_watermark = warren::config::SizeSetting::Text("1KiB".into());
    let server = start_with(config).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "hoard").await;
    put(&ch, "hoard", &[0u8; 4096]).await;
    assert!(
        eventually(Duration::from_secs(2), || conn.status().blocked()).await,
        "client never saw connection.blocked"
    );
    // Another connection (one that never published) is not blocked: it
    // purges, the alarm clears.
    let other = connect(&server).await;
    let och = channel(&other).await;
    och.queue_purge("hoard".into(), Default::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || !conn.status().blocked()).await,
        "client never saw connection.unblocked"
    );
    ch.queue_declare(
        "after-alarm".into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_closes_connections_with_320() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    let stopping = tokio::spawn(server.shutdown());
    let closed = c.expect_connection_close().await;
    assert_eq!(closed.code, 320);
    assert_eq!(
        closed.text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn the_old_0_9_header_is_served_as_0_9_1() {
    let server = start().await;
    let mut c = RawClient::connect(server.amqp_addr()).await;
    c.send(b"AMQP\x01\x01\x00\x09").await;
    match c.next_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => {
            assert_eq!((s.version_major, s.version_minor), (0, 9))
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
}

/// A consumer that stops reading (and sending heartbeats) is dropped after
/// its heartbeat deadline, even while the broker has output waiting for it,
/// and its unacknowledged messages are ready again — as RabbitMQ does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_dropped_and_its_messages_requeued() {
    use amq_protocol::protocol::{AMQPClass, basic};
    let server = start().await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    declare(&ch, "stall").await;
    let body = vec![7u8; 256 * 1024];
    for _ in 0..200 {
        put(&ch, "stall", &body).await;
    }
    let mut stalled = crate::raw::RawClient::open_with(server.amqp_addr(), 131072, 2).await;
    stalled.open_channel(1).await;
    stalled
        .send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "stall".into(),
                consumer_tag: "stuck".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: Default::default(),
            })),
        )
        .await;
    // ... and never reads another byte, nor sends a heartbeat.
    let queue = server
        .broker()
        .vhost("/")
        .unwrap()
        .queue(0, "stall")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || queue.message_count() < 200).await,
        "nothing was delivered to the consumer"
    );
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(12), || queue.consumer_count() == 0
            && queue.message_count() == 200)
        .await,
        "the stalled consumer is still there ({} consumers, {} ready)",
        queue.consumer_count(),
        queue.message_count()
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}
