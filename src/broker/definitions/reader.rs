//! Reading one object of a definitions document: each field of the type
//! RabbitMQ writes, or a fault that says where (`queues[3].durable`) and
//! what was found instead.

use amq_protocol::types::FieldTable;
use serde_json::{Map, Value};

use super::DefinitionsError;
use crate::fields::json::json_to_table;

type Result<T> = std::result::Result<T, DefinitionsError>;

/// The fields of one object in the document.
pub(super) struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    pub at: String,
    /// The vhost of a per-vhost import, which every `vhost` field means.
    pub scope: Option<&'a str>,
}

pub(super) fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

impl<'a> Fields<'a> {
    pub(super) fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Err(DefinitionsError::invalid(self.field(key), "missing")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(DefinitionsError::invalid(
                self.field(key),
                format!("must be a string, got {}", describe(v)),
            )),
        }
    }

    pub(super) fn string_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(_) => self.string(key),
        }
    }

    /// An AMQP short string: a queue, exchange or routing key.
    pub(super) fn short(&self, key: &str, default: Option<&str>) -> Result<String> {
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

    pub(super) fn name(&self, key: &str) -> Result<String> {
        let s = self.string(key)?;
        if s.is_empty() {
            return Err(DefinitionsError::invalid(
                self.field(key),
                "must not be empty",
            ));
        }
        Ok(s)
    }

    pub(super) fn vhost(&self) -> Result<String> {
        match self.scope {
            Some(v) => Ok(v.to_string()),
            None => self.name("vhost"),
        }
    }

    pub(super) fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(DefinitionsError::invalid(
                self.field(key),
                format!("must be true or false, got {}", describe(v)),
            )),
        }
    }

    pub(super) fn table(&self, key: &str) -> Result<FieldTable> {
        json_to_table(self.get(key).unwrap_or(&Value::Null))
            .map_err(|e| DefinitionsError::invalid(self.field(key), e.to_string()))
    }

    /// A policy's definition: an object, or the list of `[key, value]`
    /// pairs `rabbitmqctl export_definitions` writes for operator
    /// policies.
    pub(super) fn definition(&self) -> Result<Map<String, Value>> {
        let key = "definition";
        let wrong = |v: &Value| {
            DefinitionsError::invalid(
                self.field(key),
                format!("must be an object, got {}", describe(v)),
            )
        };
        match self.get(key) {
            None => Err(DefinitionsError::invalid(self.field(key), "missing")),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(list @ Value::Array(pairs)) => pairs
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), v]) => Ok((k.clone(), v.clone())),
                    _ => Err(wrong(list)),
                })
                .collect(),
            Some(v) => Err(wrong(v)),
        }
    }

    /// Tags: a list of strings, or one comma-separated string (older
    /// exports, and the HTTP API).
    pub(super) fn tags(&self, key: &str) -> Result<Vec<String>> {
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
pub(super) fn section<'a>(
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
