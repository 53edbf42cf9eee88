//! Definitions in RabbitMQ's format: a file exported from RabbitMQ 3.10.8
//! imports with its users' passwords and its arguments' types and exports
//! back equivalent; per-vhost documents; a bad document is refused whole,
//! with its location, and changes nothing.

use std::collections::BTreeMap;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use warren::Server;
use warren::broker::audit::Actor;
use warren::broker::{DefinitionsError, VhostMetadata};

use crate::common::*;

/// `GET /api/definitions` of RabbitMQ 3.10.8 after creating users (alice
/// SHA-256, bob SHA-512, wd-carol with tags and limits), a vhost with
/// limits, permissions, a topic permission, two policies, an operator
/// policy, a federation upstream, a global parameter, queues with typed
/// arguments (one quorum), exchanges (one with arguments, one internal) and
/// queue, exchange and headers bindings with arguments.
pub const RABBITMQ_EXPORT: &str = include_str!("fixtures/rabbitmq-3.10.8-definitions.json");
/// `GET /api/definitions/wd-vhost` at the same moment.
const RABBITMQ_VHOST_EXPORT: &str =
    include_str!("fixtures/rabbitmq-3.10.8-definitions-wd-vhost.json");
/// `rabbitmqctl export_definitions` at the same moment (vhost metadata).
const RABBITMQCTL_EXPORT: &str =
    include_str!("fixtures/rabbitmq-3.10.8-rabbitmqctl-definitions.json");

