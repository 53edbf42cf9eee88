//! Definitions at boot (`[definitions] load_path`: a file or a directory,
//! a bad file stopping start-up), operator policies capping real queues,
//! and policies, parameters and vhost metadata across a restart.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use warren::Server;
use warren::broker::VhostMetadata;
use warren::broker::audit::Actor;
use warren::store::PolicyRecord;

use crate::common::*;
use crate::definitions::{RABBITMQ_EXPORT, login};

fn write(path: &std::path::Path, doc: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
}

#[tokio::test]
async fn a_definitions_file_is_imported_before_the_broker_serves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    std::fs::write(&file, RABBITMQ_EXPORT).unwrap();
    let mut config = on_disk(&dir.path().join("data"));
    config.definitions.load_path = file.clone();
    let server = start_with(config.clone()).await;
    login(&server, "bob", "b0b:pässwörd", "wd-vhost")
        .await
        .unwrap();
    assert!(
        server
            .broker()
            .vhost("/")
            .unwrap()
            .queue(0, "wd-orders")
            .is_ok()
    );
    server.shutdown().await;
    // Every boot imports it again; what exists is left as it is.
    let server = start_with(config).await;
    login(&server, "alice", "alice-Secret-1", "/")
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_blank_broker_importing_definitions_gets_no_default_user() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    write(
        &file,
        &json!({
            "users": [{"name": "ops", "password": "ops-Pass-1", "tags": ["administrator"]}],
            "vhosts": [{"name": "/"}],
            "permissions": [{"user": "ops", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
        }),
    );
    let mut config = on_disk(&dir.path().join("data"));
    config.definitions.load_path = file;
    let server = start_with(config).await;
    let users: Vec<String> = server
        .broker()
        .users
        .users()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(users, vec!["ops"]);
    login(&server, "ops", "ops-Pass-1", "/").await.unwrap();
    expect_code(login(&server, "guest", "guest", "/").await.map(|_| ()), 403);
    server.shutdown().await;
}

#[tokio::test]
async fn a_directory_of_definitions_loads_its_json_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    // 20 needs what 10 creates; the text file is not read.
    write(
        &defs.join("20-topology.json"),
        &json!({
            "queues": [{"name": "jobs", "vhost": "apps", "durable": true, "auto_delete": false,
                        "arguments": {"x-max-length": 3}}],
            "bindings": [{"source": "amq.topic", "vhost": "apps", "destination": "jobs",
                          "destination_type": "queue", "routing_key": "job.#", "arguments": {}}],
        }),
    );
    write(
        &defs.join("10-access.json"),
        &json!({
            "vhosts": [{"name": "apps", "description": "applications"}],
            "users": [{"name": "app", "password": "app-Pass-1", "tags": []}],
            "permissions": [{"user": "app", "vhost": "apps", "configure": ".*", "write": ".*", "read": ".*"}],
        }),
    );
    std::fs::write(defs.join("README.txt"), "not definitions").unwrap();
    let mut config = on_disk(&dir.path().join("data"));
    config.definitions.load_path = defs;
    let server = start_with(config).await;
    let conn = login(&server, "app", "app-Pass-1", "apps").await.unwrap();
    let ch = channel(&conn).await;
    assert_eq!(depth(&ch, "jobs").await, 0);
    assert_eq!(
        server.broker().vhost_metadata("apps").unwrap().description,
        "applications"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_definitions_file_stops_start_up_naming_the_file_and_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    let mut doc: Value = serde_json::from_str(RABBITMQ_EXPORT).unwrap();
    doc["bindings"][5]["destination"] = json!("wd-missing");
    write(&file, &doc);
    let mut config = on_disk(&dir.path().join("data"));
    config.definitions.load_path = file.clone();
    let err = Server::start(config.clone()).await.unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("bindings[5].destination: no queue 'wd-missing' in vhost '/'"),
        "{err}"
    );
    // Not JSON at all: the line and column.
    std::fs::write(&file, "{\"users\": [").unwrap();
    let err = Server::start(config.clone()).await.unwrap_err().to_string();
    assert!(err.contains("line 1, column 11"), "{err}");
    // A missing path.
    config.definitions.load_path = dir.path().join("nowhere.json");
    let err = Server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("cannot read definitions from"), "{err}");
}

#[test]
fn the_binary_exits_non_zero_on_a_bad_definitions_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    write(
        &file,
        &json!({
            "vhosts": [{"name": "/"}],
            "policies": [{"vhost": "/", "name": "p", "pattern": "(", "definition": {"max-length": 1}}],
        }),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
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
        .env("WARREN_AMQP__BIND", "127.0.0.1")
        .env("WARREN_DEFINITIONS__LOAD_PATH", &file)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("policies[0].pattern: pattern should be regular expression"),
        "{log}"
    );
    assert!(!log.contains("Server startup complete"), "{log}");
}

fn policy(name: &str, pattern: &str, definition: Value) -> PolicyRecord {
    PolicyRecord {
        vhost: "/".into(),
        name: name.into(),
        pattern: pattern.into(),
        apply_to: "queues".into(),
        priority: 0,
        definition: definition.as_object().cloned().unwrap(),
    }
}

