//! The list_* commands: which columns each accepts (rabbitmqctl's info
//! keys), where each column's value sits in the management API's JSON,
//! and the banner each prints.

use serde_json::Value;

use super::Ctx;
use crate::api::{Api, seg};
use crate::error::Failure;
use crate::render::{Kind, cell_json, cell_text};

/// A column: its rabbitmqctl name, the field path in the API's object.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub path: &'static [&'static str],
    pub kind: Kind,
}

const fn col(name: &'static str, path: &'static [&'static str], kind: Kind) -> Column {
    Column { name, path, kind }
}

/// What a list command lists.
pub struct Spec {
    pub columns: &'static [Column],
    pub defaults: &'static [&'static str],
}

pub static QUEUES: Spec = Spec {
    columns: &[
        col("arguments", &["arguments"], Kind::Args),
        col("auto_delete", &["auto_delete"], Kind::Plain),
        col("consumer_capacity", &["consumer_capacity"], Kind::Plain),
        col(
            "consumer_utilisation",
            &["consumer_utilisation"],
            Kind::Plain,
        ),
        col("consumers", &["consumers"], Kind::Count),
        col("disk_reads", &["message_stats", "disk_reads"], Kind::Count),
        col(
            "disk_writes",
            &["message_stats", "disk_writes"],
            Kind::Count,
        ),
        col("durable", &["durable"], Kind::Plain),
        col("exclusive", &["exclusive"], Kind::Plain),
        col(
            "exclusive_consumer_pid",
            &["exclusive_consumer_pid"],
            Kind::Plain,
        ),
        col(
            "exclusive_consumer_tag",
            &["exclusive_consumer_tag"],
            Kind::Plain,
        ),
        col(
            "head_message_timestamp",
            &["head_message_timestamp"],
            Kind::Plain,
        ),
        col("leader", &["leader"], Kind::Plain),
        col("members", &["members"], Kind::Plain),
        col("memory", &["memory"], Kind::Count),
        col("message_bytes", &["message_bytes"], Kind::Count),
        col(
            "message_bytes_persistent",
            &["message_bytes_persistent"],
            Kind::Count,
        ),
        col("message_bytes_ram", &["message_bytes_ram"], Kind::Count),
        col("message_bytes_ready", &["message_bytes_ready"], Kind::Count),
        col(
            "message_bytes_unacknowledged",
            &["message_bytes_unacknowledged"],
            Kind::Count,
        ),
        col("messages", &["messages"], Kind::Count),
        col("messages_persistent", &["messages_persistent"], Kind::Count),
        col("messages_ram", &["messages_ram"], Kind::Count),
        col("messages_ready", &["messages_ready"], Kind::Count),
        col("messages_ready_ram", &["messages_ready_ram"], Kind::Count),
        col(
            "messages_unacknowledged",
            &["messages_unacknowledged"],
            Kind::Count,
        ),
        col(
            "messages_unacknowledged_ram",
            &["messages_unacknowledged_ram"],
            Kind::Count,
        ),
        col("name", &["name"], Kind::Plain),
        col("online", &["online"], Kind::Plain),
        col("owner_pid", &["owner_pid_details", "name"], Kind::Plain),
        col("pid", &["pid"], Kind::Plain),
        col("policy", &["policy"], Kind::Plain),
        col("slave_pids", &["slave_nodes"], Kind::Plain),
        col("state", &["state"], Kind::Plain),
        col(
            "synchronised_slave_pids",
            &["synchronised_slave_nodes"],
            Kind::Plain,
        ),
        col("type", &["type"], Kind::Plain),
    ],
    defaults: &["name", "messages"],
};

pub static EXCHANGES: Spec = Spec {
    columns: &[
        col("arguments", &["arguments"], Kind::Args),
        col("auto_delete", &["auto_delete"], Kind::Plain),
        col("durable", &["durable"], Kind::Plain),
        col("internal", &["internal"], Kind::Plain),
        col("name", &["name"], Kind::Plain),
        col("policy", &["policy"], Kind::Plain),
        col("type", &["type"], Kind::Plain),
    ],
    defaults: &["name", "type"],
};