pub fn fixture() -> Value {
    serde_json::from_str(RABBITMQ_EXPORT).unwrap()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub async fn login(
    server: &Server,
    user: &str,
    pass: &str,
    vhost: &str,
) -> Result<Connection, lapin::Error> {
    let url = format!(
        "amqp://{}:{}@127.0.0.1:{}/{}",
        enc(user),
        enc(pass),
        server.amqp_addr().port(),
        enc(vhost)
    );
    Connection::connect(&url, ConnectionProperties::default()).await
}

fn import(server: &Server, doc: &Value, vhost: Option<&str>) -> Result<(), DefinitionsError> {
    server
        .broker()
        .import_definitions(doc, vhost, &Actor::internal())
        .map(|_| ())
}

/// A document with every list sorted, and vhosts reduced to their names
/// (RabbitMQ 3.10 exports no vhost metadata): two brokers holding the same
/// definitions give equal forms, whatever their order.
fn normalised(doc: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for key in [
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    ] {
        let mut items: Vec<String> = doc[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|v| match key {
                "vhosts" => v["name"].to_string(),
                _ => v.to_string(),
            })
            .collect();
        items.sort();
        out.insert(key.to_string(), items);
    }
    out
}

#[tokio::test]
async fn a_rabbitmq_export_imports_with_passwords_and_types_and_exports_back_equivalent() {
    let server = start().await;
    let broker = server.broker();
    let summary = broker
        .import_definitions(&fixture(), None, &Actor::internal())
        .unwrap();
    assert_eq!(
        (summary.users, summary.vhosts, summary.permissions),
        (4, 2, 5)
    );
    assert_eq!(
        (
            summary.parameters,
            summary.vhost_limits,
            summary.operator_policies,
            summary.global_parameters,
            summary.policies
        ),
        (1, 1, 1, 2, 2)
    );
    assert_eq!(
        (summary.exchanges, summary.queues, summary.bindings),
        (7, 5, 7)
    );
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);

    // Each user logs in with the password it had on RabbitMQ.
    login(&server, "alice", "alice-Secret-1", "/")
        .await
        .unwrap();
    login(&server, "bob", "b0b:pässwörd", "wd-vhost")
        .await
        .unwrap();
    login(&server, "wd-carol", "carol-Pass-9", "wd-vhost")
        .await
        .unwrap();
    expect_code(
        login(&server, "wd-carol", "carol-Pass-8", "wd-vhost")
            .await
            .map(|_| ()),
        403,
    );
    let carol = broker.users.user("wd-carol").unwrap();
    assert_eq!(carol.tags, vec!["management", "policymaker"]);
    assert_eq!(carol.limits.max_connections, Some(5));
    assert_eq!(
        broker.vhost("wd-vhost").unwrap().limits().max_queues,
        Some(100)
    );

    // Arguments keep their types: integers are integers, strings strings,
    // tables tables.
    let orders = broker.vhost("/").unwrap().queue(0, "wd-orders").unwrap();
    let args = orders.config.arguments.inner();
    assert_eq!(args.get("x-max-length"), Some(&AMQPValue::LongLongInt(10)));
    assert!(matches!(
        args.get("x-dead-letter-exchange"),
        Some(AMQPValue::LongString(s)) if s.as_bytes() == b"wd-dlx"
    ));
    let binding = broker
        .vhost("/")
        .unwrap()
        .bindings()
        .into_iter()
        .find(|b| b.routing_key.as_str() == "order.*")
        .unwrap();
    assert!(matches!(
        binding.arguments.inner().get("x-nested"),
        Some(AMQPValue::FieldTable(_))
    ));
    // The policy, the operator policy and the arguments all apply.
    let s = orders.settings();
    assert_eq!(s.policy.as_deref(), Some("wd-ttl"));
    assert_eq!(s.operator_policy.as_deref(), Some("wd-cap"));
    assert_eq!((s.max_length, s.message_ttl), (Some(10), Some(60_000)));
    let quorum = broker
        .vhost("wd-vhost")
        .unwrap()
        .queue(0, "wd-quorum")
        .unwrap();
    assert_eq!(
        quorum.config.args.queue_type,
        warren::queue::args::QueueType::Quorum
    );

    // Exported again, it is what RabbitMQ exported.
    let exported = broker.export_definitions(None);
    assert_eq!(normalised(&exported), normalised(&fixture()));
    assert_eq!(exported["product_name"], "Warren");
    assert_eq!(
        exported["rabbitmq_version"],
        warren::broker::RABBITMQ_VERSION
    );

    // And a Warren export imports into a blank Warren as the same thing.
    let other = start().await;
    import(&other, &exported, None).unwrap();
    assert_eq!(other.broker().export_definitions(None), exported);
    // Importing it again changes nothing.
    let again = broker
        .import_definitions(&exported, None, &Actor::internal())
        .unwrap();
    assert_eq!((again.exchanges, again.queues, again.bindings), (0, 0, 0));
    assert_eq!(again.unchanged, 7 + 5 + 7);
    assert_eq!(broker.export_definitions(None), exported);
}

#[tokio::test]
async fn vhost_metadata_is_exported_as_rabbitmq_3_11_does_and_read_from_rabbitmqctl_exports() {
    let server = start().await;
    let broker = server.broker();
    let mut doc: Value = serde_json::from_str(RABBITMQCTL_EXPORT).unwrap();
    // `rabbitmqctl export_definitions` leaves internal exchanges out but
    // keeps their bindings: refused whole, as any binding to nothing.
    let e = server
        .broker()
        .import_definitions(&doc, None, &Actor::internal())
        .unwrap_err();
    assert_eq!(e.location, "bindings[2].destination");
    doc["bindings"]
        .as_array_mut()
        .unwrap()
        .retain(|b| b["destination"] != "wd-audit");
    import(&server, &doc, None).unwrap();
    let meta = broker.vhost_metadata("wd-vhost").unwrap();
    assert_eq!(meta.description, "Warren definitions fixture");
    assert_eq!(meta.tags, vec!["qa", "blue"]);
    let actor = Actor::internal();
    broker
        .create_vhost_with(
            "typed",
            VhostMetadata {
                description: "q".into(),
                tags: vec!["t".into()],
                default_queue_type: Some("quorum".into()),
            },
            &actor,
        )
        .unwrap();
    let vhosts = broker.export_definitions(None)["vhosts"].clone();
    let typed = vhosts
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "typed")
        .unwrap()
        .clone();
    assert_eq!(
        typed,
        json!({"name": "typed", "description": "q", "tags": ["t"], "default_queue_type": "quorum",
               "metadata": {"description": "q", "tags": ["t"], "default_queue_type": "quorum"}})
    );
    let default = vhosts.as_array().unwrap().iter().find(|v| v["name"] == "/");
    assert_eq!(default.unwrap()["description"], "Default virtual host");
    assert!(
        broker
            .create_vhost_with(
                "bad",
                VhostMetadata {
                    default_queue_type: Some("sideways".into()),
                    ..Default::default()
                },
                &actor,
            )
            .is_err()
    );
}

