//! Field tables as JSON, the way RabbitMQ's management API and its
//! definitions files write them: plain values, no type tags.
//!
//! Going to JSON, every integer type becomes a number, strings become
//! strings (bytes that are not UTF-8 are replaced), tables objects, arrays
//! lists, timestamps numbers and void `null`. Coming back from JSON (HTTP
//! bodies, definitions files) RabbitMQ picks one AMQP type per JSON type —
//! integers `long`, other numbers `double`, strings `longstr`, booleans
//! `bool`, objects `table`, lists `array`, null `void` — and so does this
//! module, so a queue declared over HTTP carries the argument types an
//! AMQP client would have sent.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

/// A field table as a JSON object.
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(table_to_map(table))
}

/// A field table as a JSON map.
pub fn table_to_map(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_to_json(v)))
        .collect()
}

/// One field value as JSON.
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => (*i).into(),
        AMQPValue::ShortShortUInt(i) => (*i).into(),
        AMQPValue::ShortInt(i) => (*i).into(),
        AMQPValue::ShortUInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::LongUInt(i) => (*i).into(),
        AMQPValue::LongLongInt(i) => (*i).into(),
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// JSON has no NaN or infinity: those become `null`.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Why a JSON value cannot be a field table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonFieldError {
    #[error("arguments must be a JSON object")]
    NotAnObject,
    #[error("argument name '{0}' is longer than 255 bytes")]
    NameTooLong(String),
    #[error("number {0} is out of range for an AMQP field")]
    OutOfRange(String),
    #[error("arguments are nested too deeply")]
    TooDeep,
}

/// Tables nested deeper than this are refused (the AMQP reader refuses
/// the same in frames).
const MAX_DEPTH: usize = 64;

/// A JSON object as a field table (a missing or `null` value is empty).
pub fn json_to_table(v: &Value) -> Result<FieldTable, JsonFieldError> {
    match v {
        Value::Null => Ok(FieldTable::default()),
        Value::Object(m) => map_to_table(m, 0),
        _ => Err(JsonFieldError::NotAnObject),
    }
}

fn map_to_table(m: &Map<String, Value>, depth: usize) -> Result<FieldTable, JsonFieldError> {
    let mut table = FieldTable::default();
    for (k, v) in m {
        let name = ShortString::try_new(k.as_str())
            .map_err(|_| JsonFieldError::NameTooLong(k.chars().take(40).collect()))?;
        table.insert(name, json_to_value(v, depth + 1)?);
    }
    Ok(table)
}

/// One JSON value as a field value.
pub fn json_to_value(v: &Value, depth: usize) -> Result<AMQPValue, JsonFieldError> {
    if depth > MAX_DEPTH {
        return Err(JsonFieldError::TooDeep);
    }
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                AMQPValue::LongLongInt(i)
            } else if n.is_u64() {
                return Err(JsonFieldError::OutOfRange(n.to_string()));
            } else {
                AMQPValue::Double(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => {
            let values = items
                .iter()
                .map(|i| json_to_value(i, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            AMQPValue::FieldArray(FieldArray::from(values))
        }
        Value::Object(m) => AMQPValue::FieldTable(map_to_table(m, depth)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_types_map_to_rabbitmq_field_types_and_back() {
        let v = json!({
            "x-max-length": 10,
            "x-message-ttl": 1500,
            "x-dead-letter-exchange": "dlx",
            "flag": true,
            "ratio": 0.5,
            "nested": {"a": [1, "b", null]},
        });
        let t = json_to_table(&v).unwrap();
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert!(matches!(
            t.inner().get("x-dead-letter-exchange"),
            Some(AMQPValue::LongString(_))
        ));
        assert_eq!(t.inner().get("ratio"), Some(&AMQPValue::Double(0.5)));
        assert_eq!(table_to_json(&t), v);
    }

    #[test]
    fn every_integer_width_is_a_json_integer() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::ShortShortInt(-3));
        t.insert("b".into(), AMQPValue::LongUInt(7));
        t.insert("c".into(), AMQPValue::Timestamp(9));
        t.insert("d".into(), AMQPValue::Double(f64::NAN));
        assert_eq!(
            table_to_json(&t),
            json!({"a": -3, "b": 7, "c": 9, "d": null})
        );
    }

    #[test]
    fn what_cannot_be_a_table_is_refused() {
        assert_eq!(json_to_table(&json!([1])), Err(JsonFieldError::NotAnObject));
        assert!(matches!(
            json_to_table(&json!({"n": u64::MAX})),
            Err(JsonFieldError::OutOfRange(_))
        ));
        let long = "k".repeat(300);
        assert!(matches!(
            json_to_table(&json!({long: 1})),
            Err(JsonFieldError::NameTooLong(_))
        ));
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({"d": deep});
        }
        assert_eq!(json_to_table(&deep), Err(JsonFieldError::TooDeep));
        assert_eq!(json_to_table(&Value::Null), Ok(FieldTable::default()));
    }
}
