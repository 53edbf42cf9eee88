//! The broker's definitions as a RabbitMQ definitions document.
//!
//! Field names and types are RabbitMQ's (`GET /api/definitions`): users
//! with their hash and algorithm, tags as a list; vhosts as RabbitMQ 3.11+
//! writes them (description, tags and default queue type both at the top
//! and under `metadata`); vhost limits and operator policies as
//! `parameters` entries (components `vhost-limits` and `operator_policy`),
//! as RabbitMQ exports them; arguments as plain JSON (integers stay
//! numbers, strings strings, tables objects). Built-in exchanges, the
//! default exchange's implicit bindings and exclusive queues are left out.
//! Items are sorted by vhost and name, so two exports of one state are
//! equal.

use serde_json::{Map, Value, json};

use crate::broker::bindings::DestinationName;
use crate::broker::parameters::VHOST_LIMITS;
use crate::broker::vhost::is_predeclared;
use crate::broker::{Broker, RABBITMQ_VERSION, VHost};
use crate::fields::json::table_to_json;
use crate::store::PolicyRecord;

impl Broker {
    /// Export the whole broker (`vhost` `None`), or one vhost in
    /// RabbitMQ's per-vhost shape (no users, vhosts or permissions, and no
    /// `vhost` field on queues, exchanges and bindings). An unknown vhost
    /// exports empty lists.
    pub fn export_definitions(&self, vhost: Option<&str>) -> Value {
        let mut vhosts: Vec<std::sync::Arc<VHost>> = match vhost {
            Some(name) => self.vhost(name).into_iter().collect(),
            None => self.vhosts(),
        };
        vhosts.sort_by(|a, b| a.name.cmp(&b.name));
        let scoped = vhost.is_some();
        let mut parameters = Vec::new();
        let mut policies = Vec::new();
        let mut queues = Vec::new();
        let mut exchanges = Vec::new();
        let mut bindings = Vec::new();
        for v in &vhosts {
            parameters.extend(self.parameters_of(v));
            policies.extend(v.policies().iter().map(policy_json));
            queues.extend(queues_of(v, scoped));
            exchanges.extend(exchanges_of(v, scoped));
            bindings.extend(bindings_of(v, scoped));
        }
        if scoped {
            return json!({
                "rabbit_version": RABBITMQ_VERSION,
                "parameters": parameters,
                "policies": policies,
                "queues": queues,
                "exchanges": exchanges,
                "bindings": bindings,
            });
        }
        json!({
            "rabbit_version": RABBITMQ_VERSION,
            "rabbitmq_version": RABBITMQ_VERSION,
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
            "users": self.users_json(),
            "vhosts": vhosts.iter().map(|v| vhost_json(v)).collect::<Vec<_>>(),
            "permissions": self.permissions_json(),
            "topic_permissions": self.topic_permissions_json(),
            "parameters": parameters,
            "global_parameters": self
                .global_parameters()
                .into_iter()
                .map(|p| json!({"name": p.name, "value": p.value}))
                .collect::<Vec<_>>(),
            "policies": policies,
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings,
        })
    }

    fn users_json(&self) -> Vec<Value> {
        let mut users = self.users.users();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
            .into_iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "password_hash": u.password_hash,
                    "hashing_algorithm": u.hashing_algorithm.name(),
                    "tags": u.tags,
                    "limits": u.limits,
                })
            })
            .collect()
    }

    fn permissions_json(&self) -> Vec<Value> {
        let mut permissions = self.users.permissions();
        permissions.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        permissions
            .into_iter()
            .map(|(user, vhost, p)| {
                json!({
                    "user": user,
                    "vhost": vhost,
                    "configure": p.configure,
                    "write": p.write,
                    "read": p.read,
                })
            })
            .collect()
    }

    fn topic_permissions_json(&self) -> Vec<Value> {
        let mut rows = self.users.topic_permissions();
        rows.sort_by(|a, b| (&a.1, &a.0, &a.2).cmp(&(&b.1, &b.0, &b.2)));
        rows.into_iter()
            .map(|(user, vhost, exchange, write, read)| {
                json!({
                    "user": user,
                    "vhost": vhost,
                    "exchange": exchange,
                    "write": write,
                    "read": read,
                })
            })
            .collect()
    }

    /// A vhost's runtime parameters, its limits and operator policies, as
    /// RabbitMQ lists them under `parameters`.
    fn parameters_of(&self, v: &VHost) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .parameters()
            .into_iter()
            .filter(|p| p.vhost == v.name)
            .map(|p| {
                json!({
                    "value": p.value,
                    "vhost": p.vhost,
                    "component": p.component,
                    "name": p.name,
                })
            })
            .collect();
        let limits = v.limits();
        if limits != Default::default() {
            out.push(json!({
                "value": limits,
                "vhost": v.name,
                "component": VHOST_LIMITS,
                "name": "limits",
            }));
        }
        for p in v.operator_policies() {
            out.push(json!({
                "value": {
                    "pattern": p.pattern,
                    "definition": p.definition,
                    "priority": p.priority,
                    "apply-to": p.apply_to,
                },
                "vhost": p.vhost,
                "component": "operator_policy",
                "name": p.name,
            }));
        }
        out
    }
}

