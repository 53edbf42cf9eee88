//! AMQPS and HTTPS: certificates made at test time (rcgen), lapin and a
//! bare rustls client against the real broker.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren::broker::access::Password;
use warren::broker::audit::Actor;

use crate::common::{expect_code, start_with};
use crate::pki::{Ca, TlsFiles, client_config, lapin_connect, lapin_tls};

fn amqps_url(server: &warren::Server, user: &str, pass: &str) -> String {
    let port = server.amqps_addr().unwrap().port();
    format!("amqps://{user}:{pass}@127.0.0.1:{port}/%2f")
}

/// A raw TLS connection: handshake with `config`, then the AMQP header,
/// and the first bytes back (which start `connection.start`).
async fn tls_hello(
    server: &warren::Server,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(rustls::ProtocolVersion, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(server.amqps_addr().unwrap()).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let version = tls.get_ref().1.protocol_version().unwrap();
    tls.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut head = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head))
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    Ok((version, head.to_vec()))
}

/// Frame type 1 on channel 0 carrying connection.start (10, 10).
fn is_connection_start(head: &[u8]) -> bool {
    head[0] == 1 && head[1..3] == [0, 0] && head[7..11] == [0, 10, 0, 10]
}

#[tokio::test]
async fn amqps_serves_lapin_beside_the_plain_listener() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let server = start_with(files.config(false)).await;
    let conn = lapin_connect(&amqps_url(&server, "guest", "guest"), lapin_tls(&ca, None))
        .await
        .expect("lapin connects over TLS");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "tq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "tq".into(),
        BasicPublishOptions::default(),
        b"over tls",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = ch
        .basic_get("tq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"over tls");
    assert!(server.broker().connections().iter().all(|c| c.tls));
    // The plain listener still serves, on its own port.
    let plain = crate::common::connect(&server).await;
    assert_ne!(server.amqp_addr(), server.amqps_addr().unwrap());
    assert_eq!(
        server
            .broker()
            .connections()
            .iter()
            .filter(|c| !c.tls)
            .count(),
        1
    );
    plain.close(200, "bye".into()).await.unwrap();
}

#[tokio::test]
async fn tls_1_3_and_1_2_are_both_negotiated() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let server = start_with(files.config(false)).await;
    let (v13, head) = tls_hello(
        &server,
        client_config(&ca, None, &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert_eq!(v13, rustls::ProtocolVersion::TLSv1_3);
    assert!(is_connection_start(&head), "{head:?}");
    let (v12, head) = tls_hello(
        &server,
        client_config(&ca, None, &[&rustls::version::TLS12]),
    )
    .await
    .unwrap();
    assert_eq!(v12, rustls::ProtocolVersion::TLSv1_2);
    assert!(is_connection_start(&head), "{head:?}");
}

#[tokio::test]
async fn tls_alone_without_the_plain_listener() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let mut config = files.config(false);
    config.amqp.enabled = false;
    let server = start_with(config).await;
    assert_eq!(server.amqp_addr(), server.amqps_addr().unwrap());
    let conn = lapin_connect(&amqps_url(&server, "guest", "guest"), lapin_tls(&ca, None)).await;
    assert!(conn.is_ok());
}

#[tokio::test]
async fn a_client_certificate_from_an_unknown_ca_or_none_is_refused() {
    let ca = Ca::new("test CA");
    let stranger = Ca::new("some other CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let server = start_with(files.config(true)).await;
    let url = amqps_url(&server, "guest", "guest");
    let foreign = stranger.client("guest", &[]);
    assert!(
        lapin_connect(&url, lapin_tls(&ca, Some(&foreign)))
            .await
            .is_err()
    );
    assert!(
        tls_hello(
            &server,
            client_config(&ca, Some(&foreign), &[&rustls::version::TLS13])
        )
        .await
        .is_err(),
        "a certificate from an unknown CA fails the handshake"
    );
    assert!(
        tls_hello(
            &server,
            client_config(&ca, None, &[&rustls::version::TLS13])
        )
        .await
        .is_err(),
        "fail_if_no_peer_cert: no certificate fails the handshake"
    );
    let ours = ca.client("guest", &[]);
    let conn = lapin_connect(&url, lapin_tls(&ca, Some(&ours))).await;
    assert!(conn.is_ok(), "{:?}", conn.err());
}

#[tokio::test]
async fn external_logs_in_the_user_named_by_the_client_certificate() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let server = start_with(files.config(true)).await;
    let broker = server.broker();
    let actor = Actor::internal();
    broker
        .put_user("cert-user", Password::None, vec![], &actor)
        .unwrap();
    broker
        .set_permissions("cert-user", "/", ".*", ".*", ".*", &actor)
        .unwrap();
    let port = server.amqps_addr().unwrap().port();
    let url = format!("amqps://127.0.0.1:{port}/%2f?auth_mechanism=external");
    let conn = lapin_connect(&url, lapin_tls(&ca, Some(&ca.client("cert-user", &[]))))
        .await
        .expect("EXTERNAL login with a client certificate");
    conn.create_channel().await.unwrap();
    let users: Vec<String> = broker
        .connections()
        .iter()
        .map(|c| c.user.clone())
        .collect();
    assert_eq!(users, vec!["cert-user".to_string()]);
    // A user with no password cannot log in with PLAIN.
    let plain = lapin_connect(
        &amqps_url(&server, "cert-user", "anything"),
        lapin_tls(&ca, Some(&ca.client("cert-user", &[]))),
    )
    .await;
    expect_code(plain.map(|_| ()), 403);
    // A certificate naming no known user is refused.
    let unknown = lapin_connect(&url, lapin_tls(&ca, Some(&ca.client("nobody", &[])))).await;
    expect_code(unknown.map(|_| ()), 403);
}

