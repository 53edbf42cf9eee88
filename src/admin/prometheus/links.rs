//! Shovels and federation links: how many are in each state, as
//! RabbitMQ 4.x's `rabbitmq_shovel_prometheus` and
//! `rabbitmq_federation_prometheus` count them, and per link the messages
//! moved and the reconnections (Warren's).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use metrics::Label;

use super::exposition::{Exposition, Family, Kind};
use crate::broker::Broker;
use crate::broker::link_status::LinkKey;

const SHOVELS: Family = Family {
    name: "shovel_dynamic",
    kind: Kind::Gauge,
    help: "Number of dynamic shovels",
};
const FEDERATION: Family = Family {
    name: "federation_links",
    kind: Kind::Gauge,
    help: "Number of federation links",
};
const FORWARDED: Family = Family {
    name: "link_messages_forwarded_total",
    kind: Kind::Counter,
    help: "Messages a shovel or federation link moved",
};
const RECONNECTS: Family = Family {
    name: "link_reconnects_total",
    kind: Kind::Counter,
    help: "Times a shovel or federation link connected again after a failure",
};

pub fn write(broker: &Broker, out: &mut Exposition, prefix: &str) {
    let links = broker.links.all();
    if links.is_empty() {
        return;
    }
    let mut shovels: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut federation: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut forwarded = Vec::new();
    let mut reconnects = Vec::new();
    for link in &links {
        let state = link.state().state;
        let labels = match &link.key {
            LinkKey::Shovel { vhost, name } => {
                *shovels.entry(state).or_default() += 1;
                vec![
                    Label::new("type", "shovel"),
                    Label::new("vhost", vhost.clone()),
                    Label::new("name", name.clone()),
                ]
            }
            LinkKey::Exchange {
                vhost,
                exchange,
                upstream,
            } => {
                *federation.entry(state).or_default() += 1;
                vec![
                    Label::new("type", "exchange"),
                    Label::new("vhost", vhost.clone()),
                    Label::new("name", exchange.clone()),
                    Label::new("upstream", upstream.clone()),
                ]
            }
            LinkKey::Queue {
                vhost,
                queue,
                upstream,
            } => {
                *federation.entry(state).or_default() += 1;
                vec![
                    Label::new("type", "queue"),
                    Label::new("vhost", vhost.clone()),
                    Label::new("name", queue.clone()),
                    Label::new("upstream", upstream.clone()),
                ]
            }
        };
        forwarded.push((
            labels.clone(),
            link.forwarded.load(Ordering::Relaxed) as f64,
        ));
        reconnects.push((labels, link.reconnects.load(Ordering::Relaxed) as f64));
    }
    let by_state = |counts: BTreeMap<&'static str, usize>| -> Vec<(Vec<Label>, f64)> {
        counts
            .into_iter()
            .map(|(s, n)| (vec![Label::new("status", s)], n as f64))
            .collect()
    };
    if !shovels.is_empty() {
        out.family(prefix, &SHOVELS, &by_state(shovels));
    }
    if !federation.is_empty() {
        out.family(prefix, &FEDERATION, &by_state(federation));
    }
    out.family(prefix, &FORWARDED, &forwarded);
    out.family(prefix, &RECONNECTS, &reconnects);
}