fn vhost_json(v: &VHost) -> Value {
    let m = v.metadata();
    let mut metadata = Map::new();
    metadata.insert("description".into(), m.description.clone().into());
    metadata.insert("tags".into(), m.tags.clone().into());
    if let Some(t) = &m.default_queue_type {
        metadata.insert("default_queue_type".into(), t.clone().into());
    }
    let mut out = Map::new();
    out.insert("name".into(), v.name.clone().into());
    for (k, value) in &metadata {
        out.insert(k.clone(), value.clone());
    }
    out.insert("metadata".into(), Value::Object(metadata));
    Value::Object(out)
}

fn policy_json(p: &PolicyRecord) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": p.definition,
        "priority": p.priority,
    })
}

/// Add the item's `vhost`, which a per-vhost export leaves out.
fn with_vhost(mut item: Map<String, Value>, v: &VHost, scoped: bool) -> Value {
    if !scoped {
        item.insert("vhost".into(), v.name.clone().into());
    }
    Value::Object(item)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn queues_of(v: &VHost, scoped: bool) -> Vec<Value> {
    let mut queues = v.queues_sorted();
    queues.retain(|q| q.config.exclusive_owner.is_none());
    queues
        .iter()
        .map(|q| {
            let c = &q.config;
            let item = object(json!({
                "name": c.name.as_str(),
                "durable": c.durable,
                "auto_delete": c.auto_delete,
                "arguments": table_to_json(&c.arguments),
            }));
            with_vhost(item, v, scoped)
        })
        .collect()
}

fn exchanges_of(v: &VHost, scoped: bool) -> Vec<Value> {
    let mut exchanges = v.exchanges();
    exchanges.retain(|e| {
        let name = e.name.as_str();
        !is_predeclared(name) && !name.starts_with("amq.") && !e.is_deleted()
    });
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    exchanges
        .iter()
        .map(|e| {
            let item = object(json!({
                "name": e.name.as_str(),
                "type": e.kind.as_str(),
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": table_to_json(&e.arguments),
            }));
            with_vhost(item, v, scoped)
        })
        .collect()
}

fn bindings_of(v: &VHost, scoped: bool) -> Vec<Value> {
    let exclusive = |name: &str| {
        v.find_queue(name)
            .is_none_or(|q| q.config.exclusive_owner.is_some())
    };
    let mut bindings = v.bindings();
    bindings.retain(|b| match &b.destination {
        DestinationName::Queue(q) => !exclusive(q.as_str()),
        DestinationName::Exchange(_) => true,
    });
    bindings.sort_by(|a, b| {
        (&a.source, &a.destination, &a.routing_key).cmp(&(
            &b.source,
            &b.destination,
            &b.routing_key,
        ))
    });
    bindings
        .iter()
        .map(|b| {
            let (destination, kind) = match &b.destination {
                DestinationName::Queue(q) => (q.as_str(), "queue"),
                DestinationName::Exchange(e) => (e.as_str(), "exchange"),
            };
            let item = object(json!({
                "source": b.source.as_str(),
                "destination": destination,
                "destination_type": kind,
                "routing_key": b.routing_key.as_str(),
                "arguments": table_to_json(&b.arguments),
            }));
            with_vhost(item, v, scoped)
        })
        .collect()
}
