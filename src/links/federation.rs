//! Federation links: which exchanges and queues are federated (a policy's
//! `federation-upstream` or `federation-upstream-set` key), the retry loop
//! each link runs in, and the `x-received-from` mark on what they carry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::client::{self, Linked};
use super::forward::Ended;
use super::marks;
use crate::broker::Broker;
use crate::broker::link_specs::{UpstreamSpec, parse_upstream_set};
use crate::broker::link_status::{LinkKey, LinkStatus};
use crate::exchange::federation::RECEIVED_FROM;
use crate::queue::args::QueueType;

/// One federation link to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub vhost: String,
    /// The federated exchange's or queue's name.
    pub name: String,
    pub upstream: String,
    /// The policy that federates it.
    pub policy: String,
    pub spec: UpstreamSpec,
}

/// The federation links `broker`'s policies ask for.
pub fn wanted(broker: &Broker) -> Vec<(LinkKey, Plan)> {
    let parameters = broker.parameters();
    let upstream = |vhost: &str, name: &str| {
        parameters
            .iter()
            .find(|p| p.component == "federation-upstream" && p.vhost == vhost && p.name == name)
            .map(|p| p.value.clone())
    };
    let upstreams_of = |vhost: &str, definition: &serde_json::Map<String, Value>| {
        let mut out: Vec<(String, Value)> = Vec::new();
        if let Some(Value::String(name)) = definition.get("federation-upstream") {
            out.extend(upstream(vhost, name).map(|v| (name.clone(), v)));
        } else if let Some(Value::String(set)) = definition.get("federation-upstream-set") {
            if set == "all" {
                out.extend(
                    parameters
                        .iter()
                        .filter(|p| p.component == "federation-upstream" && p.vhost == vhost)
                        .map(|p| (p.name.clone(), p.value.clone())),
                );
            } else if let Some(p) = parameters.iter().find(|p| {
                p.component == "federation-upstream-set" && p.vhost == vhost && p.name == *set
            }) {
                for (name, overrides) in parse_upstream_set(&p.value).unwrap_or_default() {
                    if let Some(Value::Object(mut base)) = upstream(vhost, &name) {
                        base.extend(overrides);
                        out.push((name, Value::Object(base)));
                    }
                }
            }
        }
        out
    };
    let mut links = Vec::new();
    for v in broker.vhosts() {
        // Most vhosts federate nothing: no need to look at every exchange
        // and queue (this runs after each change to definitions).
        let federates = v.policies().iter().any(|p| {
            p.definition.contains_key("federation-upstream")
                || p.definition.contains_key("federation-upstream-set")
        });
        if !federates {
            continue;
        }
        for x in v.exchanges() {
            if x.is_default() || x.name.as_str().starts_with("amq.") {
                continue;
            }
            let Some((policy, definition)) = v.exchange_policy_definition(x.name.as_str()) else {
                continue;
            };
            for (upstream, value) in upstreams_of(&v.name, &definition) {
                let Ok(spec) = UpstreamSpec::parse(&value) else {
                    continue;
                };
                let key = LinkKey::Exchange {
                    vhost: v.name.clone(),
                    exchange: x.name.to_string(),
                    upstream: upstream.clone(),
                };
                links.push((key, plan(&v.name, x.name.as_str(), upstream, &policy, spec)));
            }
        }
        for q in v.queues() {
            if q.config.args.queue_type == QueueType::Stream || q.config.exclusive_owner.is_some() {
                continue;
            }
            let Some((policy, definition)) =
                v.queue_policy_definition(q.name(), q.config.args.queue_type)
            else {
                continue;
            };
            for (upstream, value) in upstreams_of(&v.name, &definition) {
                let Ok(spec) = UpstreamSpec::parse(&value) else {
                    continue;
                };
                let key = LinkKey::Queue {
                    vhost: v.name.clone(),
                    queue: q.name().to_string(),
                    upstream: upstream.clone(),
                };
                links.push((key, plan(&v.name, q.name(), upstream, &policy, spec)));
            }
        }
    }
    links
}

fn plan(vhost: &str, name: &str, upstream: String, policy: &str, spec: UpstreamSpec) -> Plan {
    Plan {
        vhost: vhost.to_string(),
        name: name.to_string(),
        upstream,
        policy: policy.to_string(),
        spec,
    }
}

/// Run one link until it is cancelled: connect, set up, forward; after a
/// failure, wait `reconnect-delay` and start again.
pub async fn run(
    broker: Arc<Broker>,
    plan: Plan,
    status: Arc<LinkStatus>,
    cancel: CancellationToken,
) {
    let name = format!(
        "Federation link (upstream: {}, policy: {})",
        plan.upstream, plan.policy
    );
    let mut next_uri = 0;
    loop {
        let attempt = async {
            let up = client::connect(&plan.spec.uris, next_uri, &name).await?;
            status.set_uris(up.shown_uri.clone(), String::new());
            let linked = match status.key {
                LinkKey::Exchange { .. } => {
                    super::exchange_link::link(&broker, &plan, &status, &cancel, &up).await
                }
                _ => super::queue_link::link(&broker, &plan, &status, &cancel, &up).await,
            };
            if linked.is_err() {
                next_uri = up.index + 1;
            }
            super::shovel::close(&up.connection).await;
            linked
        };
        match attempt.await {
            Ok(Ended::Stopped) if cancel.is_cancelled() => return,
            Ok(_) => {}
            Err(reason) => {
                tracing::warn!(
                    vhost = plan.vhost,
                    upstream = plan.upstream,
                    "federation link for '{}' failed: {reason}",
                    plan.name
                );
                super::set_state(&broker, &status, "error", Some(reason));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(plan.spec.reconnect_delay) => {}
            _ = cancel.cancelled() => return,
        }
        status.reconnects.fetch_add(1, Ordering::Relaxed);
        super::set_state(&broker, &status, "starting", None);
    }
}

/// The `x-received-from` entry for messages from `up`'s exchange or
/// queue (`kind`) named `name`, without the per-message `redelivered`.
pub fn received_from(up: &Linked, kind: &str, name: &str) -> FieldTable {
    let mut t = marks::text_table(&[("uri", &up.shown_uri), (kind, name)]);
    t.insert("redelivered".into(), AMQPValue::Boolean(false));
    if let Some(cluster) = &up.cluster_name {
        t.insert("cluster-name".into(), marks::text(cluster));
    }
    t.insert("vhost".into(), marks::text(&up.vhost));
    t
}

/// A delivery's properties as a link forwards them: marked with where it
/// came from, and without `user_id` unless the upstream is trusted to
/// have checked it.
pub fn mark(spec: &UpstreamSpec, entry: &FieldTable, d: &Delivery) -> BasicProperties {
    let mut entry = entry.clone();
    entry.insert("redelivered".into(), AMQPValue::Boolean(d.redelivered));
    let props = without_untrusted_user_id(spec, d.properties.clone());
    marks::prepend_entry(props, RECEIVED_FROM, entry)
}

/// `props` without `user_id` unless the upstream is trusted to have
/// checked it (`trust-user-id`).
pub fn without_untrusted_user_id(spec: &UpstreamSpec, props: BasicProperties) -> BasicProperties {
    if spec.trust_user_id || props.user_id().is_none() {
        return props;
    }
    crate::message::without(&props, crate::message::Property::UserId)
}
