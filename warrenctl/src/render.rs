//! How rabbitmqctl writes values: the table formatter's cells (strings
//! bare, booleans `true`/`false`, lists `[a, b]`, AMQP tables
//! `[{"key",value}]`) and the JSON formatter's values (AMQP tables as
//! `[key, type, value]` triples), computed from the management API's JSON.
//! Pure functions: no I/O here.

use std::net::IpAddr;

use serde_json::{Map, Value};

/// How a column's value is turned into text or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Strings, numbers and booleans as they are; missing is empty.
    Plain,
    /// A counter: missing (not yet in the stats) is 0.
    Count,
    /// An AMQP field table (`arguments`, `client_properties`).
    Args,
    /// A list of tags, in the API either a list or a comma-separated string.
    Tags,
    /// The connection protocol: `AMQP 0-9-1` is `{0,9,1}`.
    Protocol,
    /// An IP address: text as is, JSON as rabbitmqctl's tuple of integers.
    Ip,
    /// `{"node": "state"}`, written `[{node, state}]`.
    ClusterState,
    /// A JSON document written as compact JSON text (policy definitions).
    JsonText,
    /// Missing is the Erlang atom `undefined`.
    OrUndefined,
    /// Always this text (the API does not carry it).
    Const(&'static str),
}

/// A table-formatter cell.
pub fn cell_text(v: Option<&Value>, kind: Kind) -> String {
    let v = v.filter(|v| !v.is_null());
    match kind {
        Kind::Const(s) => s.to_string(),
        Kind::Count => v.map_or_else(|| "0".to_string(), plain_text),
        Kind::OrUndefined => v.map_or_else(|| "undefined".to_string(), plain_text),
        Kind::Plain | Kind::Ip => v.map_or_else(String::new, plain_text),
        Kind::Args => match v {
            Some(Value::Object(m)) => table_text(m),
            Some(other) => plain_text(other),
            None => "[]".to_string(),
        },
        Kind::Tags => atom_list_text(&tags(v)),
        Kind::Protocol => match v {
            Some(Value::String(s)) => match protocol_version(s) {
                Some(parts) => format!("{{{}}}", parts.join(",")),
                None => s.clone(),
            },
            Some(other) => plain_text(other),
            None => String::new(),
        },
        Kind::ClusterState => match v {
            Some(Value::Object(m)) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(node, state)| format!("{{{node}, {}}}", plain_text(state)))
                    .collect();
                format!("[{}]", items.join(", "))
            }
            Some(other) => plain_text(other),
            None => "[]".to_string(),
        },
        Kind::JsonText => v.map_or_else(String::new, |v| v.to_string()),
    }
}

/// A JSON-formatter value.
pub fn cell_json(v: Option<&Value>, kind: Kind) -> Value {
    let v = v.filter(|v| !v.is_null());
    match kind {
        Kind::Const(s) => Value::from(s),
        Kind::Count => v.cloned().unwrap_or(Value::from(0)),
        Kind::OrUndefined => v.cloned().unwrap_or(Value::from("undefined")),
        Kind::Plain => v.cloned().unwrap_or(Value::from("")),
        Kind::Args => match v {
            Some(Value::Object(m)) => triples(m),
            Some(other) => other.clone(),
            None => Value::Array(Vec::new()),
        },
        Kind::Tags => Value::Array(tags(v).into_iter().map(Value::from).collect()),
        Kind::Protocol => match v {
            Some(Value::String(s)) => match protocol_version(s) {
                Some(parts) => Value::Array(
                    parts
                        .iter()
                        .filter_map(|p| p.parse::<u64>().ok())
                        .map(Value::from)
                        .collect(),
                ),
                None => Value::from(s.as_str()),
            },
            Some(other) => other.clone(),
            None => Value::from(""),
        },
        Kind::Ip => match v {
            Some(Value::String(s)) => match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) => Value::Array(a.octets().iter().map(|&o| o.into()).collect()),
                Ok(IpAddr::V6(a)) => Value::Array(a.segments().iter().map(|&s| s.into()).collect()),
                Err(_) => Value::from(s.as_str()),
            },
            Some(other) => other.clone(),
            None => Value::from(""),
        },
        Kind::ClusterState => v.cloned().unwrap_or(Value::Object(Map::new())),
        Kind::JsonText => Value::from(v.map_or_else(String::new, |v| v.to_string())),
    }
}

/// A scalar as rabbitmqctl prints it; lists of names as `[a, b]`.
pub fn plain_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(plain_text).collect();
            atom_list_text(&items)
        }
        Value::Object(m) => table_text(m),
    }
}