/// `rabbitmqctl shovel_status`, from `/api/shovels`.
pub static SHOVELS: Spec = Spec {
    columns: &[
        col("destination", &["dest_uri"], Kind::Plain),
        col("destination_exchange", &["dest_exchange"], Kind::Plain),
        col(
            "destination_exchange_key",
            &["dest_exchange_key"],
            Kind::Plain,
        ),
        col("destination_protocol", &["dest_protocol"], Kind::Plain),
        col("destination_queue", &["dest_queue"], Kind::Plain),
        col("forwarded", &["forwarded"], Kind::Count),
        col("last_changed", &["timestamp"], Kind::Plain),
        col("name", &["name"], Kind::Plain),
        col("source", &["src_uri"], Kind::Plain),
        col("source_exchange", &["src_exchange"], Kind::Plain),
        col("source_exchange_key", &["src_exchange_key"], Kind::Plain),
        col("source_protocol", &["src_protocol"], Kind::Plain),
        col("source_queue", &["src_queue"], Kind::Plain),
        col("state", &["state"], Kind::Plain),
        col("termination_reason", &["reason"], Kind::Plain),
        col("type", &["type"], Kind::Plain),
        col("vhost", &["vhost"], Kind::Plain),
    ],
    defaults: &[
        "destination",
        "destination_protocol",
        "destination_queue",
        "last_changed",
        "name",
        "source",
        "source_protocol",
        "source_queue",
        "state",
        "termination_reason",
        "type",
        "vhost",
    ],
};

/// `rabbitmqctl federation_status`, from `/api/federation-links`.
pub static FEDERATION_LINKS: Spec = Spec {
    columns: &[
        col("error", &["error"], Kind::Plain),
        col("exchange", &["exchange"], Kind::Plain),
        col("forwarded", &["forwarded"], Kind::Count),
        col("id", &["id"], Kind::Plain),
        col("last_changed", &["timestamp"], Kind::Plain),
        col("queue", &["queue"], Kind::Plain),
        col("status", &["status"], Kind::Plain),
        col("type", &["type"], Kind::Plain),
        col("upstream", &["upstream"], Kind::Plain),
        col("upstream_exchange", &["upstream_exchange"], Kind::Plain),
        col("upstream_queue", &["upstream_queue"], Kind::Plain),
        col("uri", &["uri"], Kind::Plain),
        col("vhost", &["vhost"], Kind::Plain),
    ],
    defaults: &[
        "error",
        "exchange",
        "id",
        "last_changed",
        "queue",
        "status",
        "type",
        "upstream",
        "upstream_exchange",
        "upstream_queue",
        "uri",
        "vhost",
    ],
};

pub static BINDINGS: Spec = Spec {
    columns: &[
        col("arguments", &["arguments"], Kind::Args),
        col("destination_kind", &["destination_type"], Kind::Plain),
        col("destination_name", &["destination"], Kind::Plain),
        col("routing_key", &["routing_key"], Kind::Plain),
        col("source_kind", &[], Kind::Const("exchange")),
        col("source_name", &["source"], Kind::Plain),
    ],
    defaults: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
};

