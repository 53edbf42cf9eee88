//! A definitions document's shape: each section an array of objects, each
//! field of the type RabbitMQ writes, read into a [`Plan`] whose items
//! remember where they came from (`queues[3]`).
//!
//! Only the document is looked at here, never the broker: whether a user
//! exists, a pattern compiles or a queue's arguments make sense is
//! `check`'s business. Unknown top-level keys and unknown fields are
//! ignored, as RabbitMQ ignores them; a per-vhost document's `vhost`
//! fields are replaced by the vhost it is imported into.

use amq_protocol::types::FieldTable;
use serde_json::{Map, Value};

use super::DefinitionsError;
use crate::broker::access::Password;
use crate::broker::auth::{HashingAlgorithm, is_well_formed};
use crate::broker::limits::{UserLimits, VhostLimits};
use crate::broker::parameters::{VHOST_LIMITS, vhost_limits};
use crate::broker::policies::erlang_term;
use crate::broker::vhosts::VhostMetadata;
use crate::fields::json::json_to_table;
use crate::store::{
    GlobalParameterRecord, ParameterRecord, PermissionRecord, PolicyRecord, TopicPermissionRecord,
};

type Result<T> = std::result::Result<T, DefinitionsError>;

/// One item of the document and where it is.
#[derive(Clone, Debug)]
pub(super) struct At<T> {
    pub at: String,
    pub item: T,
}

#[derive(Clone, Debug)]
pub(super) struct VhostPlan {
    pub name: String,
    /// `None` when the entry carries no metadata at all: an existing
    /// vhost's metadata is then left alone.
    pub metadata: Option<VhostMetadata>,
}

#[derive(Clone, Debug)]
pub(super) struct UserPlan {
    pub name: String,
    pub password: Password,
    pub tags: Vec<String>,
    /// `None` when the entry has no `limits`: existing limits are kept.
    pub limits: Option<UserLimits>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct ExchangePlan {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct QueuePlan {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct BindingPlan {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_is_queue: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// Everything a document asks for, in its own order within each section.
#[derive(Clone, Debug, Default)]
pub(super) struct Plan {
    pub vhosts: Vec<At<VhostPlan>>,
    pub users: Vec<At<UserPlan>>,
    pub permissions: Vec<At<PermissionRecord>>,
    pub topic_permissions: Vec<At<TopicPermissionRecord>>,
    pub vhost_limits: Vec<At<(String, VhostLimits)>>,
    pub parameters: Vec<At<ParameterRecord>>,
    pub global_parameters: Vec<At<GlobalParameterRecord>>,
    pub policies: Vec<At<PolicyRecord>>,
    pub operator_policies: Vec<At<PolicyRecord>>,
    pub exchanges: Vec<At<ExchangePlan>>,
    pub queues: Vec<At<QueuePlan>>,
    pub bindings: Vec<At<BindingPlan>>,
}

/// The fields of one object in the document.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    at: String,
    /// The vhost of a per-vhost import, which every `vhost` field means.
    scope: Option<&'a str>,
}

fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

impl<'a> Fields<'a> {
    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Err(DefinitionsError::invalid(self.field(key), "missing")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(DefinitionsError::invalid(
                self.field(key),
                format!("must be a string, got {}", describe(v)),
            )),
        }
    }

    fn string_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(_) => self.string(key),
        }
    }

    /// An AMQP short string: a queue, exchange or routing key.
    fn short(&self, key: &str, default: Option<&str>) -> Result<String> {
        let s = match default {
            Some(d) => self.string_or(key, d)?,
            None => self.string(key)?,
        };
        if s.len() > 255 {
            return Err(DefinitionsError::invalid(
                self.field(key),
                "longer than 255 bytes",
            ));
        }
        Ok(s)
    }

    fn name(&self, key: &str) -> Result<String> {
        let s = self.string(key)?;
        if s.is_empty() {
            return Err(DefinitionsError::invalid(
                self.field(key),
                "must not be empty",
            ));
        }
        Ok(s)
    }

    fn vhost(&self) -> Result<String> {
        match self.scope {
            Some(v) => Ok(v.to_string()),
            None => self.name("vhost"),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(DefinitionsError::invalid(
                self.field(key),
                format!("must be true or false, got {}", describe(v)),
            )),
        }
    }

