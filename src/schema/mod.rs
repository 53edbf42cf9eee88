//! The schema registry: subjects with numbered versions of JSON Schema or
//! Avro schemas, shaped like Confluent Schema Registry's (ids global to the
//! broker, versions per subject, a compatibility level per subject), and
//! the check of a message body against the schema a queue or exchange is
//! bound to.
//!
//! A subject is kept as a runtime parameter of component `schema-subject`
//! (its value lists the versions), so it is stored, exported and imported
//! with the other definitions; this module holds the compiled form and
//! knows nothing of the store or the broker.

mod compat;
mod compiled;
mod gate;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Value, json};

pub use compat::Level;
pub use compiled::{Compiled, SchemaType};
pub use gate::Gate;

/// The runtime-parameter component subjects are kept as.
pub const COMPONENT: &str = "schema-subject";

/// One version of a subject.
#[derive(Clone, Debug)]
pub struct Version {
    pub version: u32,
    /// Global to the broker: the `x-schema-id` producers name it by.
    pub id: u32,
    pub kind: SchemaType,
    pub text: String,
    pub compiled: Arc<Compiled>,
}

/// A subject: its versions, oldest first, and its compatibility level
/// (BACKWARD when not set).
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub level: Option<Level>,
    pub versions: Vec<Version>,
}

impl Subject {
    /// A stored subject (a `schema-subject` parameter's value); every
    /// schema is compiled, so a bad one is refused here.
    pub fn parse(value: &Value) -> Result<Subject, String> {
        let Value::Object(map) = value else {
            return Err("a schema subject must be an object".into());
        };
        let level = match map.get("compatibility") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(Level::parse(s).ok_or_else(|| format!("unknown compatibility '{s}'"))?)
            }
            Some(v) => return Err(format!("compatibility must be a string, got {v}")),
        };
        let mut versions = Vec::new();
        for v in map
            .get("versions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let number = |key: &str| {
                v.get(key)
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("a version needs a numeric '{key}'"))
            };
            let kind =
                SchemaType::parse(v.get("schemaType").and_then(Value::as_str).unwrap_or(""))?;
            let text = v
                .get("schema")
                .and_then(Value::as_str)
                .ok_or("a version needs its 'schema' text")?
                .to_string();
            let compiled = Arc::new(Compiled::new(kind, &text)?);
            versions.push(Version {
                version: number("version")?,
                id: number("id")?,
                kind,
                text,
                compiled,
            });
        }
        Ok(Subject { level, versions })
    }

    pub fn to_value(&self) -> Value {
        let mut o = serde_json::Map::new();
        if let Some(level) = self.level {
            o.insert("compatibility".into(), json!(level.as_str()));
        }
        let versions: Vec<Value> = self
            .versions
            .iter()
            .map(|v| {
                json!({"version": v.version, "id": v.id, "schemaType": v.kind.as_str(), "schema": v.text})
            })
            .collect();
        o.insert("versions".into(), Value::Array(versions));
        Value::Object(o)
    }

    pub fn level(&self) -> Level {
        self.level.unwrap_or_default()
    }

    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn version(&self, n: u32) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == n)
    }
}

/// Why a schema was not registered.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// Not a schema of its type (HTTP 422).
    Invalid(String),
    /// It breaks the subject's compatibility level (HTTP 409).
    Incompatible(String),
}

/// What registering a schema comes to.
#[derive(Debug)]
pub struct Registration {
    pub id: u32,
    pub version: u32,
    /// The subject's new value to store; `None` when the schema was
    /// already its latest version (registering is idempotent).
    pub value: Option<Value>,
}

/// Where a queue or exchange points: a subject, and a version if pinned
/// (`x-schema-version`), else the latest or the one `x-schema-id` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub subject: String,
    pub version: Option<u32>,
}

/// What a queue or exchange enforces: the schema its messages must match,
/// and where refused ones go (with an `x-schema-error` header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub binding: Binding,
    pub invalid_exchange: Option<String>,
}

