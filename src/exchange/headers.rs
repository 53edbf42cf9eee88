//! Headers exchange: routes on message header values instead of the routing
//! key, with RabbitMQ's `x-match` modes `all`, `any`, `all-with-x` and
//! `any-with-x`.
//!
//! Binding arguments whose names start with `x-` take part in matching only
//! in the `-with-x` modes. A binding argument of type void matches any value
//! as long as the header is present. Values compare as Erlang's `==` does in
//! RabbitMQ: numbers by numeric value whatever their width, strings by bytes.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::{Destination, Router};
use crate::error::{AmqpError, AmqpResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl MatchMode {
    fn from_arguments(arguments: &FieldTable) -> AmqpResult<MatchMode> {
        let value = match arguments.inner().get("x-match") {
            None => return Ok(MatchMode::All),
            Some(AMQPValue::LongString(s)) => s.as_bytes().to_vec(),
            Some(AMQPValue::ShortString(s)) => s.as_str().as_bytes().to_vec(),
            Some(other) => {
                return Err(AmqpError::precondition_failed(format!(
                    "Invalid x-match field type {} (value {}); expected longstr",
                    crate::fields::type_name(other),
                    crate::fields::value_text(other)
                )));
            }
        };
        match value.as_slice() {
            b"all" => Ok(MatchMode::All),
            b"any" => Ok(MatchMode::Any),
            b"all-with-x" => Ok(MatchMode::AllWithX),
            b"any-with-x" => Ok(MatchMode::AnyWithX),
            other => Err(AmqpError::precondition_failed(format!(
                "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn with_x(self) -> bool {
        matches!(self, MatchMode::AllWithX | MatchMode::AnyWithX)
    }

    fn all(self) -> bool {
        matches!(self, MatchMode::All | MatchMode::AllWithX)
    }
}

#[derive(Debug)]
struct Binding {
    destination: Destination,
    arguments: FieldTable,
    mode: MatchMode,
    /// The arguments that take part in matching.
    required: Vec<(String, AMQPValue)>,
}

impl Binding {
    fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let empty = FieldTable::default();
        let headers = headers.unwrap_or(&empty).inner();
        let mut hits = self
            .required
            .iter()
            .filter(|(k, v)| match headers.get(k.as_str()) {
                None => false,
                Some(_) if matches!(v, AMQPValue::Void) => true,
                Some(h) => values_equal(v, h),
            });
        if self.mode.all() {
            hits.count() == self.required.len()
        } else {
            hits.next().is_some()
        }
    }
}

#[derive(Debug, Default)]
pub struct HeadersRouter {
    bindings: Vec<Binding>,
}

impl Router for HeadersRouter {
    fn validate(&self, arguments: &FieldTable) -> AmqpResult<()> {
        MatchMode::from_arguments(arguments).map(|_| ())
    }

    fn bind(&mut self, destination: Destination, _routing_key: &str, arguments: &FieldTable) {
        let mode = MatchMode::from_arguments(arguments).unwrap_or(MatchMode::All);
        let required = arguments
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != "x-match")
            .filter(|(k, _)| mode.with_x() || !k.as_str().starts_with("x-"))
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect();
        self.bindings.push(Binding {
            destination,
            arguments: arguments.clone(),
            mode,
            required,
        });
    }

    fn unbind(&mut self, destination: &Destination, _routing_key: &str, arguments: &FieldTable) {
        if let Some(pos) = self
            .bindings
            .iter()
            .position(|b| &b.destination == destination && &b.arguments == arguments)
        {
            self.bindings.swap_remove(pos);
        }
    }

    fn route(&self, _routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        out.extend(
            self.bindings
                .iter()
                .filter(|b| b.matches(headers))
                .map(|b| b.destination.clone()),
        );
    }
}

enum Comparable<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Other(&'a AMQPValue),
}

fn comparable(v: &AMQPValue) -> Comparable<'_> {
    match v {
        AMQPValue::ShortShortInt(i) => Comparable::Int(*i as i128),
        AMQPValue::ShortShortUInt(i) => Comparable::Int(*i as i128),
        AMQPValue::ShortInt(i) => Comparable::Int(*i as i128),
        AMQPValue::ShortUInt(i) => Comparable::Int(*i as i128),
        AMQPValue::LongInt(i) => Comparable::Int(*i as i128),
        AMQPValue::LongUInt(i) => Comparable::Int(*i as i128),
        AMQPValue::LongLongInt(i) => Comparable::Int(*i as i128),
        AMQPValue::Timestamp(i) => Comparable::Int(*i as i128),
        AMQPValue::Float(f) => Comparable::Float(*f as f64),
        AMQPValue::Double(f) => Comparable::Float(*f),
        AMQPValue::LongString(s) => Comparable::Bytes(s.as_bytes()),
        AMQPValue::ShortString(s) => Comparable::Bytes(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Comparable::Bytes(b.as_slice()),
        other => Comparable::Other(other),
    }
}

fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (comparable(a), comparable(b)) {
        (Comparable::Int(x), Comparable::Int(y)) => x == y,
        (Comparable::Float(x), Comparable::Float(y)) => x == y,
        (Comparable::Int(x), Comparable::Float(y)) | (Comparable::Float(y), Comparable::Int(x)) => {
            x as f64 == y
        }
        (Comparable::Bytes(x), Comparable::Bytes(y)) => x == y,
        (Comparable::Other(x), Comparable::Other(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, ExchangeKind};
    use amq_protocol::types::LongString;
    use std::sync::Arc;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn routes(binding: &FieldTable, headers: &FieldTable) -> bool {
        let d = Destination::Exchange(Arc::new(Exchange::new(
            "d".into(),
            ExchangeKind::Fanout,
            false,
            false,
            false,
            FieldTable::default(),
        )));
        let mut r = HeadersRouter::default();
        r.bind(d, "", binding);
        let mut out = Vec::new();
        r.route("", Some(headers), &mut out);
        !out.is_empty()
    }

    #[test]
    fn all_and_any() {
        let b_all = table(&[("a", s("1")), ("b", s("2"))]);
        let b_any = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        let h_one = table(&[("a", s("1"))]);
        let h_both = table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]);
        assert!(!routes(&b_all, &h_one));
        assert!(routes(&b_all, &h_both));
        assert!(routes(&b_any, &h_one));
        assert!(!routes(&b_any, &table(&[("a", s("2"))])));
    }

    #[test]
    fn x_arguments_only_count_with_x_modes() {
        let plain = table(&[("x-match", s("all")), ("x-k", s("v"))]);
        let with_x = table(&[("x-match", s("all-with-x")), ("x-k", s("v"))]);
        let any_with_x = table(&[("x-match", s("any-with-x")), ("x-k", s("v"))]);
        let h = table(&[("x-k", s("v"))]);
        assert!(routes(&plain, &FieldTable::default()));
        assert!(routes(&with_x, &h));
        assert!(!routes(&with_x, &FieldTable::default()));
        assert!(routes(&any_with_x, &h));
    }

    #[test]
    fn void_matches_presence_and_numbers_compare_by_value() {
        let b = table(&[("k", AMQPValue::Void)]);
        assert!(routes(&b, &table(&[("k", s("anything"))])));
        assert!(!routes(&b, &FieldTable::default()));
        let n = table(&[("n", AMQPValue::LongInt(1))]);
        assert!(routes(&n, &table(&[("n", AMQPValue::LongLongInt(1))])));
        assert!(!routes(&n, &table(&[("n", s("1"))])));
    }

    #[test]
    fn bad_x_match_is_rejected() {
        let r = HeadersRouter::default();
        let e = r.validate(&table(&[("x-match", s("some"))])).unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::PreconditionFailed);
    }
}
