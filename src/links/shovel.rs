//! A dynamic shovel: consume from a queue (or an exchange, through a queue
//! of its own) on one broker and publish to another, as RabbitMQ's shovel
//! plugin does over AMQP 0-9-1. It reconnects after `reconnect-delay`
//! whenever either side goes away, and deletes itself after
//! `src-delete-after` messages.

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::{ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tokio_util::sync::CancellationToken;

use super::client::{self, Linked};
use super::forward::{Ended, Forwarding, Gate, Outgoing, Rewritten, Sink, consume, pump};
use super::marks;
use crate::broker::Broker;
use crate::broker::audit::Actor;
use crate::broker::link_specs::{AckMode, DeleteAfter, ShovelSource, ShovelSpec};
use crate::broker::link_status::LinkStatus;

/// Run a shovel until it is cancelled or deletes itself.
pub async fn run(
    broker: Arc<Broker>,
    spec: ShovelSpec,
    status: Arc<LinkStatus>,
    cancel: CancellationToken,
) {
    let crate::broker::link_status::LinkKey::Shovel { vhost, name } = status.key.clone() else {
        return;
    };
    let mut next_uri = (0, 0);
    loop {
        match run_once(&broker, &spec, &status, &cancel, &mut next_uri).await {
            Ok(Ended::Limit) => {
                tracing::info!(
                    vhost,
                    shovel = name,
                    "shovel is stopping (it was configured to autodelete and transfer is completed)"
                );
                let actor = Actor {
                    user: "rmq-shovel".into(),
                    ..Actor::internal()
                };
                if let Err(e) = broker.clear_parameter("shovel", &vhost, &name, &actor) {
                    tracing::warn!(vhost, shovel = name, "cannot delete the shovel: {e}");
                }
                return;
            }
            Ok(Ended::Stopped) => return,
            // As RabbitMQ: a shovel that cannot connect is still starting.
            Err(Failure::Connecting(reason)) => {
                tracing::warn!(vhost, shovel = name, "shovel cannot connect: {reason}");
                status.set_state("starting", Some(reason));
            }
            Err(Failure::Linked(reason)) => {
                tracing::warn!(vhost, shovel = name, "shovel failed: {reason}");
                super::set_state(&broker, &status, "terminated", Some(reason));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(spec.reconnect_delay) => {}
            _ = cancel.cancelled() => return,
        }
        status
            .reconnects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        super::set_state(&broker, &status, "starting", None);
    }
}

/// Why a shovel stopped moving messages.
enum Failure {
    /// It could not connect to one side.
    Connecting(String),
    /// A side failed or went away after it connected.
    Linked(String),
}

async fn run_once(
    broker: &Arc<Broker>,
    spec: &ShovelSpec,
    status: &LinkStatus,
    cancel: &CancellationToken,
    next_uri: &mut (usize, usize),
) -> Result<Ended, Failure> {
    let crate::broker::link_status::LinkKey::Shovel { vhost, name } = &status.key else {
        return Err(Failure::Linked("not a shovel".into()));
    };
    let connection_name = format!("Shovel {name}");
    let src = client::connect(&spec.src_uris, next_uri.0, &connection_name)
        .await
        .map_err(|e| {
            next_uri.0 += 1;
            Failure::Connecting(format!("source connection failed: {e}"))
        })?;
    let dest = match client::connect(&spec.dest_uris, next_uri.1, &connection_name).await {
        Ok(d) => d,
        Err(e) => {
            next_uri.1 += 1;
            close(&src.connection).await;
            return Err(Failure::Connecting(format!(
                "destination connection failed: {e}"
            )));
        }
    };
    status.set_uris(src.shown_uri.clone(), dest.shown_uri.clone());
    let forwarded = forward(broker, vhost, name, spec, status, cancel, &src, &dest).await;
    if forwarded.is_err() {
        // The next attempt starts with the other URIs, if there are any.
        next_uri.0 = src.index + 1;
        next_uri.1 = dest.index + 1;
    }
    close(&src.connection).await;
    close(&dest.connection).await;
    forwarded.map_err(Failure::Linked)
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    broker: &Arc<Broker>,
    vhost: &str,
    name: &str,
    spec: &ShovelSpec,
    status: &LinkStatus,
    cancel: &CancellationToken,
    src: &Linked,
    dest: &Linked,
) -> Result<Ended, String> {
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: lapin::Error| format!("{what}: {e}")
    };
    if let Some(queue) = &spec.dest_queue {
        ensure_queue(
            &dest.connection,
            queue,
            &spec.dest_queue_arguments,
            spec.dest_predeclared,
        )
        .await
        .map_err(|e| format!("destination queue '{queue}': {e}"))?;
    }
    let out = dest
        .connection
        .create_channel()
        .await
        .map_err(failed("opening a destination channel"))?;
    if spec.ack_mode == AckMode::OnConfirm {
        out.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed("confirm.select at the destination"))?;
    }
    let ch = src
        .connection
        .create_channel()
        .await
        .map_err(failed("opening a source channel"))?;
    let queue = match &spec.source {
        ShovelSource::Queue {
            name,
            predeclared,
            arguments,
        } => {
            ensure_queue(&src.connection, name, arguments, *predeclared)
                .await
                .map_err(|e| format!("source queue '{name}': {e}"))?;
            name.clone()
        }
        ShovelSource::Exchange { name, key } => {
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(failed("declaring the source's queue"))?;
            ch.queue_bind(
                q.name().clone(),
                name.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("binding to source exchange '{name}': {e}"))?;
            q.name().to_string()
        }
    };
    let limit = match spec.delete_after {
        DeleteAfter::Never => None,
        DeleteAfter::Count(n) => Some(n),
        DeleteAfter::QueueLength => {
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(failed("counting the source queue"))?;
            Some(u64::from(q.message_count()))
        }
    };
    if limit == Some(0) {
        return Ok(Ended::Limit);
    }
    let consumer = consume(
        &ch,
        &queue,
        "",
        FieldTable::default(),
        spec.ack_mode,
        spec.prefetch_count,
    )
    .await
    .map_err(|e| format!("at the source: {e}"))?;
    super::set_state(broker, status, "running", None);
    let fields = forward_mark(broker, vhost, name, spec, src, dest);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mark = marks::text_table(&fields);
    let sink = Sink::Remote(out);
    pump(
        consumer,
        Forwarding {
            sink: &sink,
            ack_mode: spec.ack_mode,
            status,
            limit,
            cancel,
        },
        || Gate::Go,
        |d| Rewritten::Forward(Box::new(rewrite(spec, &mark, d))),
    )
    .await
}