#[tokio::test]
async fn a_vhost_export_imports_into_another_vhost() {
    let server = start().await;
    let broker = server.broker();
    let doc: Value = serde_json::from_str(RABBITMQ_VHOST_EXPORT).unwrap();
    let err = broker
        .import_definitions(&doc, Some("elsewhere"), &Actor::internal())
        .unwrap_err();
    assert_eq!(err.to_string(), "vhost: no such vhost 'elsewhere'");
    broker
        .create_vhost("elsewhere", &Actor::internal())
        .unwrap();
    import(&server, &doc, Some("elsewhere")).unwrap();
    let v = broker.vhost("elsewhere").unwrap();
    assert!(v.queue(0, "wd-quorum").is_ok() && v.queue(0, "wd-orders").is_ok());
    assert_eq!(v.policies().len(), 1);
    assert_eq!(v.limits().max_queues, Some(100));
    assert_eq!(broker.parameters()[0].vhost, "elsewhere");
    // Exported per vhost, it has RabbitMQ's per-vhost shape.
    let exported = broker.export_definitions(Some("elsewhere"));
    let mut keys: Vec<&str> = exported
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bindings",
            "exchanges",
            "parameters",
            "policies",
            "queues",
            "rabbit_version"
        ]
    );
    assert!(exported["queues"][0].get("vhost").is_none());
    let mut original = doc.clone();
    let mut ours = exported.clone();
    for d in [&mut original, &mut ours] {
        for p in d["parameters"].as_array_mut().unwrap() {
            p["vhost"] = json!("x");
        }
        for p in d["policies"].as_array_mut().unwrap() {
            p["vhost"] = json!("x");
        }
    }
    for key in ["parameters", "policies", "queues", "exchanges", "bindings"] {
        let sorted = |d: &Value| {
            let mut v: Vec<String> = d[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&ours), sorted(&original), "{key}");
    }
}

/// The fixture with one fault put in by `f`.
fn broken(f: impl FnOnce(&mut Value)) -> Value {
    let mut doc = fixture();
    f(&mut doc);
    doc
}

fn refused(server: &Server, doc: &Value) -> DefinitionsError {
    server
        .broker()
        .import_definitions(doc, None, &Actor::internal())
        .unwrap_err()
}

