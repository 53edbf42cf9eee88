//! What federation writes on messages and bindings, and the
//! `x-federation-upstream` exchange type that reads it.
//!
//! A federation link marks every message it carries with an
//! `x-received-from` entry (the upstream it came from) and every binding it
//! propagates with an `x-bound-from` entry; `max-hops` and the names in
//! those lists stop messages and bindings from going round a cycle. The
//! upstream end of a link is an internal exchange of type
//! `x-federation-upstream`: a fanout that refuses what has already been
//! through the downstream it feeds, or through too many brokers. RabbitMQ's
//! `rabbit_federation_upstream_exchange`, same arguments and checks, so
//! either broker can be at either end.

use amq_protocol::types::{AMQPValue, FieldTable};

/// The message header listing the brokers a message came through.
pub const RECEIVED_FROM: &str = "x-received-from";
/// The binding argument listing the brokers a binding came through.
pub const BOUND_FROM: &str = "x-bound-from";
pub const MAX_HOPS_ARG: &str = "x-max-hops";
/// The downstream's cluster name, for cycle detection.
pub const DOWNSTREAM_NAME_ARG: &str = "x-downstream-name";
pub const DOWNSTREAM_VHOST_ARG: &str = "x-downstream-vhost";

/// The test an `x-federation-upstream` exchange applies to each message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HopFilter {
    pub max_hops: i64,
    pub downstream_name: Option<String>,
    pub downstream_vhost: Option<String>,
}

impl HopFilter {
    /// From the exchange's arguments; `x-max-hops` must be an integer
    /// (RabbitMQ's refusal text).
    pub fn of_arguments(arguments: &FieldTable) -> Result<HopFilter, String> {
        let max_hops = match arguments.inner().get(MAX_HOPS_ARG) {
            Some(v) => crate::fields::int_value(v)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    format!(
                        "{MAX_HOPS_ARG} must be of type long, got {}",
                        crate::fields::type_name(v)
                    )
                })?,
            None => return Err(format!("Key \"{MAX_HOPS_ARG}\" not found in arguments")),
        };
        Ok(HopFilter {
            max_hops,
            downstream_name: text_of(arguments.inner().get(DOWNSTREAM_NAME_ARG)),
            downstream_vhost: text_of(arguments.inner().get(DOWNSTREAM_VHOST_ARG)),
        })
    }

    pub fn should_forward(&self, headers: Option<&FieldTable>) -> bool {
        should_forward(
            headers,
            self.max_hops,
            self.downstream_name.as_deref(),
            self.downstream_vhost.as_deref(),
        )
    }
}

/// Text of a string field.
pub fn text_of(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Whether a message with `headers` may go on to the downstream named
/// `name` (vhost `vhost`): it has been through fewer than `max_hops`
/// brokers and not through that downstream. Unknown names never match.
pub fn should_forward(
    headers: Option<&FieldTable>,
    max_hops: i64,
    name: Option<&str>,
    vhost: Option<&str>,
) -> bool {
    match headers.and_then(|h| h.inner().get(RECEIVED_FROM)) {
        Some(AMQPValue::FieldArray(hops)) => {
            (hops.as_slice().len() as i64) < max_hops && !already_seen(hops.as_slice(), name, vhost)
        }
        _ => true,
    }
}

/// Whether `path` (an `x-received-from` or `x-bound-from` list) has an
/// entry for cluster `name` and `vhost`.
pub fn already_seen(path: &[AMQPValue], name: Option<&str>, vhost: Option<&str>) -> bool {
    let (Some(name), Some(vhost)) = (name, vhost) else {
        return false;
    };
    path.iter().any(|entry| match entry {
        AMQPValue::FieldTable(t) => {
            text_of(t.inner().get("cluster-name")).as_deref() == Some(name)
                && text_of(t.inner().get("vhost")).as_deref() == Some(vhost)
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldArray, LongString};

    fn hop(cluster: &str, vhost: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert(
            "cluster-name".into(),
            AMQPValue::LongString(LongString::from(cluster)),
        );
        t.insert(
            "vhost".into(),
            AMQPValue::LongString(LongString::from(vhost)),
        );
        AMQPValue::FieldTable(t)
    }

    fn headers(path: Vec<AMQPValue>) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(
            RECEIVED_FROM.into(),
            AMQPValue::FieldArray(FieldArray::from(path)),
        );
        h
    }

    #[test]
    fn messages_stop_at_max_hops_and_at_the_downstream_they_came_through() {
        let f = HopFilter {
            max_hops: 2,
            downstream_name: Some("a".into()),
            downstream_vhost: Some("/".into()),
        };
        assert!(f.should_forward(None));
        assert!(f.should_forward(Some(&headers(vec![hop("b", "/")]))));
        assert!(!f.should_forward(Some(&headers(vec![hop("a", "/")]))));
        assert!(f.should_forward(Some(&headers(vec![hop("a", "other")]))));
        assert!(!f.should_forward(Some(&headers(vec![hop("b", "/"), hop("c", "/")]))));
    }

    #[test]
    fn max_hops_is_required_and_an_integer() {
        let mut args = FieldTable::default();
        assert!(HopFilter::of_arguments(&args).is_err());
        args.insert(MAX_HOPS_ARG.into(), AMQPValue::LongString("x".into()));
        assert!(HopFilter::of_arguments(&args).is_err());
        args.insert(MAX_HOPS_ARG.into(), AMQPValue::LongLongInt(3));
        assert_eq!(HopFilter::of_arguments(&args).unwrap().max_hops, 3);
    }
}
