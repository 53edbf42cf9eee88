//! The broker as a process and as a library: start-up, configuration,
//! ports, the admin and metrics endpoints, and signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A bare HTTP/1.1 GET; returns (status, body).
async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    basic_auth: Option<&str>,
) -> (u16, String) {
    use base64::Engine;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = basic_auth
        .map(|a| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        })
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn alarms_health_check_needs_credentials_and_reports_alarms() {
    let server = start().await;
    let admin = server.admin_addr().unwrap();
    let (status, _) = http_get(admin, "/api/health/checks/alarms", None).await;
    assert_eq!(status, 401);
    let (status, _) = http_get(admin, "/api/health/checks/alarms", Some("guest:wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = http_get(admin, "/api/health/checks/alarms", Some("guest:guest")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"ok""#), "{body}");
    // The resource monitor clears an alarm it does not see every 100 ms:
    // raise it again right before each try.
    let mut answer = (0, String::new());
    for _ in 0..20 {
        server
            .broker()
            .alarms
            .set(warren::broker::alarms::Resource::Memory, true);
        answer = http_get(admin, "/api/health/checks/alarms", Some("guest:guest")).await;
        if answer.0 == 503 {
            break;
        }
    }
    let (status, body) = answer;
    assert_eq!(status, 503);
    assert!(body.contains(r#""status":"failed""#), "{body}");
    assert!(body.contains(r#""resource":"memory""#), "{body}");
}

#[tokio::test]
async fn prometheus_counters_follow_traffic() {
    let server = start().await;
    let metrics = server.metrics_addr().unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "m".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        ch.basic_publish(
            "".into(),
            "m".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_get("m".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let (status, body) = http_get(metrics, "/metrics", None).await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    assert_eq!(value("rabbitmq_connections "), 1.0);
    assert_eq!(value("rabbitmq_channels "), 1.0);
    assert_eq!(value("rabbitmq_queues "), 1.0);
    assert_eq!(value("rabbitmq_global_messages_received_total"), 3.0);
    assert_eq!(value("rabbitmq_global_messages_delivered_total"), 1.0);
    assert!(body.contains("rabbitmq_identity_info{"), "{body}");
}

/// As RabbitMQ, the default listeners are dual-stack: `localhost` may
/// resolve to `::1` first (Node ≥ 17 does), and guest, loopback-only, must
/// get in over either.
#[tokio::test]
async fn default_listeners_serve_ipv4_and_ipv6() {
    let mut config = warren::Config::defaults();
    config.amqp.port = 0;
    config.admin.port = 0;
    config.metrics.port = 0;
    config.storage.ephemeral = true;
    assert_eq!(config.amqp.bind, ["::"]);
    let server = start_with(config).await;
    let port = server.amqp_addr().port();
    for host in ["127.0.0.1", "[::1]"] {
        let url = format!("amqp://guest:guest@{host}:{port}/%2f");
        let conn = lapin::Connection::connect(&url, Default::default())
            .await
            .unwrap_or_else(|e| panic!("AMQP over {host}: {e}"));
        conn.close(200, "bye".into()).await.unwrap();
        for (addr, path) in [
            (server.admin_addr().unwrap(), "/api/health/checks/alarms"),
            (server.metrics_addr().unwrap(), "/metrics"),
        ] {
            let addr = format!("{host}:{}", addr.port()).parse().unwrap();
            let (status, _) = http_get(addr, path, Some("guest:guest")).await;
            assert_eq!(status, 200, "GET {path} over {host}");
        }
    }
}

/// A listener can be given several addresses; with port 0 they share one.
#[tokio::test]
async fn listeners_bind_every_configured_address() {
    let mut config = warren::Config::ephemeral();
    config.amqp.bind = vec!["127.0.0.1".into(), "::1".into()];
    let server = start_with(config).await;
    let addrs = server.amqp_addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].port(), addrs[1].port());
    assert!(addrs[1].is_ipv6());
    for addr in addrs {
        let url = format!("amqp://guest:guest@{addr}/%2f");
        lapin::Connection::connect(&url, Default::default())
            .await
            .unwrap_or_else(|e| panic!("AMQP over {addr}: {e}"));
    }
}

#[tokio::test]
async fn two_brokers_run_side_by_side_in_one_process() {
    let a = start().await;
    let b = start().await;
    assert_ne!(a.amqp_addr(), b.amqp_addr());
    let ca = connect(&a).await;
    let cb = connect(&b).await;
    channel(&ca)
        .await
        .queue_declare(
            "only-in-a".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    expect_code(
        channel(&cb)
            .await
            .queue_declare(
                "only-in-a".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await,
        404,
    );
}

/// The real binary: starts with flags, logs its ports and the startup line,
/// serves a client, and exits 0 on SIGTERM after closing connections.
#[tokio::test]
async fn the_binary_starts_fast_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--amqp-port",
            "0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env("WARREN_AMQP__BIND", "127.0.0.1")
        .env("RABBITMQ_DEFAULT_USER", "ci")
        .env("RABBITMQ_DEFAULT_PASS", "ci-pass")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut port = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("startup log line");
        if let Some(addr) = line.split("started TCP listener on ").nth(1) {
            port = addr
                .trim()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
        if line.contains("Server startup complete") {
            break;
        }
    }
    let startup = started.elapsed();
    let port = port.expect("the AMQP port was logged");
    assert!(dir.path().join("data").is_dir(), "data dir created");
    let url = format!("amqp://ci:ci-pass@127.0.0.1:{port}/%2f");
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to the binary");
    channel(&conn).await;
    // SIGTERM: the client is told 320, the process exits 0.
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        eventually(Duration::from_secs(2), || !conn.status().connected()).await,
        "client still connected after shutdown"
    );
    eprintln!("binary start-up to 'Server startup complete': {startup:?}");
}

#[tokio::test]
async fn config_rejects_nonsense_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--amqp-port", "0"])
        .env("WARREN_LIMITS__FRAME_MAX", "100")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("frame_max"), "{err}");
}

#[tokio::test]
async fn an_unusable_data_directory_stops_the_binary_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--amqp-port",
            "0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(&not_a_dir)
        .env("WARREN_AMQP__BIND", "127.0.0.1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("cannot prepare data directory"), "{log}");
}

#[tokio::test]
async fn out_of_descriptors_new_connections_are_refused_and_existing_ones_carry_on() {
    let broker = spawn_warren(&["--ephemeral".to_string()], &[], Some(48));
    // Open connections until the broker runs out of descriptors.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default()),
        )
        .await
        .expect("a refused connection must not hang");
        match attempt {
            Ok(conn) => open.push(conn),
            Err(_) => refused += 1,
        }
    }
    assert!(open.len() >= 10, "only {} connections fitted", open.len());
    assert!(refused > 0, "the limit was never reached");
    // The connections that got in still work.
    let ch = channel(&open[0]).await;
    declare(&ch, "still-here").await;
    put(&ch, "still-here", b"hello").await;
    assert_eq!(depth(&ch, "still-here").await, 1);
    // Freeing descriptors lets new clients in again.
    let freed: Vec<_> = open.drain(1..6).collect();
    for conn in freed {
        conn.close(200, "bye".into()).await.unwrap();
    }
    let mut admitted = false;
    for _ in 0..20 {
        if lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default())
            .await
            .is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        admitted,
        "no connection admitted after descriptors were freed"
    );
}