#[tokio::test]
async fn external_can_take_the_name_from_a_subject_alternative_name() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let mut config = files.config(true);
    config.auth.ssl_cert_login_from = "subject_alternative_name".into();
    config.auth.ssl_cert_login_san_type = "dns".into();
    config.auth.ssl_cert_login_san_index = 1;
    let server = start_with(config).await;
    let actor = Actor::internal();
    server
        .broker()
        .put_user("second.example", Password::None, vec![], &actor)
        .unwrap();
    server
        .broker()
        .set_permissions("second.example", "/", ".*", ".*", ".*", &actor)
        .unwrap();
    let port = server.amqps_addr().unwrap().port();
    let url = format!("amqps://127.0.0.1:{port}/%2f?auth_mechanism=external");
    let cert = ca.client("cn-is-not-used", &["first.example", "second.example"]);
    let conn = lapin_connect(&url, lapin_tls(&ca, Some(&cert))).await;
    assert!(conn.is_ok(), "{:?}", conn.err());
    assert_eq!(server.broker().connections()[0].user, "second.example");
}

#[tokio::test]
async fn a_wrong_password_over_tls_is_refused_with_403() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let server = start_with(files.config(false)).await;
    let r = lapin_connect(&amqps_url(&server, "guest", "wrong"), lapin_tls(&ca, None)).await;
    let text = expect_code(r.map(|_| ()), 403);
    assert_eq!(
        text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details \
         see the broker logfile."
    );
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = TlsFiles::write(&old_ca.server(), &old_ca);
    let server = start_with(files.config(false)).await;
    let url = amqps_url(&server, "guest", "guest");
    let before = lapin_connect(&url, lapin_tls(&old_ca, None)).await.unwrap();
    let ch = before.create_channel().await.unwrap();

    files.replace(&new_ca.server(), &new_ca);
    server.reload_tls().unwrap();
    assert!(
        lapin_connect(&url, lapin_tls(&old_ca, None)).await.is_err(),
        "new handshakes present the new certificate"
    );
    let after = lapin_connect(&url, lapin_tls(&new_ca, None)).await;
    assert!(after.is_ok(), "{:?}", after.err());
    // The connection made before the reload carries on.
    ch.queue_declare(
        "still-here".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // A broken file on reload keeps the certificates in use.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let e = server.reload_tls().unwrap_err().to_string();
    assert!(e.contains("server.pem"), "{e}");
    assert!(lapin_connect(&url, lapin_tls(&new_ca, None)).await.is_ok());
}

#[tokio::test]
async fn a_bad_certificate_file_stops_start_up_with_the_reason() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    std::fs::write(&files.cert, "garbage").unwrap();
    let e = warren::Server::start(files.config(false))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("TLS certificate") && text.contains("server.pem"),
        "{text}"
    );
    let mut config = files.config(false);
    config.tls.key = files.path().join("missing.key");
    std::fs::write(&files.cert, ca.server().cert).unwrap();
    let text = warren::Server::start(config).await.unwrap_err().to_string();
    assert!(text.contains("missing.key"), "{text}");

    // The binary says so and exits non-zero, no panic.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--ephemeral",
            "--amqp-port",
            "0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(["--amqps-port", "0", "--tls-cert"])
        .arg(files.path().join("nope.pem"))
        .arg("--tls-key")
        .arg(&files.key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("nope.pem") && !log.contains("panicked"),
        "{log}"
    );
}

#[tokio::test]
async fn the_http_listeners_serve_https_with_the_same_certificates() {
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let mut config = files.config(false);
    config.admin.tls = true;
    config.metrics.tls = true;
    let server = start_with(config).await;
    for (addr, path) in [
        (
            server.admin_addr().unwrap(),
            "/api/health/checks/is-in-service",
        ),
        (server.metrics_addr().unwrap(), "/metrics"),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&ca, None, &[&rustls::version::TLS13]));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut response))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    }
}

/// A consumer over TLS that falls behind (a small receive buffer, not
/// reading for a while) still gets every delivery once it reads again, with
/// heartbeats off so no other write can push out what rustls holds.
/// (The flush after each write that this guards was found by the AMQPS
/// benchmark, where its absence cut throughput to an eighth; this test did
/// not reproduce that stall without it.)
#[tokio::test]
async fn tls_deliveries_are_flushed_after_the_socket_was_full() {
    use amq_protocol::frame::AMQPFrame;
    use amq_protocol::protocol::{AMQPClass, basic};
    let ca = Ca::new("test CA");
    let files = TlsFiles::write(&ca.server(), &ca);
    let server = start_with(files.config(false)).await;
    let plain = crate::common::connect(&server).await;
    let ch = plain.create_channel().await.unwrap();
    crate::common::declare(&ch, "backlog").await;
    const N: usize = 2000;
    let body = vec![7u8; 1000];
    for _ in 0..N {
        crate::common::put(&ch, "backlog", &body).await;
    }
    let queue = server.broker().vhost("/").unwrap().queues()[0].clone();
    assert!(
        crate::common::eventually(Duration::from_secs(10), || queue.counts().0 == N as u32).await
    );

    // A small receive buffer, so the broker's writes fill the socket often.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.amqps_addr().unwrap()).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(client_config(&ca, None, &[&rustls::version::TLS13]));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut c = crate::raw::RawClient::over(tls).handshake(131_072, 0).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "backlog".into(),
            consumer_tag: "c".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: true,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    // Fall behind: the broker fills the socket and waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delivered = 0;
    while delivered < N {
        match c.next_frame().await {
            Some(AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(_)))) => {
                delivered += 1
            }
            Some(_) => {}
            None => panic!("stalled after {delivered} of {N} deliveries"),
        }
    }
}