/// `[a, b]`: how rabbitmqctl prints a list of atoms such as user tags.
pub fn atom_list_text(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// `[{"key",value},...]`: how rabbitmqctl prints an AMQP field table.
pub fn table_text(m: &Map<String, Value>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{{{},{}}}", quoted(k), field_text(v)))
        .collect();
    format!("[{}]", items.join(","))
}

fn field_text(v: &Value) -> String {
    match v {
        Value::Null => "undefined".to_string(),
        Value::String(s) => quoted(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) => table_text(m),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(field_text).collect();
            format!("[{}]", items.join(","))
        }
    }
}

fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

/// An AMQP table as the JSON formatter writes it: `[[key, type, value]]`.
pub fn triples(m: &Map<String, Value>) -> Value {
    Value::Array(
        m.iter()
            .map(|(k, v)| {
                Value::Array(vec![
                    Value::from(k.as_str()),
                    Value::from(field_type(v)),
                    field_json(v),
                ])
            })
            .collect(),
    )
}

fn field_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => triples(m),
        // rabbitmqctl turns an array's (type, value) pairs into an object
        // keyed by type; copied as it is.
        Value::Array(items) => {
            let mut m = Map::new();
            for item in items {
                m.insert(field_type(item).to_string(), field_json(item));
            }
            Value::Object(m)
        }
        other => other.clone(),
    }
}

/// The AMQP field type a JSON value most likely had: the API does not say,
/// so integers are `signedint` when they fit 32 bits, as clients encode them.
fn field_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "void",
        Value::Bool(_) => "bool",
        Value::String(_) => "longstr",
        Value::Object(_) => "table",
        Value::Array(_) => "array",
        Value::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => "signedint",
            Some(_) => "long",
            None if n.is_u64() => "long",
            None => "double",
        },
    }
}

/// Tags from the API: a list (3.9+) or a comma-separated string (older).
fn tags(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().map(plain_text).collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// `AMQP 0-9-1` → ["0", "9", "1"].
fn protocol_version(s: &str) -> Option<Vec<String>> {
    let version = s.strip_prefix("AMQP ")?;
    let parts: Vec<String> = version.split('-').map(String::from).collect();
    if parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(parts)
    } else {
        None
    }
}

/// Output of a list command: rabbitmqctl's tab-separated table (a header
/// line unless `header` is false; nothing at all for no rows).
pub fn list_text(columns: &[&str], rows: &[Vec<String>], header: bool) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    if header {
        out.push_str(&columns.join("\t"));
        out.push('\n');
    }
    for row in rows {
        out.push_str(&row.join("\t"));
        out.push('\n');
    }
    out
}

/// Output of a list command with `--formatter json`: one object per line,
/// keys in column order, a leading comma from the second line on.
pub fn list_json(columns: &[&str], rows: &[Vec<Value>]) -> String {
    let mut out = String::from("[\n");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&object_text(columns, row));
        out.push('\n');
    }
    out.push_str("]\n");
    out
}

