//! A federated queue's link to one upstream: while the local queue has
//! consumers and little to give them, it consumes the upstream's queue of
//! the same name (or the upstream's `queue`) and moves what it gets here,
//! marked `x-received-from`. With no local consumers it stops consuming,
//! so messages stay upstream for consumers there — RabbitMQ's queue
//! federation, which moves messages to where the consumers are.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use tokio_util::sync::CancellationToken;

use super::client::Linked;
use super::federation::{self, Plan};
use super::forward::{Ended, Forwarding, Gate, Outgoing, Rewritten, Sink, consume, pump};
use super::marks;
use crate::broker::Broker;
use crate::broker::link_status::LinkStatus;
use crate::exchange::federation::RECEIVED_FROM;
use crate::fields;
use crate::queue::Queue;

/// How often an idle link looks for local consumers.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Whether the local queue wants messages: `Go` while it has consumers
/// and fewer ready messages than a prefetch's worth, `Wait` while it has
/// consumers and enough, `Stop` without consumers (a deleted queue has
/// none; the supervisor then stops the link).
fn demand(q: &Queue, plan: &Plan) -> Gate {
    let (messages, consumers) = (q.message_count(), q.consumer_count());
    if consumers == 0 {
        Gate::Stop
    } else if messages >= u32::from(plan.spec.prefetch_count.max(1)) {
        Gate::Wait
    } else {
        Gate::Go
    }
}

/// Forward while there is demand, until an error or `cancel`.
pub async fn link(
    broker: &Arc<Broker>,
    plan: &Plan,
    status: &LinkStatus,
    cancel: &CancellationToken,
    up: &Linked,
) -> Result<Ended, String> {
    let upstream_queue = plan.spec.queue.clone().unwrap_or_else(|| plan.name.clone());
    // Looked up once: each delivery asks it for demand.
    let local = broker
        .vhost(&plan.vhost)
        .and_then(|v| v.find_queue(&plan.name))
        .ok_or_else(|| format!("no queue '{}' here", plan.name))?;
    ensure_upstream_queue(broker, plan, up, &upstream_queue).await?;
    super::set_state(broker, status, "running", None);
    let mark = marks::text_table(&[("uri", &up.shown_uri), ("queue", &upstream_queue)]);
    let consumer_tag = format!("federation-link-{}", plan.upstream);
    let mut consumer_args = FieldTable::default();
    // Upstream consumers there come first; the link takes what they leave.
    consumer_args.insert("x-priority".into(), AMQPValue::LongInt(-1));
    let sink = Sink::Local {
        broker: broker.clone(),
        vhost: broker
            .vhost(&plan.vhost)
            .ok_or_else(|| format!("no vhost '{}'", plan.vhost))?,
    };
    loop {
        // Idle: nobody here to serve.
        while !matches!(demand(&local, plan), Gate::Go) {
            if up.connection.status().errored() || up.connection.status().closed() {
                return Err("the upstream connection closed".into());
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE_CHECK) => {}
                _ = cancel.cancelled() => return Ok(Ended::Stopped),
            }
        }
        // A channel per busy spell: closing it returns what was prefetched
        // but not taken to the upstream queue.
        let ch = up
            .connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        let consumer = consume(
            &ch,
            &upstream_queue,
            &consumer_tag,
            consumer_args.clone(),
            plan.spec.ack_mode,
            plan.spec.prefetch_count,
        )
        .await?;
        let ended = pump(
            consumer,
            Forwarding {
                sink: &sink,
                ack_mode: plan.spec.ack_mode,
                status,
                limit: None,
                cancel,
            },
            || demand(&local, plan),
            |d| rewrite(plan, &mark, d),
        )
        .await?;
        let _ = ch.close(200, "no local demand".into()).await;
        if cancel.is_cancelled() {
            return Ok(ended);
        }
    }
}

/// The upstream's queue: checked, and declared as the local one is if it
/// does not exist.
async fn ensure_upstream_queue(
    broker: &Broker,
    plan: &Plan,
    up: &Linked,
    name: &str,
) -> Result<(), String> {
    let check = up
        .connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let passive = check
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    if passive.is_ok() {
        let _ = check.close(200, "OK".into()).await;
        return Ok(());
    }
    let local = broker
        .vhost(&plan.vhost)
        .and_then(|v| v.find_queue(&plan.name))
        .ok_or_else(|| format!("no queue '{}' here", plan.name))?;
    let declare = up
        .connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    declare
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: local.config.durable,
                ..Default::default()
            },
            local.config.arguments.clone(),
        )
        .await
        .map_err(|e| format!("declaring upstream queue '{name}': {e}"))?;
    let _ = declare.close(200, "OK".into()).await;
    Ok(())
}

/// To the local queue through the default exchange, with where it was
/// published first and an `x-received-from` entry counting its visits to
/// this upstream queue (RabbitMQ's queue federation headers).
fn rewrite(plan: &Plan, mark: &FieldTable, d: &Delivery) -> Rewritten {
    let mut props = d.properties.clone();
    let mut headers = props.headers().clone().unwrap_or_default();
    let same = |t: &FieldTable| {
        t.inner().get("uri") == mark.inner().get("uri")
            && t.inner().get("queue") == mark.inner().get("queue")
    };
    let mut visits = 0;
    if let Some(AMQPValue::FieldArray(path)) = headers.inner().get(RECEIVED_FROM) {
        let mut rest = Vec::new();
        for entry in path.as_slice() {
            match entry {
                AMQPValue::FieldTable(t) if same(t) => {
                    visits += t
                        .inner()
                        .get("visit-count")
                        .and_then(fields::int_value)
                        .unwrap_or(0);
                }
                other => rest.push(other.clone()),
            }
        }
        headers.insert(
            RECEIVED_FROM.into(),
            AMQPValue::FieldArray(FieldArray::from(rest)),
        );
    }
    if !headers.contains_key("x-original-exchange") {
        headers.insert(
            "x-original-exchange".into(),
            marks::text(d.exchange.as_str()),
        );
        headers.insert(
            "x-original-routing-key".into(),
            marks::text(d.routing_key.as_str()),
        );
    }
    props = props.with_headers(headers);
    let mut entry = mark.clone();
    entry.insert("redelivered".into(), AMQPValue::Boolean(d.redelivered));
    entry.insert(
        "visit-count".into(),
        AMQPValue::LongLongInt((visits + 1) as i64),
    );
    props = federation::without_untrusted_user_id(&plan.spec, props);
    Rewritten::Forward(Box::new(Outgoing {
        exchange: String::new(),
        routing_key: plan.name.clone(),
        properties: marks::prepend_entry(props, RECEIVED_FROM, entry),
        body: d.data.clone(),
    }))
}
