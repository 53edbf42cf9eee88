//! A Warren export imported into a real RabbitMQ (management API on
//! 127.0.0.1:15672, guest/guest): ignored by default; run by hand with
//! `cargo test --test it warren_export_imports_into_rabbitmq -- --ignored`.
//! It creates `alice`, `bob`, `wd-carol`, `wd-vhost` and `wd-*` entities
//! on that RabbitMQ and removes them afterwards.

use std::process::Command;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use warren::broker::VhostMetadata;
use warren::broker::audit::Actor;

use crate::common::*;
use crate::definitions::fixture;

const API: &str = "http://127.0.0.1:15672/api";

fn curl(method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-u",
        "guest:guest",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .args(["-H", "content-type: application/json"])
    .arg(format!("{API}{path}"));
    if let Some(b) = body {
        c.args(["-d", &b.to_string()]);
    }
    let out = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The items of a section that belong to this test (names starting with
/// `wd-`, the test's users, or its vhost), as sorted strings.
fn ours(doc: &Value, key: &str) -> Vec<String> {
    let mine = |v: &Value| {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        [s("name"), s("user"), s("vhost"), s("destination")]
            .iter()
            .any(|n| n.starts_with("wd-") || n == "alice" || n == "bob")
    };
    let mut items: Vec<String> = doc[key]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| mine(v))
        .map(|v| v.to_string())
        .collect();
    items.sort();
    items
}

#[tokio::test]
#[ignore = "needs a RabbitMQ with the management plugin on 127.0.0.1:15672"]
async fn warren_export_imports_into_rabbitmq() {
    let server = start().await;
    let broker = server.broker();
    let actor = Actor::internal();
    broker.import_definitions(&fixture(), None, &actor).unwrap();
    // Something made through Warren itself: AMQP-typed arguments and
    // vhost metadata.
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::ShortInt(7));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        "wd-from-amqp".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    broker
        .create_vhost_with(
            "wd-vhost",
            VhostMetadata {
                description: "from Warren".into(),
                tags: vec!["w".into()],
                default_queue_type: None,
            },
            &actor,
        )
        .unwrap();
    let mut export = broker.export_definitions(None);
    // Leave the RabbitMQ node its own identity.
    export["global_parameters"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["name"] != "internal_cluster_id");

    let (code, body) = curl("POST", "/definitions", Some(&export));
    let back: Value = serde_json::from_str(&curl("GET", "/definitions", None).1).unwrap();
    let vhost: Value = serde_json::from_str(&curl("GET", "/vhosts/wd-vhost", None).1).unwrap();
    let queue: Value =
        serde_json::from_str(&curl("GET", "/queues/%2F/wd-from-amqp", None).1).unwrap();
    // The hash Warren exported logs in to RabbitMQ.
    let whoami = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-u", "wd-carol:carol-Pass-9"])
        .arg(format!("{API}/whoami"))
        .output()
        .expect("curl runs");
    // Clean up before asserting, so a failure leaves nothing behind.
    curl("DELETE", "/vhosts/wd-vhost", None);
    for q in ["wd-orders", "wd-dead", "wd-transient", "wd-from-amqp"] {
        curl("DELETE", &format!("/queues/%2F/{q}"), None);
    }
    for x in [
        "wd-events",
        "wd-unrouted",
        "wd-dlx",
        "wd-audit",
        "wd-headers",
    ] {
        curl("DELETE", &format!("/exchanges/%2F/{x}"), None);
    }
    curl("DELETE", "/policies/%2F/wd-ttl", None);
    curl("DELETE", "/operator-policies/%2F/wd-cap", None);
    for u in ["alice", "bob", "wd-carol"] {
        curl("DELETE", &format!("/users/{u}"), None);
    }
    curl("DELETE", "/global-parameters/wd_global", None);

    assert!(
        code == 204 || code == 201,
        "RabbitMQ refused the export: {code} {body}"
    );
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), "200");
    for key in [
        "users",
        "permissions",
        "topic_permissions",
        "parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    ] {
        let exported = ours(&export, key);
        assert!(!exported.is_empty(), "{key}");
        assert_eq!(ours(&back, key), exported, "{key}");
    }
    assert_eq!(vhost["description"], "from Warren");
    assert_eq!(vhost["tags"], json!(["w"]));
    assert_eq!(
        queue["arguments"],
        json!({"x-max-length": 7, "x-overflow": "reject-publish"})
    );
}
