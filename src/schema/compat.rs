//! Compatibility between schema versions, as Confluent Schema Registry's
//! levels define it: BACKWARD (the new schema reads what the previous one
//! wrote), FORWARD (the previous reads what the new one writes), FULL
//! (both), each against the latest version or, `_TRANSITIVE`, against all.
//!
//! Avro's reader/writer rules are apache-avro's own. JSON Schema has no
//! such rules in any crate; the ones here are a conservative subset of
//! Confluent's: a reader refuses what a writer may produce when it requires
//! a property the writer does not, gives a property a type the writer's
//! values do not have, or closes its properties (`additionalProperties:
//! false`) to one the writer has — checked recursively through object
//! properties.

use serde_json::Value;

use super::compiled::Compiled;

/// A subject's compatibility level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Level {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            "NONE" => Level::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
            Level::None => "NONE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// Whether `new` may follow `previous` (oldest first) at `level`; the
/// error is the reason, naming the version it breaks with.
pub fn check(level: Level, new: &Compiled, previous: &[(u32, &Compiled)]) -> Result<(), String> {
    let against: Vec<&(u32, &Compiled)> = match level {
        Level::None => return Ok(()),
        l if l.transitive() => previous.iter().collect(),
        _ => previous.last().into_iter().collect(),
    };
    for (version, old) in against {
        if level.backward() {
            can_read(old, new).map_err(|e| {
                format!(
                    "{} (the new schema cannot read data written with version {version})",
                    e
                )
            })?;
        }
        if level.forward() {
            can_read(new, old).map_err(|e| {
                format!(
                    "{} (version {version} cannot read data written with the new schema)",
                    e
                )
            })?;
        }
    }
    Ok(())
}

/// Whether data written with `writer` can be read with `reader`.
fn can_read(writer: &Compiled, reader: &Compiled) -> Result<(), String> {
    match (writer, reader) {
        (Compiled::Avro(w), Compiled::Avro(r)) => {
            match apache_avro::schema_compatibility::SchemaCompatibility::can_read(w, r) {
                Ok(apache_avro::schema_compatibility::Compatibility::Full) => Ok(()),
                Ok(_) => Err("the schemas are only partly compatible".into()),
                Err(e) => Err(e.to_string()),
            }
        }
        (Compiled::Json { document: w, .. }, Compiled::Json { document: r, .. }) => {
            json_can_read(w, r, "")
        }
        (Compiled::Protobuf(w), Compiled::Protobuf(r)) => protobuf_can_read(w, r),
        _ => Err("the schema type changed".into()),
    }
}

/// Protobuf: a field number both know must keep its type and its
/// repeated-ness (Confluent's wire-level rule); the message may be renamed,
/// fields added or removed.
fn protobuf_can_read(
    writer: &prost_reflect::MessageDescriptor,
    reader: &prost_reflect::MessageDescriptor,
) -> Result<(), String> {
    for r in reader.fields() {
        let Some(w) = writer.get_field(r.number()) else {
            continue;
        };
        if w.kind() != r.kind() || w.is_list() != r.is_list() || w.is_map() != r.is_map() {
            return Err(format!(
                "field {} ('{}') changed its type",
                r.number(),
                r.name()
            ));
        }
    }
    Ok(())
}

fn types(schema: &Value) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// Whether the reader's types take every writer type ("number" takes
/// "integer"; no type takes anything).
fn types_cover(writer: &Value, reader: &Value) -> bool {
    let (Some(w), Some(r)) = (types(writer), types(reader)) else {
        return types(reader).is_none();
    };
    w.iter()
        .all(|t| r.contains(t) || (*t == "integer" && r.contains(&"number")))
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn json_can_read(writer: &Value, reader: &Value, at: &str) -> Result<(), String> {
    let place = if at.is_empty() { "/" } else { at };
    if !types_cover(writer, reader) {
        return Err(format!("the type at '{place}' changed"));
    }
    let no_props = serde_json::Map::new();
    let w_props = writer
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&no_props);
    let r_props = reader
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&no_props);
    let w_required = required(writer);
    for name in required(reader) {
        if !w_required.contains(&name) {
            return Err(format!(
                "property '{at}/{name}' is required by the reader but not by the writer"
            ));
        }
    }
    if reader.get("additionalProperties") == Some(&Value::Bool(false)) {
        for name in w_props.keys() {
            if !r_props.contains_key(name) {
                return Err(format!(
                    "property '{at}/{name}' is written but the reader allows no such property"
                ));
            }
        }
    }
    for (name, r_schema) in r_props {
        if let Some(w_schema) = w_props.get(name) {
            json_can_read(w_schema, r_schema, &format!("{at}/{name}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::compiled::SchemaType;

    fn json(text: &str) -> Compiled {
        Compiled::new(SchemaType::Json, text).unwrap()
    }

    #[test]
    fn a_new_required_property_breaks_backward_but_not_forward() {
        let v1 = json(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#);
        let v2 = json(
            r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"required":["b"]}"#,
        );
        assert!(check(Level::Backward, &v2, &[(1, &v1)]).is_err());
        assert!(check(Level::Forward, &v2, &[(1, &v1)]).is_ok());
        assert!(check(Level::None, &v2, &[(1, &v1)]).is_ok());
        let retyped = json(r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#);
        let e = check(Level::Backward, &retyped, &[(1, &v1)]).unwrap_err();
        assert!(e.contains("/a") && e.contains("version 1"), "{e}");
    }

    #[test]
    fn transitive_levels_look_at_every_version() {
        let v1 = json(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#);
        let v2 = json(r#"{"type":"object"}"#);
        let v3 = json(r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#);
        assert!(check(Level::Backward, &v3, &[(1, &v1), (2, &v2)]).is_ok());
        assert!(check(Level::BackwardTransitive, &v3, &[(1, &v1), (2, &v2)]).is_err());
    }

    #[test]
    fn a_protobuf_field_number_keeps_its_type() {
        let proto = |t: &str| Compiled::new(SchemaType::Protobuf, t).unwrap();
        let v1 = proto("syntax = \"proto3\"; message M { string a = 1; }");
        let added = proto("syntax = \"proto3\"; message M { string a = 1; int64 b = 2; }");
        let retyped = proto("syntax = \"proto3\"; message M { int64 a = 1; }");
        assert!(check(Level::Full, &added, &[(1, &v1)]).is_ok());
        assert!(check(Level::Backward, &retyped, &[(1, &v1)]).is_err());
    }

    #[test]
    fn avro_rules_are_apache_avros() {
        let avro = |t: &str| Compiled::new(SchemaType::Avro, t).unwrap();
        let v1 = avro(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#);
        let with_default = avro(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#,
        );
        let without_default = avro(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#,
        );
        assert!(check(Level::Backward, &with_default, &[(1, &v1)]).is_ok());
        assert!(check(Level::Backward, &without_default, &[(1, &v1)]).is_err());
    }
}