    fn table(&self, key: &str) -> Result<FieldTable> {
        json_to_table(self.get(key).unwrap_or(&Value::Null))
            .map_err(|e| DefinitionsError::invalid(self.field(key), e.to_string()))
    }

    fn object(&self, key: &str) -> Result<Map<String, Value>> {
        match self.get(key) {
            None => Err(DefinitionsError::invalid(self.field(key), "missing")),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(v) => Err(DefinitionsError::invalid(
                self.field(key),
                format!("must be an object, got {}", describe(v)),
            )),
        }
    }

    /// Tags: a list of strings, or one comma-separated string (older
    /// exports, and the HTTP API).
    fn tags(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| {
                    t.as_str().map(str::to_string).ok_or_else(|| {
                        DefinitionsError::invalid(
                            self.field(key),
                            format!("tags must be strings, got {}", describe(t)),
                        )
                    })
                })
                .collect(),
            Some(v) => Err(DefinitionsError::invalid(
                self.field(key),
                format!("must be a list of strings, got {}", describe(v)),
            )),
        }
    }
}

/// The objects of one section (absent or `null`: none).
fn section<'a>(
    doc: &'a Map<String, Value>,
    key: &'static str,
    scope: Option<&'a str>,
) -> Result<Vec<Fields<'a>>> {
    let items = match doc.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(DefinitionsError::invalid(
                key,
                format!("must be a list, got {}", describe(v)),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}]");
            match item {
                Value::Object(map) => Ok(Fields { map, at, scope }),
                v => Err(DefinitionsError::invalid(
                    at,
                    format!("must be an object, got {}", describe(v)),
                )),
            }
        })
        .collect()
}

fn at<T>(f: &Fields<'_>, item: T) -> At<T> {
    At {
        at: f.at.clone(),
        item,
    }
}

/// Read a document: the whole broker's (`scope` `None`) or one vhost's.
pub(super) fn parse(doc: &Value, scope: Option<&str>) -> Result<Plan> {
    let Value::Object(doc) = doc else {
        return Err(DefinitionsError::invalid(
            "definitions",
            "must be a JSON object",
        ));
    };
    let mut plan = Plan::default();
    if scope.is_none() {
        let md5_default = predates_algorithms(doc.get("rabbit_version"));
        for f in section(doc, "vhosts", None)? {
            plan.vhosts.push(at(&f, vhost(&f)?));
        }
        for f in section(doc, "users", None)? {
            plan.users.push(at(&f, user(&f, md5_default)?));
        }
        for f in section(doc, "permissions", None)? {
            let p = PermissionRecord {
                user: f.name("user")?,
                vhost: f.vhost()?,
                configure: f.string("configure")?,
                write: f.string("write")?,
                read: f.string("read")?,
            };
            plan.permissions.push(at(&f, p));
        }
        for f in section(doc, "topic_permissions", None)? {
            let t = TopicPermissionRecord {
                user: f.name("user")?,
                vhost: f.vhost()?,
                exchange: f.short("exchange", None)?,
                write: f.string("write")?,
                read: f.string("read")?,
            };
            plan.topic_permissions.push(at(&f, t));
        }
        for f in section(doc, "global_parameters", None)? {
            let value = f.get("value").cloned().unwrap_or(Value::Null);
            let p = GlobalParameterRecord {
                name: f.name("name")?,
                value,
            };
            plan.global_parameters.push(at(&f, p));
        }
    }
    for f in section(doc, "parameters", scope)? {
        parameter(&f, &mut plan)?;
    }
    for f in section(doc, "policies", scope)? {
        let p = policy(&f, &f.vhost()?, f.map)?;
        plan.policies.push(at(&f, p));
    }
    for f in section(doc, "exchanges", scope)? {
        let e = ExchangePlan {
            vhost: f.vhost()?,
            name: f.short("name", None)?,
            kind: f.string("type")?,
            durable: f.boolean("durable", true)?,
            auto_delete: f.boolean("auto_delete", false)?,
            internal: f.boolean("internal", false)?,
            arguments: f.table("arguments")?,
        };
        plan.exchanges.push(at(&f, e));
    }
    for f in section(doc, "queues", scope)? {
        let q = QueuePlan {
            vhost: f.vhost()?,
            name: f.short("name", None)?,
            durable: f.boolean("durable", true)?,
            auto_delete: f.boolean("auto_delete", false)?,
            arguments: f.table("arguments")?,
        };
        if q.name.is_empty() {
            return Err(DefinitionsError::invalid(
                f.field("name"),
                "must not be empty",
            ));
        }
        plan.queues.push(at(&f, q));
    }
    for f in section(doc, "bindings", scope)? {
        let destination_is_queue = match f.string("destination_type")?.as_str() {
            "queue" => true,
            "exchange" => false,
            other => {
                return Err(DefinitionsError::invalid(
                    f.field("destination_type"),
                    format!("'{other}' is neither 'queue' nor 'exchange'"),
                ));
            }
        };
        let b = BindingPlan {
            vhost: f.vhost()?,
            source: f.short("source", None)?,
            destination: f.short("destination", None)?,
            destination_is_queue,
            routing_key: f.short("routing_key", Some(""))?,
            arguments: f.table("arguments")?,
        };
        plan.bindings.push(at(&f, b));
    }
    Ok(plan)
}

