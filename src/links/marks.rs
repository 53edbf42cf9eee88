//! The headers links write on what they carry: `x-shovelled` and
//! `x-shovelled-timestamp` (shovels), `x-received-from` (federation), each
//! a list with the newest entry first, as RabbitMQ's plugins write them.

use std::time::{SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable};

pub use crate::broker::events::text;

/// Put `entry` first in the list header `name` of `props`.
pub fn prepend_entry(props: BasicProperties, name: &str, entry: FieldTable) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut list = vec![AMQPValue::FieldTable(entry)];
    if let Some(AMQPValue::FieldArray(old)) = headers.inner().get(name) {
        list.extend(old.as_slice().iter().cloned());
    }
    headers.insert(name.into(), AMQPValue::FieldArray(FieldArray::from(list)));
    props.with_headers(headers)
}

/// A table of string fields, in order.
pub fn text_table(fields: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in fields {
        t.insert((*k).into(), text(*v));
    }
    t
}

/// `x-shovelled-timestamp`: seconds since the epoch.
pub fn with_shovelled_timestamp(props: BasicProperties) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    headers.insert(
        "x-shovelled-timestamp".into(),
        AMQPValue::LongLongInt(now as i64),
    );
    props.with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_first() {
        let p = prepend_entry(
            BasicProperties::default(),
            "x-received-from",
            text_table(&[("uri", "a")]),
        );
        let p = prepend_entry(p, "x-received-from", text_table(&[("uri", "b")]));
        let headers = p.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(list)) = headers.inner().get("x-received-from") else {
            panic!("no list");
        };
        let first = match &list.as_slice()[0] {
            AMQPValue::FieldTable(t) => t.inner().get("uri").cloned(),
            _ => None,
        };
        assert_eq!(first, Some(text("b")));
        assert_eq!(list.as_slice().len(), 2);
    }
}
