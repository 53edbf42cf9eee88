//! Logins: users carried over from a RabbitMQ definitions export, failed
//! logins slowed and capped per address and counted in metrics,
//! `connection.update-secret`, loopback-only users on a dual-stack
//! listener, vhosts created and deleted at run time, and the audit trail.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren::broker::access::Password;
use warren::broker::audit::Actor;
use warren::broker::auth::HashingAlgorithm;

use crate::common::{expect_code, on_disk, start, start_with};

fn url(server: &warren::Server, user: &str, pass: &str, vhost: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    format!(
        "amqp://{}:{}@127.0.0.1:{}/{}",
        enc(user),
        enc(pass),
        server.amqp_addr().port(),
        enc(vhost)
    )
}

async fn login(
    server: &warren::Server,
    user: &str,
    pass: &str,
) -> Result<Connection, lapin::Error> {
    Connection::connect(
        &url(server, user, pass, "/"),
        ConnectionProperties::default(),
    )
    .await
}

/// Users exported by RabbitMQ 3.10.8 (`rabbitmqctl export_definitions`):
/// alice hashed with SHA-256, bob with SHA-512 (the password has a colon
/// and non-ASCII letters).
fn import_rabbitmq_users(broker: &warren::broker::Broker) {
    let text = include_str!("fixtures/rabbitmq-3.10.8-definitions.json");
    let defs: serde_json::Value = serde_json::from_str(text).unwrap();
    let actor = Actor::internal();
    for u in defs["users"].as_array().unwrap() {
        let name = u["name"].as_str().unwrap();
        let algorithm = HashingAlgorithm::parse(u["hashing_algorithm"].as_str().unwrap()).unwrap();
        let tags = u["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let hash = u["password_hash"].as_str().unwrap().to_string();
        broker
            .put_user(name, Password::Hash { hash, algorithm }, tags, &actor)
            .unwrap();
        broker
            .set_permissions(name, "/", ".*", ".*", ".*", &actor)
            .unwrap();
    }
}

#[tokio::test]
async fn users_exported_from_rabbitmq_log_in_with_their_passwords_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    import_rabbitmq_users(server.broker());
    assert_eq!(
        server.broker().users.user("bob").unwrap().hashing_algorithm,
        HashingAlgorithm::Sha512
    );
    login(&server, "alice", "alice-Secret-1")
        .await
        .expect("sha256 user");
    login(&server, "bob", "b0b:pässwörd")
        .await
        .expect("sha512 user");
    expect_code(
        login(&server, "alice", "alice-Secret-2").await.map(|_| ()),
        403,
    );
    expect_code(login(&server, "bob", "b0b").await.map(|_| ()), 403);
    assert_eq!(
        server.broker().users.user("bob").unwrap().tags,
        vec!["monitoring"]
    );
    // Restart on the same data directory: the hashes and their algorithms
    // were stored.
    server.shutdown().await;
    let server = start_with(on_disk(dir.path())).await;
    login(&server, "alice", "alice-Secret-1")
        .await
        .expect("sha256 user after restart");
    login(&server, "bob", "b0b:pässwörd")
        .await
        .expect("sha512 user after restart");
}

#[tokio::test]
async fn failed_logins_are_slowed_then_capped_per_address_and_counted() {
    let mut config = warren::Config::ephemeral();
    config.auth.failed_login_delay_ms = 200;
    config.auth.max_failed_logins_per_minute = 3;
    let server = start_with(config).await;
    let mut took = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let text = expect_code(login(&server, "guest", "wrong").await.map(|_| ()), 403);
        took.push(t.elapsed());
        assert!(text.contains("Login was refused using authentication mechanism PLAIN"));
    }
    // The second failure waits one step, the third two.
    assert!(took[1] >= Duration::from_millis(200), "{took:?}");
    assert!(took[2] >= Duration::from_millis(400), "{took:?}");
    // Past the cap even the right password is refused, unchecked.
    expect_code(login(&server, "guest", "guest").await.map(|_| ()), 403);
    let metrics = server.broker().metrics.render();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    assert_eq!(
        value("rabbitmq_auth_attempts_failed_total{protocol=\"amqp091\"}"),
        4.0
    );
    assert!(
        metrics.contains(
            "rabbitmq_auth_attempts_detailed_failed_total{remote_address=\"127.0.0.1\",\
             username=\"guest\",protocol=\"amqp091\"} 4"
        ),
        "{metrics}"
    );
}

/// RabbitMQ's internal backend keeps no state that can expire, so it takes
/// any new secret (measured on 3.10.8; amqplib's suite relies on it): the
/// secret is for token backends such as OAuth 2, which Warren does not have.
#[tokio::test]
async fn update_secret_is_accepted_as_rabbitmq_internal_backend_does() {
    let server = start().await;
    let conn = login(&server, "guest", "guest").await.unwrap();
    conn.update_secret("new secret".into(), "no reason".into())
        .await
        .expect("the internal backend takes any new secret");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the connection is still usable");
    drop(conn);
    // The password itself is unchanged.
    assert!(login(&server, "guest", "new secret").await.is_err());
    assert!(login(&server, "guest", "guest").await.is_ok());
}