impl Rule {
    /// From queue or exchange arguments: `x-schema-subject`,
    /// `x-schema-version`, `x-schema-invalid-exchange`.
    pub fn from_arguments(args: &amq_protocol::types::FieldTable) -> Result<Option<Rule>, String> {
        use amq_protocol::types::AMQPValue;
        let text = |key: &str| match args.inner().get(key) {
            None => Ok(None),
            Some(AMQPValue::LongString(s)) => {
                Ok(Some(String::from_utf8_lossy(s.as_bytes()).into_owned()))
            }
            Some(AMQPValue::ShortString(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(format!("{key} must be a string")),
        };
        let Some(subject) = text("x-schema-subject")? else {
            return Ok(None);
        };
        let version = match args.inner().get("x-schema-version") {
            None => None,
            Some(v) => Some(
                crate::fields::int_value(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .ok_or("x-schema-version must be a version number (1 or more)")?,
            ),
        };
        Ok(Some(Rule {
            binding: Binding { subject, version },
            invalid_exchange: text("x-schema-invalid-exchange")?,
        }))
    }

    /// From a policy's definition: `schema-subject`, `schema-version`,
    /// `schema-invalid-exchange`.
    pub fn from_policy(def: &serde_json::Map<String, Value>) -> Result<Option<Rule>, String> {
        let Some(subject) = def.get("schema-subject") else {
            return Ok(None);
        };
        let subject = subject
            .as_str()
            .ok_or("schema-subject must be a string")?
            .to_string();
        let version = match def.get("schema-version") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .ok_or("schema-version must be a version number (1 or more)")?,
            ),
        };
        let invalid_exchange = match def.get("schema-invalid-exchange") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or("schema-invalid-exchange must be a string")?
                    .to_string(),
            ),
        };
        Ok(Some(Rule {
            binding: Binding { subject, version },
            invalid_exchange,
        }))
    }
}

/// Every subject, by (vhost, name).
#[derive(Debug, Default)]
pub struct Registry {
    subjects: RwLock<BTreeMap<(String, String), Arc<Subject>>>,
}

impl Registry {
    /// Take a subject's stored value (set or restored).
    pub fn load(&self, vhost: &str, name: &str, value: &Value) -> Result<(), String> {
        let subject = Subject::parse(value)?;
        self.subjects
            .write()
            .insert((vhost.to_string(), name.to_string()), Arc::new(subject));
        Ok(())
    }

    pub fn remove(&self, vhost: &str, name: &str) {
        self.subjects
            .write()
            .remove(&(vhost.to_string(), name.to_string()));
    }

    pub fn subject(&self, vhost: &str, name: &str) -> Option<Arc<Subject>> {
        self.subjects
            .read()
            .get(&(vhost.to_string(), name.to_string()))
            .cloned()
    }

    /// Every subject, in `vhost` or all, by vhost then name.
    pub fn subjects(&self, vhost: Option<&str>) -> Vec<(String, String, Arc<Subject>)> {
        self.subjects
            .read()
            .iter()
            .filter(|((v, _), _)| vhost.is_none_or(|want| want == v))
            .map(|((v, n), s)| (v.clone(), n.clone(), s.clone()))
            .collect()
    }

    /// The version with global id `id`, and its vhost and subject.
    pub fn by_id(&self, id: u32) -> Option<(String, String, Version)> {
        self.subjects.read().iter().find_map(|((v, n), s)| {
            s.versions
                .iter()
                .find(|x| x.id == id)
                .map(|x| (v.clone(), n.clone(), x.clone()))
        })
    }

    fn next_id(&self) -> u32 {
        let subjects = self.subjects.read();
        let max = subjects
            .values()
            .flat_map(|s| s.versions.iter().map(|v| v.id))
            .max();
        max.map_or(1, |m| m + 1)
    }

    /// Check `text` as the next version of a subject (new or not) and give
    /// the subject's value with it added. The same schema as an existing
    /// version gives that version back.
    pub fn plan_register(
        &self,
        vhost: &str,
        name: &str,
        kind: SchemaType,
        text: &str,
    ) -> Result<Registration, RegisterError> {
        let compiled = Compiled::new(kind, text).map_err(RegisterError::Invalid)?;
        let mut subject = self
            .subject(vhost, name)
            .map(|s| s.as_ref().clone())
            .unwrap_or_default();
        if let Some(same) = subject
            .versions
            .iter()
            .find(|v| v.kind == kind && same_schema(&v.text, text))
        {
            return Ok(Registration {
                id: same.id,
                version: same.version,
                value: None,
            });
        }
        let previous: Vec<(u32, &Compiled)> = subject
            .versions
            .iter()
            .map(|v| (v.version, v.compiled.as_ref()))
            .collect();
        compat::check(subject.level(), &compiled, &previous).map_err(|e| {
            RegisterError::Incompatible(format!(
                "Schema being registered is incompatible with an earlier schema for subject \
                 \"{name}\" ({}): {e}",
                subject.level().as_str()
            ))
        })?;
        let id = self.next_id();
        let version = subject.latest().map_or(1, |v| v.version + 1);
        subject.versions.push(Version {
            version,
            id,
            kind,
            text: text.to_string(),
            compiled: Arc::new(compiled),
        });
        Ok(Registration {
            id,
            version,
            value: Some(subject.to_value()),
        })
    }