/// Exports before RabbitMQ 3.6 carry no `hashing_algorithm`, and their
/// hashes are MD5; later ones without it mean the default, SHA-256.
fn predates_algorithms(version: Option<&Value>) -> bool {
    let Some(v) = version.and_then(Value::as_str) else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (3, 6),
        _ => false,
    }
}

fn vhost(f: &Fields<'_>) -> Result<VhostPlan> {
    let name = f.name("name")?;
    // The fields at the top (3.11+ exports and the HTTP API) win over the
    // `metadata` object (`rabbitmqctl export_definitions`).
    let meta = match f.get("metadata") {
        None => None,
        Some(Value::Object(m)) => Some(Fields {
            map: m,
            at: f.field("metadata"),
            scope: None,
        }),
        Some(v) => {
            return Err(DefinitionsError::invalid(
                f.field("metadata"),
                format!("must be an object, got {}", describe(v)),
            ));
        }
    };
    let keys = ["description", "tags", "default_queue_type"];
    let has = |fs: &Fields<'_>| keys.iter().any(|k| fs.get(k).is_some());
    if !has(f) && meta.as_ref().is_none_or(|m| !has(m)) {
        return Ok(VhostPlan {
            name,
            metadata: None,
        });
    }
    let pick = |key: &str| -> &Fields<'_> {
        match &meta {
            Some(m) if f.get(key).is_none() && m.get(key).is_some() => m,
            _ => f,
        }
    };
    let metadata = VhostMetadata {
        description: pick("description").string_or("description", "")?,
        tags: pick("tags").tags("tags")?,
        default_queue_type: match pick("default_queue_type").get("default_queue_type") {
            // RabbitMQ 3.10 reports an unset type as "undefined".
            Some(Value::String(s)) if s == "undefined" => None,
            Some(_) => Some(pick("default_queue_type").string("default_queue_type")?),
            None => None,
        },
    };
    metadata
        .validate()
        .map_err(|e| DefinitionsError::invalid(f.field("default_queue_type"), e))?;
    Ok(VhostPlan {
        name,
        metadata: Some(metadata),
    })
}