pub static CONNECTIONS: Spec = Spec {
    columns: &[
        col("auth_mechanism", &["auth_mechanism"], Kind::Plain),
        col("channel_max", &["channel_max"], Kind::Plain),
        col("channels", &["channels"], Kind::Count),
        col("client_properties", &["client_properties"], Kind::Args),
        col("connected_at", &["connected_at"], Kind::Plain),
        col("frame_max", &["frame_max"], Kind::Plain),
        col("host", &["host"], Kind::Ip),
        col("name", &["name"], Kind::Plain),
        col("peer_cert_issuer", &["peer_cert_issuer"], Kind::Plain),
        col("peer_cert_subject", &["peer_cert_subject"], Kind::Plain),
        col("peer_cert_validity", &["peer_cert_validity"], Kind::Plain),
        col("peer_host", &["peer_host"], Kind::Ip),
        col("peer_port", &["peer_port"], Kind::Plain),
        col("pid", &["pid"], Kind::Plain),
        col("port", &["port"], Kind::Plain),
        col("protocol", &["protocol"], Kind::Protocol),
        col("recv_cnt", &["recv_cnt"], Kind::Count),
        col("recv_oct", &["recv_oct"], Kind::Count),
        col("send_cnt", &["send_cnt"], Kind::Count),
        col("send_oct", &["send_oct"], Kind::Count),
        col("send_pend", &["send_pend"], Kind::Count),
        col("ssl", &["ssl"], Kind::Plain),
        col("ssl_cipher", &["ssl_cipher"], Kind::Plain),
        col("ssl_hash", &["ssl_hash"], Kind::Plain),
        col("ssl_key_exchange", &["ssl_key_exchange"], Kind::Plain),
        col("ssl_protocol", &["ssl_protocol"], Kind::Plain),
        col("state", &["state"], Kind::Plain),
        col("timeout", &["timeout"], Kind::Plain),
        col("user", &["user"], Kind::Plain),
        col("vhost", &["vhost"], Kind::Plain),
    ],
    defaults: &["user", "peer_host", "peer_port", "state"],
};

pub static CONSUMERS: Spec = Spec {
    columns: &[
        col("ack_required", &["ack_required"], Kind::Plain),
        col("active", &["active"], Kind::Plain),
        col("activity_status", &["activity_status"], Kind::Plain),
        col("arguments", &["arguments"], Kind::Args),
        // No Erlang pids here: the channel's name stands in for one.
        col("channel_pid", &["channel_details", "name"], Kind::Plain),
        col("consumer_tag", &["consumer_tag"], Kind::Plain),
        col("prefetch_count", &["prefetch_count"], Kind::Count),
        col("queue_name", &["queue", "name"], Kind::Plain),
    ],
    defaults: &[
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "arguments",
    ],
};

pub static USERS: Spec = Spec {
    columns: &[
        col("user", &["name"], Kind::Plain),
        col("tags", &["tags"], Kind::Tags),
    ],
    defaults: &["user", "tags"],
};

pub static VHOSTS: Spec = Spec {
    columns: &[
        col("cluster_state", &["cluster_state"], Kind::ClusterState),
        col(
            "default_queue_type",
            &["default_queue_type"],
            Kind::OrUndefined,
        ),
        col("description", &["description"], Kind::Plain),
        col("name", &["name"], Kind::Plain),
        col("tags", &["tags"], Kind::Tags),
        col("tracing", &["tracing"], Kind::Plain),
    ],
    defaults: &["name"],
};

pub static PERMISSIONS: Spec = Spec {
    columns: &[
        col("user", &["user"], Kind::Plain),
        col("configure", &["configure"], Kind::Plain),
        col("write", &["write"], Kind::Plain),
        col("read", &["read"], Kind::Plain),
    ],
    defaults: &["user", "configure", "write", "read"],
};

pub static POLICIES: Spec = Spec {
    columns: &[
        col("vhost", &["vhost"], Kind::Plain),
        col("name", &["name"], Kind::Plain),
        col("pattern", &["pattern"], Kind::Plain),
        col("apply-to", &["apply-to"], Kind::Plain),
        col("definition", &["definition"], Kind::JsonText),
        col("priority", &["priority"], Kind::Plain),
    ],
    defaults: &[
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ],
};

/// What a 404 from the list's path means.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// An unknown vhost lists nothing (rabbitmqctl exits 0).
    Empty,
    /// An unknown vhost is an error (list_permissions, list_policies).
    VhostError,
}

/// The columns asked for (`a b` or `a,b`), checked against the spec.
pub fn resolve(spec: &'static Spec, asked: &[String]) -> Result<Vec<&'static Column>, Failure> {
    let names: Vec<&str> = asked
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let names: Vec<&str> = if names.is_empty() {
        spec.defaults.to_vec()
    } else {
        names
    };
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !spec.columns.iter().any(|c| c.name == *n))
        .collect();
    if !unknown.is_empty() {
        return Err(Failure::usage(format!(
            "Info key(s) {} are not supported",
            unknown.join(",")
        )));
    }
    Ok(names
        .iter()
        .filter_map(|n| spec.columns.iter().find(|c| c.name == *n))
        .collect())
}