    /// The subject's value with its compatibility level set.
    pub fn with_level(&self, vhost: &str, name: &str, level: Level) -> Value {
        let mut subject = self
            .subject(vhost, name)
            .map(|s| s.as_ref().clone())
            .unwrap_or_default();
        subject.level = Some(level);
        subject.to_value()
    }

    /// Check a message against what `binding` names in `vhost`: the
    /// pinned version, else the one `schema_id` names (which must belong
    /// to the subject), else the latest. A JSON subject reads the body as
    /// JSON unless `content_type` says it is something else; an Avro one
    /// needs the version named (pinned or `x-schema-id`). The error is
    /// the reason, for `x-schema-error`.
    pub fn check(
        &self,
        vhost: &str,
        binding: &Binding,
        body: &[u8],
        content_type: Option<&str>,
        schema_id: Option<u32>,
    ) -> Result<(), String> {
        let Some(subject) = self.subject(vhost, &binding.subject) else {
            return Err(format!(
                "no schema subject '{}' in vhost '{vhost}'",
                binding.subject
            ));
        };
        let version = match (binding.version, schema_id) {
            (Some(n), _) => subject
                .version(n)
                .ok_or_else(|| format!("subject '{}' has no version {n}", binding.subject))?,
            (None, Some(id)) => subject
                .versions
                .iter()
                .find(|v| v.id == id)
                .ok_or_else(|| {
                    format!(
                        "schema id {id} is not a version of subject '{}'",
                        binding.subject
                    )
                })?,
            (None, None) => subject
                .latest()
                .ok_or_else(|| format!("subject '{}' has no versions", binding.subject))?,
        };
        match version.kind {
            SchemaType::Json => {
                if let Some(ct) = content_type
                    && !is_json(ct)
                {
                    return Err(format!(
                        "content type '{ct}' is not JSON, and subject '{}' is a JSON schema",
                        binding.subject
                    ));
                }
            }
            SchemaType::Avro | SchemaType::Protobuf => {
                if binding.version.is_none() && schema_id.is_none() {
                    return Err(format!(
                        "an {} message needs an x-schema-id header naming a version of subject '{}'",
                        if version.kind == SchemaType::Avro {
                            "Avro"
                        } else {
                            "Protobuf"
                        },
                        binding.subject
                    ));
                }
            }
        }
        version.compiled.check(body)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The same schema, ignoring JSON whitespace and key order (and, for
/// other texts, nothing).
fn same_schema(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;

    #[test]
    fn registering_numbers_versions_and_ids_and_is_idempotent() {
        let r = Registry::default();
        let first = r
            .plan_register("/", "orders", SchemaType::Json, V1)
            .unwrap();
        assert_eq!((first.id, first.version), (1, 1));
        r.load("/", "orders", &first.value.unwrap()).unwrap();
        let again = r
            .plan_register("/", "orders", SchemaType::Json, &V1.replace(':', ": "))
            .unwrap();
        assert_eq!(
            (again.id, again.version, again.value.is_none()),
            (1, 1, true)
        );
        let breaking = r#"{"type":"object","properties":{"id":{"type":"integer"},"n":{"type":"string"}},"required":["id","n"]}"#;
        assert!(matches!(
            r.plan_register("/", "orders", SchemaType::Json, breaking),
            Err(RegisterError::Incompatible(_))
        ));
        assert!(matches!(
            r.plan_register("/", "orders", SchemaType::Json, "{"),
            Err(RegisterError::Invalid(_))
        ));
        r.load("/", "orders", &r.with_level("/", "orders", Level::None))
            .unwrap();
        let second = r
            .plan_register("/", "orders", SchemaType::Json, breaking)
            .unwrap();
        assert_eq!((second.id, second.version), (2, 2));
        r.load("/", "orders", &second.value.unwrap()).unwrap();
        assert_eq!(r.by_id(2).unwrap().2.version, 2);
    }

    #[test]
    fn messages_are_checked_against_the_bound_version() {
        let r = Registry::default();
        let reg = r.plan_register("/", "s", SchemaType::Json, V1).unwrap();
        r.load("/", "s", &reg.value.unwrap()).unwrap();
        let b = Binding {
            subject: "s".into(),
            version: None,
        };
        assert!(
            r.check("/", &b, br#"{"id":1}"#, Some("application/json"), None)
                .is_ok()
        );
        assert!(r.check("/", &b, br#"{"id":"x"}"#, None, None).is_err());
        assert!(
            r.check("/", &b, br#"{"id":1}"#, Some("text/plain"), None)
                .is_err()
        );
        assert!(r.check("/", &b, br#"{"id":1}"#, None, Some(9)).is_err());
        let missing = Binding {
            subject: "nope".into(),
            version: None,
        };
        assert!(r.check("/", &missing, b"{}", None, None).is_err());
    }
}
