//! Links between brokers: dynamic shovels (`shovel` runtime parameters)
//! and federation (policies naming `federation-upstream` parameters), as
//! RabbitMQ's plugins, over AMQP 0-9-1 with lapin as the client.
//!
//! One task, [`supervise`], keeps the running links equal to what the
//! definitions ask for: after every change to definitions (and on restart
//! requests) it starts the links that are wanted and not running, and stops
//! those no longer wanted or whose definition changed. Each link runs in a
//! task of its own, reconnecting after failures; its status is in
//! [`Broker::links`](crate::broker::Broker) for the management API and
//! Prometheus.

mod client;
mod exchange_link;
mod federation;
mod forward;
mod marks;
mod queue_link;
mod shovel;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::broker::events::text;
use crate::broker::link_specs::ShovelSpec;
use crate::broker::link_status::{LinkKey, LinkStatus};

pub use client::redact;

/// What a running link was started from: a change restarts it.
#[derive(Clone, Debug, PartialEq)]
enum Plan {
    Shovel(ShovelSpec),
    Federation(federation::Plan),
}

struct Running {
    plan: Plan,
    cancel: CancellationToken,
}

/// The links every definition asks for.
fn wanted(broker: &Broker) -> HashMap<LinkKey, Plan> {
    let mut out = HashMap::new();
    for p in broker.parameters() {
        if p.component != "shovel" {
            continue;
        }
        match ShovelSpec::parse(&p.value) {
            Ok(spec) => {
                let key = LinkKey::Shovel {
                    vhost: p.vhost.clone(),
                    name: p.name.clone(),
                };
                out.insert(key, Plan::Shovel(spec));
            }
            Err(e) => tracing::warn!(vhost = p.vhost, shovel = p.name, "shovel not started: {e}"),
        }
    }
    for (key, plan) in federation::wanted(broker) {
        out.insert(key, Plan::Federation(plan));
    }
    out
}

/// Keep the links running as the definitions say, until `shutdown`.
pub async fn supervise(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut changes = broker.events.definitions_changed();
    let mut running: HashMap<LinkKey, Running> = HashMap::new();
    let tasks = TaskTracker::new();
    loop {
        let restarts = broker.links.take_restarts();
        let mut wanted = wanted(&broker);
        running.retain(|key, link| {
            let keep = !restarts.contains(key) && wanted.get(key) == Some(&link.plan);
            if !keep {
                // Gone from the registry first: a link that finds itself
                // gone when cancelled cleans up after itself.
                if !wanted.contains_key(key) {
                    broker.links.remove(key);
                    announce_removed(&broker, key);
                }
                link.cancel.cancel();
            }
            keep
        });
        for (key, plan) in wanted.drain() {
            if running.contains_key(&key) {
                continue;
            }
            let cancel = shutdown.child_token();
            let upstream_name = match &plan {
                Plan::Federation(p) => p
                    .spec
                    .exchange
                    .clone()
                    .or_else(|| p.spec.queue.clone())
                    .unwrap_or_else(|| p.name.clone()),
                Plan::Shovel(_) => String::new(),
            };
            // A restarted link keeps its counters.
            let status = broker.links.register(key.clone(), upstream_name);
            set_state(&broker, &status, "starting", None);
            match plan.clone() {
                Plan::Shovel(spec) => {
                    tasks.spawn(shovel::run(broker.clone(), spec, status, cancel.clone()))
                }
                Plan::Federation(p) => {
                    tasks.spawn(federation::run(broker.clone(), p, status, cancel.clone()))
                }
            };
            running.insert(key, Running { plan, cancel });
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                // Let a burst of changes (an import) settle first.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = broker.links.restart_requested.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for link in running.values() {
        link.cancel.cancel();
    }
    tasks.close();
    tasks.wait().await;
}

/// Enter `state` and tell the event exchange (`shovel.worker.status`,
/// `federation.link.status`) when it changed.
fn set_state(broker: &Broker, status: &LinkStatus, state: &'static str, reason: Option<String>) {
    if !status.set_state(state, reason.clone()) {
        return;
    }
    let key = &status.key;
    let kind = if key.is_shovel() {
        "shovel.worker.status"
    } else {
        "federation.link.status"
    };
    broker.events.emit(kind, || {
        let mut props = vec![("vhost", text(key.vhost())), ("status", text(state))];
        match key {
            LinkKey::Shovel { name, .. } => props.push(("name", text(name))),
            LinkKey::Exchange {
                exchange, upstream, ..
            } => {
                props.push(("exchange", text(exchange)));
                props.push(("upstream", text(upstream)));
            }
            LinkKey::Queue {
                queue, upstream, ..
            } => {
                props.push(("queue", text(queue)));
                props.push(("upstream", text(upstream)));
            }
        }
        if let Some(reason) = &reason {
            props.push(("reason", text(reason)));
        }
        props
    });
}

fn announce_removed(broker: &Broker, key: &LinkKey) {
    match key {
        LinkKey::Shovel { vhost, name } => broker.events.emit("shovel.worker.removed", || {
            vec![("vhost", text(vhost)), ("name", text(name))]
        }),
        LinkKey::Exchange {
            vhost,
            exchange,
            upstream,
        } => broker.events.emit("federation.link.removed", || {
            vec![
                ("upstream", text(upstream)),
                ("vhost", text(vhost)),
                ("type", text("exchange")),
                ("exchange", text(exchange)),
            ]
        }),
        LinkKey::Queue {
            vhost,
            queue,
            upstream,
        } => broker.events.emit("federation.link.removed", || {
            vec![
                ("upstream", text(upstream)),
                ("vhost", text(vhost)),
                ("type", text("queue")),
                ("queue", text(queue)),
            ]
        }),
    }
}