/// The `x-shovelled` entry: who moved the message, from where to where.
fn forward_mark(
    broker: &Broker,
    vhost: &str,
    name: &str,
    spec: &ShovelSpec,
    src: &Linked,
    dest: &Linked,
) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("shovelled-by", broker.cluster_name()),
        ("shovel-type", "dynamic".to_string()),
        ("shovel-name", name.to_string()),
        ("shovel-vhost", vhost.to_string()),
        ("src-uri", src.shown_uri.clone()),
        ("dest-uri", dest.shown_uri.clone()),
    ];
    match &spec.source {
        ShovelSource::Queue { name, .. } => fields.push(("src-queue", name.clone())),
        ShovelSource::Exchange { name, key } => {
            fields.push(("src-exchange", name.clone()));
            fields.push(("src-exchange-key", key.clone()));
        }
    }
    if let Some(x) = &spec.dest_exchange {
        fields.push(("dest-exchange", x.clone()));
    }
    if let Some(k) = &spec.dest_exchange_key {
        fields.push(("dest-exchange-key", k.clone()));
    }
    if let Some(q) = &spec.dest_queue {
        fields.push(("dest-queue", q.clone()));
    }
    fields
}

/// Where a delivery goes and with what properties.
fn rewrite(spec: &ShovelSpec, mark: &FieldTable, d: &Delivery) -> Outgoing {
    let (exchange, routing_key) = match (&spec.dest_queue, &spec.dest_exchange) {
        (Some(q), _) => (String::new(), q.clone()),
        (None, Some(x)) => (
            x.clone(),
            spec.dest_exchange_key
                .clone()
                .unwrap_or_else(|| d.routing_key.to_string()),
        ),
        (None, None) => (
            d.exchange.to_string(),
            spec.dest_exchange_key
                .clone()
                .unwrap_or_else(|| d.routing_key.to_string()),
        ),
    };
    let mut properties: BasicProperties = d.properties.clone();
    if spec.add_forward_headers {
        properties = marks::prepend_entry(properties, "x-shovelled", mark.clone());
    }
    if spec.add_timestamp_header {
        properties = marks::with_shovelled_timestamp(properties);
    }
    Outgoing {
        exchange,
        routing_key,
        properties,
        body: d.data.clone(),
    }
}

/// Declare `queue` (durable, with `arguments`) unless it exists; with
/// `predeclared`, only check that it does. On channels of their own: a
/// failed passive declare closes its channel.
pub async fn ensure_queue(
    connection: &Connection,
    queue: &str,
    arguments: &serde_json::Map<String, serde_json::Value>,
    predeclared: bool,
) -> Result<(), String> {
    let check = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let passive = check
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match passive {
        Ok(_) => {
            let _ = check.close(200, "OK".into()).await;
            Ok(())
        }
        Err(e) if predeclared => Err(e.to_string()),
        Err(_) => {
            let arguments =
                crate::fields::json::json_to_table(&serde_json::Value::Object(arguments.clone()))
                    .map_err(|e| format!("bad queue arguments: {e}"))?;
            let declare = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            declare
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    arguments,
                )
                .await
                .map_err(|e| e.to_string())?;
            let _ = declare.close(200, "OK".into()).await;
            Ok(())
        }
    }
}

/// Close a link's connection, not waiting long for a broker that went away.
pub async fn close(connection: &Connection) {
    let closing = connection.close(200, "link stopped".into());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), closing).await;
}