/// On a dual-stack listener (`[::]`) an IPv4 client on 127.0.0.1 shows up
/// as `::ffff:127.0.0.1`: that is loopback too, so guest may log in, and
/// the broker reports the canonical `127.0.0.1` as RabbitMQ does.
#[tokio::test]
async fn guest_on_a_dual_stack_listener_is_loopback() {
    let mut config = warren::Config::ephemeral();
    config.amqp.bind = vec!["::".into()];
    let server = match warren::Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("no IPv6 here, skipping: {e}");
            return;
        }
    };
    let port = server.amqp_addr().port();
    let conn = Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .expect("guest from 127.0.0.1 through [::]");
    let peer = server.broker().connections()[0].peer;
    assert_eq!(peer.ip(), std::net::IpAddr::from([127, 0, 0, 1]), "{peer}");
    drop(conn);
}

#[tokio::test]
async fn a_deleted_vhost_closes_its_connections_and_its_contents_go_durably() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let actor = Actor::internal();
    let broker = server.broker();
    broker.create_vhost("v1", &actor).unwrap();
    broker
        .set_permissions("guest", "v1", ".*", ".*", ".*", &actor)
        .unwrap();
    broker
        .set_topic_permissions("guest", "v1", "amq.topic", ".*", ".*", &actor)
        .unwrap();
    let conn = Connection::connect(
        &url(&server, "guest", "guest", "v1"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "kept".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "kept".into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();

    broker.delete_vhost("v1", &actor).unwrap();
    let e = ch
        .queue_declare(
            "x".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        expect_code(e.map(|_| ()), 320),
        "CONNECTION_FORCED - vhost 'v1' is deleted"
    );
    let again = Connection::connect(
        &url(&server, "guest", "guest", "v1"),
        ConnectionProperties::default(),
    )
    .await;
    assert_eq!(
        expect_code(again.map(|_| ()), 530),
        "NOT_ALLOWED - vhost v1 not found"
    );

    server.shutdown().await;
    let server = start_with(on_disk(dir.path())).await;
    assert!(server.broker().vhost("v1").is_none());
    let broker = server.broker();
    broker.create_vhost("v1", &Actor::internal()).unwrap();
    let v1 = broker.vhost("v1").unwrap();
    assert_eq!(v1.queue_count(), 0, "the queue went with the vhost");
    assert!(
        !broker.users.can_access_vhost("guest", "v1"),
        "so did the permissions"
    );
    assert!(!broker.users.has_topic_permissions("guest", "v1"));
}

#[tokio::test]
async fn the_audit_log_records_logins_and_changes_with_who_and_from_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit").join("audit.log");
    let mut config = warren::Config::ephemeral();
    config.audit.enabled = true;
    config.audit.path = path.clone();
    let server = start_with(config).await;
    expect_code(login(&server, "guest", "nope").await.map(|_| ()), 403);
    let conn = login(&server, "guest", "guest").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "audited".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "audited".into(),
        "amq.direct".into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_delete("audited".into(), Default::default())
        .await
        .unwrap();
    let actor = Actor {
        user: "ops".into(),
        peer: Some("192.0.2.7:4000".parse().unwrap()),
        via: "http",
    };
    let broker = server.broker();
    broker.create_vhost("audit-v", &actor).unwrap();
    broker
        .put_user(
            "carol",
            Password::Clear("pw".into()),
            vec!["management".into()],
            &actor,
        )
        .unwrap();
    broker
        .set_permissions("carol", "audit-v", ".*", ".*", ".*", &actor)
        .unwrap();
    broker
        .set_vhost_limits(
            "audit-v",
            warren::broker::limits::VhostLimits {
                max_queues: Some(5),
                ..Default::default()
            },
            &actor,
        )
        .unwrap();
    broker.delete_user("carol", &actor).unwrap();

    let wanted = [
        "login.failed",
        "login.succeeded",
        "queue.created",
        "binding.created",
        "queue.deleted",
        "vhost.created",
        "user.created",
        "permission.created",
        "vhost.limits.set",
        "user.deleted",
    ];
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let found = crate::common::eventually(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        wanted
            .iter()
            .all(|w| lines.iter().any(|l| l["event"] == *w))
    })
    .await;
    assert!(found, "{lines:#?}");
    let event = |name: &str| lines.iter().find(|l| l["event"] == name).unwrap().clone();
    let failed = event("login.failed");
    assert_eq!(failed["user"], "guest");
    assert_eq!(failed["what"]["mechanism"], "PLAIN");
    assert_eq!(failed["what"]["tls"], false);
    assert!(failed["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        failed["what"]["reason"],
        "user 'guest' - invalid credentials"
    );
    assert_eq!(event("login.succeeded")["what"]["vhost"], "/");
    let created = event("queue.created");
    assert_eq!(created["via"], "amqp");
    assert_eq!(created["user"], "guest");
    assert_eq!(created["what"]["name"], "audited");
    assert_eq!(created["what"]["vhost"], "/");
    let perm = event("permission.created");
    assert_eq!(perm["user"], "ops");
    assert_eq!(perm["peer"], "192.0.2.7:4000");
    assert_eq!(perm["via"], "http");
    assert!(perm["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(perm["what"]["user"], "carol");
    assert_eq!(perm["what"]["vhost"], "audit-v");
}