fn field<'a>(item: &'a Value, path: &[&str]) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    path.iter().try_fold(item, |v, key| v.get(key))
}

/// Rows of cells for the table formatter.
pub fn text_rows(columns: &[&Column], items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| cell_text(field(item, c.path), c.kind))
                .collect()
        })
        .collect()
}

/// Rows of values for the JSON formatter.
pub fn json_rows(columns: &[&Column], items: &[Value]) -> Vec<Vec<Value>> {
    items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| cell_json(field(item, c.path), c.kind))
                .collect()
        })
        .collect()
}

/// Every item of a list route. A plain array is the answer without
/// pagination; if the API pages anyway (`{"items", "page_count", ...}`),
/// the remaining pages are fetched too. None when the route is 404.
pub fn fetch_all(api: &Api, path: &str) -> Result<Option<Vec<Value>>, Failure> {
    let Some(first) = api.get_json_opt(path)? else {
        return Ok(None);
    };
    match first {
        Value::Array(items) => Ok(Some(items)),
        Value::Object(mut envelope) => {
            let page_count = envelope
                .get("page_count")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let page_size = envelope
                .get("page_size")
                .and_then(Value::as_u64)
                .unwrap_or(500);
            let mut items = match envelope.remove("items") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(Failure::data(format!(
                        "{path}: the management API answered neither a list nor a page of items"
                    )));
                }
            };
            let sep = if path.contains('?') { '&' } else { '?' };
            for page in 2..=page_count {
                let next =
                    api.get_json(&format!("{path}{sep}page={page}&page_size={page_size}"))?;
                if let Some(Value::Array(more)) = next.get("items") {
                    items.extend(more.iter().cloned());
                }
            }
            Ok(Some(items))
        }
        _ => Err(Failure::data(format!(
            "{path}: the management API did not answer a list"
        ))),
    }
}

/// Run one list command.
pub fn run(
    ctx: &mut Ctx,
    spec: &'static Spec,
    asked: &[String],
    path: &str,
    banners: &[String],
    missing: Missing,
) -> Result<(), Failure> {
    let columns = resolve(spec, asked)?;
    for b in banners {
        ctx.out.banner(b)?;
    }
    let items = match fetch_all(&ctx.api, path)? {
        Some(items) => items,
        None if missing == Missing::Empty => Vec::new(),
        None => {
            return Err(Failure::data(format!(
                "Virtual host '{}' does not exist",
                ctx.vhost
            )));
        }
    };
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    if ctx.out.json() {
        ctx.out.list(&names, &[], &json_rows(&columns, &items))?;
    } else {
        ctx.out.list(&names, &text_rows(&columns, &items), &[])?;
    }
    Ok(())
}