#[tokio::test]
async fn an_operator_policy_caps_a_queue_declared_with_a_higher_limit() {
    let server = start().await;
    let broker = server.broker();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    ch.queue_declare(
        "capped.before".into(),
        QueueDeclareOptions::default(),
        args.clone(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        put(&ch, "capped.before", format!("{i}").as_bytes()).await;
    }
    assert_eq!(depth(&ch, "capped.before").await, 5);
    broker
        .set_operator_policy(
            "/",
            policy("cap", "^capped", json!({"max-length": 2})),
            &Actor::internal(),
        )
        .unwrap();
    // The queue that existed is trimmed at once (drop-head).
    assert_eq!(depth(&ch, "capped.before").await, 2);
    ch.queue_declare("capped.after".into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    for i in 0..5 {
        put(&ch, "capped.after", format!("{i}").as_bytes()).await;
    }
    assert_eq!(depth(&ch, "capped.after").await, 2);
    let q = broker.vhost("/").unwrap().queue(0, "capped.after").unwrap();
    assert_eq!(q.settings().operator_policy.as_deref(), Some("cap"));
    assert_eq!(q.settings().max_length, Some(2));
    // A lower argument still wins over the operator's cap.
    broker
        .set_operator_policy(
            "/",
            policy("cap", "^capped", json!({"max-length": 50})),
            &Actor::internal(),
        )
        .unwrap();
    assert_eq!(q.settings().max_length, Some(10));
    broker
        .clear_operator_policy("/", "cap", &Actor::internal())
        .unwrap();
    assert_eq!(q.settings().operator_policy, None);
}

#[tokio::test]
async fn policies_parameters_and_vhost_metadata_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let broker = server.broker();
    let actor = Actor::internal();
    broker
        .create_vhost_with(
            "meta",
            VhostMetadata {
                description: "kept".into(),
                tags: vec!["a".into()],
                default_queue_type: Some("quorum".into()),
            },
            &actor,
        )
        .unwrap();
    broker
        .set_policy(
            "/",
            policy("ttl", "^t", json!({"message-ttl": 500})),
            &actor,
        )
        .unwrap();
    broker
        .set_operator_policy("/", policy("cap", "^t", json!({"max-length": 3})), &actor)
        .unwrap();
    broker
        .set_parameter(
            "federation-upstream",
            "meta",
            "up",
            json!({"uri": "amqp://elsewhere", "expires": 1000}),
            &actor,
        )
        .unwrap();
    broker
        .set_global_parameter("cluster_name", json!("blue"), &actor)
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.queue_declare(
        "t.kept".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let exported = broker.export_definitions(None);
    server.shutdown().await;

    let server = start_with(on_disk(dir.path())).await;
    let broker = server.broker();
    assert_eq!(broker.export_definitions(None), exported);
    assert_eq!(broker.vhost_metadata("meta").unwrap().description, "kept");
    assert_eq!(broker.policies(Some("/")).len(), 1);
    assert_eq!(broker.operator_policies(None).len(), 1);
    assert_eq!(broker.parameters().len(), 1);
    let q = broker.vhost("/").unwrap().queue(0, "t.kept").unwrap();
    let s = q.settings();
    assert_eq!((s.message_ttl, s.max_length), (Some(500), Some(3)));
    assert_eq!(s.operator_policy.as_deref(), Some("cap"));
    // A queue handle keeps the store open.
    drop(q);
    // The cluster id was made once, at first boot.
    let id = |b: &warren::broker::Broker| {
        b.global_parameters()
            .into_iter()
            .find(|p| p.name == "internal_cluster_id")
            .map(|p| p.value)
    };
    assert_eq!(
        id(broker),
        exported["global_parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "internal_cluster_id")
            .map(|p| p["value"].clone())
    );
    // Deleting a vhost takes its parameters with it, for good.
    broker.delete_vhost("meta", &actor).unwrap();
    assert!(broker.parameters().is_empty());
    server.shutdown().await;
    let server = start_with(on_disk(dir.path())).await;
    assert!(server.broker().parameters().is_empty());
    server.shutdown().await;
}

/// Store keys once joined a definition's parts with NUL, so these two
/// bindings (queue `x`, key `a\0b`; queue `x\0a`, key `b`) had one key and
/// the second replaced the first on disk.
#[tokio::test]
async fn bindings_differing_only_where_a_nul_falls_both_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (queue, key) in [("x", "a\0b"), ("x\0a", "b")] {
        ch.queue_declare(queue.into(), durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            queue.into(),
            "amq.direct".into(),
            key.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let bound = |server: &Server| {
        let mut b: Vec<(String, String)> = server
            .broker()
            .vhost("/")
            .unwrap()
            .bindings()
            .into_iter()
            .map(|b| {
                (
                    b.destination.name().to_string(),
                    b.routing_key.as_str().to_string(),
                )
            })
            .collect();
        b.sort();
        b
    };
    let expected = vec![
        ("x".to_string(), "a\0b".to_string()),
        ("x\0a".to_string(), "b".to_string()),
    ];
    assert_eq!(bound(&server), expected);
    server.shutdown().await;
    let server = start_with(on_disk(dir.path())).await;
    assert_eq!(bound(&server), expected);
    server.shutdown().await;
}