fn user(f: &Fields<'_>, md5_default: bool) -> Result<UserPlan> {
    let name = f.name("name")?;
    let password = match (f.get("password"), f.get("password_hash")) {
        (Some(_), Some(_)) => {
            return Err(DefinitionsError::invalid(
                f.at.clone(),
                "both password and password_hash are provided",
            ));
        }
        (Some(_), None) => match f.string("password")? {
            p if p.is_empty() => Password::None,
            p => Password::Clear(p),
        },
        (None, Some(_)) => {
            let hash = f.string("password_hash")?;
            let algorithm = match f.get("hashing_algorithm") {
                None if md5_default => HashingAlgorithm::Md5,
                None => HashingAlgorithm::Sha256,
                Some(_) => {
                    let name = f.string("hashing_algorithm")?;
                    HashingAlgorithm::parse(&name).ok_or_else(|| {
                        DefinitionsError::invalid(
                            f.field("hashing_algorithm"),
                            format!(
                                "unknown hashing algorithm '{name}' \
                                 (rabbit_password_hashing_sha256, _sha512 or _md5)"
                            ),
                        )
                    })?
                }
            };
            if !is_well_formed(algorithm, &hash) {
                return Err(DefinitionsError::invalid(
                    f.field("password_hash"),
                    format!(
                        "not a {} hash (base64 of a 4-byte salt and the digest)",
                        algorithm.name()
                    ),
                ));
            }
            Password::Hash { hash, algorithm }
        }
        (None, None) => Password::None,
    };
    let limits = match f.get("limits") {
        None => None,
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if !matches!(k.as_str(), "max-connections" | "max-channels") {
                    return Err(DefinitionsError::invalid(
                        f.field("limits"),
                        format!("unrecognised user limit '{k}' (max-connections, max-channels)"),
                    ));
                }
                if v.as_i64().is_none() {
                    return Err(DefinitionsError::invalid(
                        format!("{}.{k}", f.field("limits")),
                        format!("must be an integer, got {}", describe(v)),
                    ));
                }
            }
            Some(
                serde_json::from_value(Value::Object(m.clone()))
                    .map_err(|e| DefinitionsError::invalid(f.field("limits"), e.to_string()))?,
            )
        }
        // `rabbitmqctl export_definitions` writes no limits as `[]`.
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(v) => {
            return Err(DefinitionsError::invalid(
                f.field("limits"),
                format!("must be an object, got {}", describe(v)),
            ));
        }
    };
    Ok(UserPlan {
        name,
        password,
        tags: f.tags("tags")?,
        limits,
    })
}

/// A policy's fields, from a `policies` entry or an `operator_policy`
/// parameter's value. Whether its definition is valid is `check`'s call.
fn policy(f: &Fields<'_>, vhost: &str, fields: &Map<String, Value>) -> Result<PolicyRecord> {
    let v = Fields {
        map: fields,
        at: f.at.clone(),
        scope: f.scope,
    };
    let priority = match v.get("priority") {
        None => 0,
        Some(p) => p.as_i64().ok_or_else(|| {
            DefinitionsError::invalid(
                v.field("priority"),
                format!(
                    "priority should be a number, actually was {}",
                    erlang_term(p)
                ),
            )
        })?,
    };
    Ok(PolicyRecord {
        vhost: vhost.to_string(),
        name: f.name("name")?,
        pattern: v.string("pattern")?,
        apply_to: v.string_or("apply-to", "all")?,
        priority,
        definition: v.object("definition")?,
    })
}