/// The API path of a vhost-scoped list.
pub fn in_vhost(resource: &str, vhost: &str) -> String {
    format!("/api/{resource}/{}", seg(vhost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_checked_and_split_on_commas() {
        let cols = resolve(&QUEUES, &["name,messages".into(), "consumers".into()]).unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c.name).collect();
        assert_eq!(names, ["name", "messages", "consumers"]);
        let defaults = resolve(&QUEUES, &[]).unwrap();
        assert_eq!(
            defaults.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["name", "messages"]
        );
        let err = resolve(&QUEUES, &["name".into(), "nosuchcol".into()]).unwrap_err();
        assert_eq!(err.code(), 64);
        assert_eq!(
            err.to_string(),
            "Error (argument validation): Info key(s) nosuchcol are not supported"
        );
    }

    #[test]
    fn every_default_column_exists() {
        for spec in [
            &QUEUES,
            &EXCHANGES,
            &BINDINGS,
            &CONNECTIONS,
            &CONSUMERS,
            &USERS,
            &VHOSTS,
            &PERMISSIONS,
            &POLICIES,
        ] {
            assert!(resolve(spec, &[]).is_ok());
        }
    }

    #[test]
    fn queue_rows_from_api_objects() {
        // Shaped like RabbitMQ 3.10.8's GET /api/queues/%2F.
        let items = vec![
            json!({"name": "q1", "messages": 10, "durable": true, "arguments": {"x-max-length": 10},
                   "policy": null, "consumers": 0, "type": "classic"}),
            // Just declared: RabbitMQ's stats have not caught up yet.
            json!({"name": "q2", "durable": false, "arguments": {}}),
        ];
        let cols = resolve(
            &QUEUES,
            &[
                "name".into(),
                "messages".into(),
                "durable".into(),
                "arguments".into(),
                "policy".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            text_rows(&cols, &items),
            vec![
                vec!["q1", "10", "true", r#"[{"x-max-length",10}]"#, ""],
                vec!["q2", "0", "false", "[]", ""],
            ]
        );
        assert_eq!(
            json_rows(&cols, &items)[0],
            vec![
                json!("q1"),
                json!(10),
                json!(true),
                json!([["x-max-length", "signedint", 10]]),
                json!("")
            ]
        );
    }

    #[test]
    fn binding_and_consumer_rows() {
        let binding = json!({"source": "", "vhost": "/", "destination": "q", "destination_type": "queue",
                             "routing_key": "q", "arguments": {}, "properties_key": "q"});
        let cols = resolve(&BINDINGS, &[]).unwrap();
        assert_eq!(
            text_rows(&cols, &[binding]),
            vec![vec!["", "exchange", "q", "queue", "q", "[]"]]
        );

        let consumer = json!({"arguments": {"x-priority": 5}, "ack_required": true, "active": true,
            "activity_status": "up", "channel_details": {"name": "127.0.0.1:1 -> 127.0.0.1:5672 (1)"},
            "consumer_tag": "ctag", "exclusive": false, "prefetch_count": 1,
            "queue": {"name": "q", "vhost": "/"}});
        let cols = resolve(&CONSUMERS, &[]).unwrap();
        assert_eq!(
            text_rows(&cols, &[consumer]),
            vec![vec![
                "q",
                "127.0.0.1:1 -> 127.0.0.1:5672 (1)",
                "ctag",
                "true",
                "1",
                "true",
                r#"[{"x-priority",5}]"#
            ]]
        );
    }

    #[test]
    fn users_vhosts_policies_rows() {
        let cols = resolve(&USERS, &[]).unwrap();
        let users = [
            json!({"name": "guest", "tags": ["administrator"]}),
            json!({"name": "x", "tags": []}),
        ];
        assert_eq!(
            text_rows(&cols, &users),
            vec![vec!["guest", "[administrator]"], vec!["x", "[]"]]
        );
        assert_eq!(
            json_rows(&cols, &users)[0],
            vec![json!("guest"), json!(["administrator"])]
        );

        let cols = resolve(
            &VHOSTS,
            &[
                "name".into(),
                "cluster_state".into(),
                "default_queue_type".into(),
                "tags".into(),
                "tracing".into(),
            ],
        )
        .unwrap();
        let vh = [
            json!({"name": "/", "cluster_state": {"rabbit@vm": "running"}, "tags": [], "tracing": false}),
        ];
        assert_eq!(
            text_rows(&cols, &vh),
            vec![vec![
                "/",
                "[{rabbit@vm, running}]",
                "undefined",
                "[]",
                "false"
            ]]
        );

        let cols = resolve(&POLICIES, &[]).unwrap();
        let p = [
            json!({"vhost": "/", "name": "p", "pattern": "^q\\.", "apply-to": "queues",
                        "definition": {"max-length": 5}, "priority": 3}),
        ];
        assert_eq!(
            text_rows(&cols, &p),
            vec![vec![
                "/",
                "p",
                "^q\\.",
                "queues",
                r#"{"max-length":5}"#,
                "3"
            ]]
        );
    }
}