/// `{"a":1,"b":2}` with keys in the given order.
pub fn object_text(keys: &[&str], values: &[Value]) -> String {
    let fields: Vec<String> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{}:{}", quoted(k), v))
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: Value, kind: Kind) -> String {
        cell_text(Some(&v), kind)
    }

    #[test]
    fn scalars_as_rabbitmqctl_prints_them() {
        assert_eq!(text(json!("q1"), Kind::Plain), "q1");
        assert_eq!(text(json!(true), Kind::Plain), "true");
        assert_eq!(text(json!(false), Kind::Plain), "false");
        assert_eq!(text(json!(10), Kind::Count), "10");
        assert_eq!(text(json!(null), Kind::Plain), "");
        assert_eq!(cell_text(None, Kind::Plain), "");
        assert_eq!(cell_text(None, Kind::Count), "0");
        assert_eq!(text(json!(null), Kind::Count), "0");
        assert_eq!(cell_text(None, Kind::OrUndefined), "undefined");
        assert_eq!(cell_text(None, Kind::Const("exchange")), "exchange");
        assert_eq!(
            text(json!(["rabbit@a", "rabbit@b"]), Kind::Plain),
            "[rabbit@a, rabbit@b]"
        );
    }

    #[test]
    fn tags_as_atom_lists() {
        assert_eq!(
            text(json!(["administrator"]), Kind::Tags),
            "[administrator]"
        );
        assert_eq!(
            text(json!(["administrator", "monitoring"]), Kind::Tags),
            "[administrator, monitoring]"
        );
        assert_eq!(text(json!([]), Kind::Tags), "[]");
        assert_eq!(text(json!("a, b"), Kind::Tags), "[a, b]");
        assert_eq!(text(json!(""), Kind::Tags), "[]");
        assert_eq!(
            cell_json(Some(&json!("a,b")), Kind::Tags),
            json!(["a", "b"])
        );
    }

    #[test]
    fn amqp_tables_as_erlang_ish_text() {
        // Captured from rabbitmqctl 3.10.8 list_queues / list_bindings.
        assert_eq!(
            text(
                json!({"x-max-length": 10, "x-queue-mode": "lazy"}),
                Kind::Args
            ),
            r#"[{"x-max-length",10},{"x-queue-mode","lazy"}]"#
        );
        assert_eq!(
            text(json!({"k": "v", "l": [1, "a"], "n": 3}), Kind::Args),
            r#"[{"k","v"},{"l",[1,"a"]},{"n",3}]"#
        );
        assert_eq!(
            text(
                json!({"capabilities": {"basic.nack": true}, "product": "x"}),
                Kind::Args
            ),
            r#"[{"capabilities",[{"basic.nack",true}]},{"product","x"}]"#
        );
        assert_eq!(text(json!({}), Kind::Args), "[]");
        assert_eq!(cell_text(None, Kind::Args), "[]");
        assert_eq!(
            text(json!({"q": "say \"hi\""}), Kind::Args),
            r#"[{"q","say \"hi\""}]"#
        );
    }

    #[test]
    fn amqp_tables_as_json_triples() {
        assert_eq!(
            cell_json(
                Some(&json!({"x-max-length": 10, "x-queue-mode": "lazy"})),
                Kind::Args
            ),
            json!([
                ["x-max-length", "signedint", 10],
                ["x-queue-mode", "longstr", "lazy"]
            ])
        );
        assert_eq!(
            cell_json(
                Some(&json!({"big": 5_000_000_000_i64, "f": 1.5, "b": true, "t": {"a": "b"}})),
                Kind::Args
            ),
            json!([
                ["b", "bool", true],
                ["big", "long", 5_000_000_000_i64],
                ["f", "double", 1.5],
                ["t", "table", [["a", "longstr", "b"]]]
            ])
        );
        assert_eq!(
            cell_json(Some(&json!({"l": [1, "a"]})), Kind::Args),
            json!([["l", "array", {"signedint": 1, "longstr": "a"}]])
        );
        assert_eq!(cell_json(None, Kind::Args), json!([]));
    }

    #[test]
    fn connection_specific_values() {
        assert_eq!(text(json!("AMQP 0-9-1"), Kind::Protocol), "{0,9,1}");
        assert_eq!(
            cell_json(Some(&json!("AMQP 0-9-1")), Kind::Protocol),
            json!([0, 9, 1])
        );
        assert_eq!(text(json!("MQTT"), Kind::Protocol), "MQTT");
        assert_eq!(text(json!("127.0.0.1"), Kind::Ip), "127.0.0.1");
        assert_eq!(
            cell_json(Some(&json!("127.0.0.1")), Kind::Ip),
            json!([127, 0, 0, 1])
        );
        assert_eq!(
            cell_json(Some(&json!("::1")), Kind::Ip),
            json!([0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            text(json!({"rabbit@vm": "running"}), Kind::ClusterState),
            "[{rabbit@vm, running}]"
        );
        assert_eq!(
            text(json!({"max-length": 5}), Kind::JsonText),
            r#"{"max-length":5}"#
        );
        assert_eq!(
            cell_json(Some(&json!({"max-length": 5})), Kind::JsonText),
            json!(r#"{"max-length":5}"#)
        );
    }

    #[test]
    fn missing_values_in_json() {
        // rabbitmqctl's JSON writes absent values (policy, owner_pid) as "".
        assert_eq!(cell_json(None, Kind::Plain), json!(""));
        assert_eq!(cell_json(Some(&Value::Null), Kind::Plain), json!(""));
        assert_eq!(cell_json(None, Kind::Count), json!(0));
    }

    #[test]
    fn list_layout_table() {
        let rows = vec![
            vec!["q1".to_string(), "10".to_string()],
            vec!["".to_string(), "0".to_string()],
        ];
        assert_eq!(
            list_text(&["name", "messages"], &rows, true),
            "name\tmessages\nq1\t10\n\t0\n"
        );
        assert_eq!(
            list_text(&["name", "messages"], &rows, false),
            "q1\t10\n\t0\n"
        );
        // No rows, no header: rabbitmqctl prints only its banner.
        assert_eq!(list_text(&["name"], &[], true), "");
    }

    #[test]
    fn list_layout_json() {
        let rows = vec![vec![json!("a"), json!(1)], vec![json!(""), json!(0)]];
        assert_eq!(
            list_json(&["name", "messages"], &rows),
            "[\n{\"name\":\"a\",\"messages\":1}\n,{\"name\":\"\",\"messages\":0}\n]\n"
        );
        assert_eq!(list_json(&["name"], &[]), "[\n]\n");
    }
}