/// A `parameters` entry: a runtime parameter, or (as RabbitMQ exports
/// them) a vhost's limits or an operator policy.
fn parameter(f: &Fields<'_>, plan: &mut Plan) -> Result<()> {
    let component = f.name("component")?;
    let vhost = f.vhost()?;
    let name = f.name("name")?;
    let value = f.get("value").cloned().unwrap_or(Value::Null);
    match component.as_str() {
        VHOST_LIMITS => {
            let limits = vhost_limits(&name, &value)
                .map_err(|e| DefinitionsError::invalid(f.field("value"), e.to_string()))?;
            plan.vhost_limits.push(at(f, (vhost, limits)));
        }
        "operator_policy" | "policy" => {
            let Value::Object(fields) = &value else {
                return Err(DefinitionsError::invalid(
                    f.field("value"),
                    format!("must be an object, got {}", describe(&value)),
                ));
            };
            let inner = Fields {
                map: f.map,
                at: f.field("value"),
                scope: f.scope,
            };
            let p = policy(&inner, &vhost, fields)?;
            let item = At {
                at: f.field("value"),
                item: p,
            };
            if component == "policy" {
                plan.policies.push(item);
            } else {
                plan.operator_policies.push(item);
            }
        }
        _ => plan.parameters.push(at(
            f,
            ParameterRecord {
                component,
                vhost,
                name,
                value,
            },
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(doc: Value) -> String {
        parse(&doc, None).unwrap_err().to_string()
    }

    #[test]
    fn faults_are_located() {
        assert_eq!(error(json!([])), "definitions: must be a JSON object");
        assert_eq!(
            error(json!({"queues": {}})),
            "queues: must be a list, got {}"
        );
        assert_eq!(
            error(json!({"queues": [{"name": "a", "vhost": "/"}, {"name": 3, "vhost": "/"}]})),
            "queues[1].name: must be a string, got 3"
        );
        assert_eq!(
            error(json!({"queues": [{"name": "a", "vhost": "/", "durable": "yes"}]})),
            "queues[0].durable: must be true or false, got \"yes\""
        );
        assert_eq!(
            error(
                json!({"bindings": [{"source": "a", "vhost": "/", "destination": "b",
                "destination_type": "stream"}]})
            ),
            "bindings[0].destination_type: 'stream' is neither 'queue' nor 'exchange'"
        );
        assert_eq!(
            error(json!({"users": [{"name": "u", "password_hash": "short"}]})),
            "users[0].password_hash: not a rabbit_password_hashing_sha256 hash \
             (base64 of a 4-byte salt and the digest)"
        );
        assert_eq!(
            error(json!({"users": [{"name": "u", "password": "p", "password_hash": ""}]})),
            "users[0]: both password and password_hash are provided"
        );
        assert_eq!(
            error(
                json!({"policies": [{"vhost": "/", "name": "p", "pattern": ".*",
                "priority": "x", "definition": {}}]})
            ),
            "policies[0].priority: priority should be a number, actually was <<\"x\">>"
        );
        assert_eq!(
            error(
                json!({"exchanges": [{"vhost": "/", "name": "x".repeat(256), "type": "direct"}]})
            ),
            "exchanges[0].name: longer than 255 bytes"
        );
    }

    #[test]
    fn rabbitmq_shapes_read() {
        let plan = parse(
            &json!({
                "rabbit_version": "3.5.7",
                "users": [
                    {"name": "old", "password_hash": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "tags": "administrator,management"},
                    {"name": "clear", "password": "secret", "tags": ["a"], "limits": []}
                ],
                "vhosts": [
                    {"name": "bare"},
                    {"name": "meta", "limits": [], "metadata": {"description": "d", "tags": ["x"]}},
                    {"name": "top", "description": "t", "default_queue_type": "undefined"}
                ],
                "parameters": [
                    {"component": "vhost-limits", "vhost": "meta", "name": "limits", "value": {"max-queues": 3}},
                    {"component": "operator_policy", "vhost": "meta", "name": "cap",
                     "value": {"pattern": ".*", "definition": {"max-length": 1}, "priority": 1, "apply-to": "queues"}},
                    {"component": "shovel", "vhost": "meta", "name": "s", "value": {"src-uri": "amqp://"}}
                ],
                "colour": "ignored"
            }),
            None,
        )
        .unwrap();
        assert!(matches!(
            plan.users[0].item.password,
            Password::Hash {
                algorithm: HashingAlgorithm::Md5,
                ..
            }
        ));
        assert_eq!(plan.users[0].item.tags, vec!["administrator", "management"]);
        assert!(plan.users[1].item.limits.is_none());
        assert!(plan.vhosts[0].item.metadata.is_none());
        let meta = plan.vhosts[1].item.metadata.clone().unwrap();
        assert_eq!((meta.description.as_str(), meta.tags.len()), ("d", 1));
        let top = plan.vhosts[2].item.metadata.clone().unwrap();
        assert_eq!(top.default_queue_type, None);
        assert_eq!(plan.vhost_limits[0].item.1.max_queues, Some(3));
        assert_eq!(plan.operator_policies[0].item.apply_to, "queues");
        assert_eq!(plan.operator_policies[0].at, "parameters[1].value");
        assert_eq!(plan.parameters.len(), 1);
    }

    #[test]
    fn a_vhost_document_takes_its_vhost_from_the_import() {
        let plan = parse(
            &json!({
                "users": [{"name": 1}],
                "queues": [{"name": "q", "durable": true}],
                "bindings": [{"source": "x", "destination": "q", "destination_type": "queue"}]
            }),
            Some("v"),
        )
        .unwrap();
        assert!(plan.users.is_empty());
        assert_eq!(plan.queues[0].item.vhost, "v");
        assert_eq!(plan.bindings[0].item.routing_key, "");
    }
}