#[tokio::test]
async fn a_bad_document_is_refused_whole_with_its_location_and_changes_nothing() {
    let server = start().await;
    let broker = server.broker();
    let before = broker.export_definitions(None);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            broken(|d| d["permissions"][3]["write"] = json!("^alice-(")),
            "permissions[3].write",
            "'^alice-(' is not a valid regular expression",
        ),
        (
            broken(|d| d["bindings"][5]["destination"] = json!("wd-missing")),
            "bindings[5].destination",
            "no queue 'wd-missing' in vhost '/'",
        ),
        (
            broken(|d| {
                d["parameters"][0]["value"]["definition"] = json!({"overflow": "drop-head"})
            }),
            "parameters[0].value.definition",
            "[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings",
        ),
        (
            broken(|d| d["users"][1]["password_hash"] = json!("not base64!")),
            "users[1].password_hash",
            "not a rabbit_password_hashing_sha256 hash",
        ),
        (
            broken(|d| d["policies"][1]["definition"] = json!({"max-length": -1})),
            "policies[1].definition",
            "-1 is not a valid maximum length",
        ),
        (
            broken(|d| d["exchanges"][2]["type"] = json!("x-no-such-type")),
            "exchanges[2].type",
            "invalid exchange type 'x-no-such-type'",
        ),
        (
            broken(|d| d["queues"][4]["arguments"]["x-max-priority"] = json!("five")),
            "queues[4]",
            "invalid arg 'x-max-priority' for queue 'wd-orders' in vhost 'wd-vhost'",
        ),
        (
            broken(|d| d["bindings"][0]["source"] = json!("wd-nowhere")),
            "bindings[0].source",
            "no exchange 'wd-nowhere' in vhost '/'",
        ),
        (
            broken(|d| d["permissions"][0]["vhost"] = json!("wd-nowhere")),
            "permissions[0].vhost",
            "no such vhost 'wd-nowhere'",
        ),
        (
            broken(|d| d["parameters"][1]["component"] = json!("no-such-plugin")),
            "parameters[1].component",
            "component no-such-plugin not found",
        ),
        (
            broken(|d| {
                d["parameters"][1]["value"]
                    .as_object_mut()
                    .unwrap()
                    .remove("uri");
            }),
            "parameters[1].value",
            // RabbitMQ names the parameter, not its component.
            "Key \"uri\" not found in wd-upstream",
        ),
        (
            broken(|d| d["queues"][1]["durable"] = json!("false")),
            "queues[1].durable",
            "must be true or false",
        ),
    ];
    for (doc, location, reason) in cases {
        let e = refused(&server, &doc);
        assert_eq!(e.location, location, "{e}");
        assert!(e.reason.contains(reason), "{location}: {e}");
        assert_eq!(
            broker.export_definitions(None),
            before,
            "{location}: nothing changed"
        );
    }

    // A queue that exists, declared differently from the document's.
    let conn = crate::common::connect(&server).await;
    let ch = channel(&conn).await;
    // What the document declares, but for the length limit.
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(20));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("wd-dlx".into()),
    );
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("wd-orders".into(), durable, args)
        .await
        .unwrap();
    let before = broker.export_definitions(None);
    let e = refused(&server, &fixture());
    assert_eq!(
        e.to_string(),
        "queues[0]: PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue \
         'wd-orders' in vhost '/': received the value '10' of type 'long' but current is the \
         value '20' of type 'signedint'"
    );
    assert_eq!(broker.export_definitions(None), before);
    // The three faults at once (a bad pattern deep inside, a binding to a
    // missing queue, the inequivalent queue): the first is reported.
    let three = broken(|d| {
        d["permissions"][3]["write"] = json!("(");
        d["bindings"][5]["destination"] = json!("wd-missing");
    });
    assert_eq!(refused(&server, &three).location, "permissions[3].write");
    assert_eq!(broker.export_definitions(None), before);
    assert!(broker.users.user("alice").is_none());
    expect_code(
        login(&server, "alice", "alice-Secret-1", "/")
            .await
            .map(|_| ()),
        403,
    );
}

#[tokio::test]
async fn unknown_keys_are_ignored_and_reserved_names_skipped() {
    let server = start().await;
    let doc = json!({
        "colour": "blue",
        "vhosts": [{"name": "/"}],
        "exchanges": [{"name": "amq.custom", "vhost": "/", "type": "direct"}],
        "queues": [{"name": "amq.q", "vhost": "/"}, {"name": "plain", "vhost": "/"}],
        "bindings": [{"source": "amq.direct", "vhost": "/", "destination": "plain",
                      "destination_type": "queue", "routing_key": "k"}],
    });
    let summary = server
        .broker()
        .import_definitions(&doc, None, &Actor::internal())
        .unwrap();
    assert_eq!(summary.skipped.len(), 2, "{:?}", summary.skipped);
    assert_eq!((summary.queues, summary.bindings), (1, 1));
    // A vhost entry without metadata leaves the vhost's alone.
    assert_eq!(
        server.broker().vhost_metadata("/").unwrap().description,
        "Default virtual host"
    );
}
