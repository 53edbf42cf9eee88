//! Declaring and deleting the exchange, queues and bindings of a run.

use amq_protocol::protocol::{AMQPClass, exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};
use anyhow::{Context, Result, bail};

use crate::cli::{ExchangeType, QueuePlan, ROUTE_HEADER, Topology};
use crate::conn::{Conn, describe, short};

/// Bindings or declarations in flight at once.
const WINDOW: usize = 1000;

pub fn queue_declare(name: &str, durable: bool, arguments: &FieldTable) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: short(name),
        passive: false,
        durable,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: arguments.clone(),
    }))
}

/// A passive queue.declare: the queue's counts, or a 404 channel close if
/// it does not exist.
pub async fn queue_counts(conn: &mut Conn, name: &str) -> Result<(u32, u32)> {
    let passive = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: short(name),
        passive: true,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }));
    match conn
        .rpc(&passive)
        .await
        .with_context(|| format!("passive declare of queue '{name}'"))?
    {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => {
            Ok((ok.message_count, ok.consumer_count))
        }
        other => bail!("expected queue.declare-ok, got {}", describe(&other)),
    }
}

pub fn queue_delete(name: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
        queue: short(name),
        if_unused: false,
        if_empty: false,
        nowait: false,
    }))
}

pub fn is_declare_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
}

pub fn is_delete_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_)))
}

fn is_bind_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_)))
}

fn bind(topo: &Topology, queue: &str, key: &str) -> AMQPClass {
    let (routing_key, arguments) = if topo.kind == ExchangeType::Headers {
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("all".into()));
        args.insert(ROUTE_HEADER.into(), AMQPValue::LongString(key.into()));
        (String::new(), args)
    } else {
        (key.to_string(), FieldTable::default())
    };
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: short(queue),
        exchange: short(&topo.exchange),
        routing_key: short(&routing_key),
        nowait: false,
        arguments,
    }))
}

fn all_queues(topo: &Topology) -> impl Iterator<Item = &QueuePlan> {
    topo.queues.iter().chain(topo.side.iter())
}

/// Declare everything; returns the number of bindings made.
pub async fn declare(conn: &mut Conn, topo: &Topology, durable: bool) -> Result<usize> {
    if topo.declare_exchange {
        conn.rpc(&AMQPClass::Exchange(exchange::AMQPMethod::Declare(
            exchange::Declare {
                exchange: short(&topo.exchange),
                kind: short(topo.kind.as_str()),
                passive: false,
                durable,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )))
        .await
        .with_context(|| format!("declaring exchange '{}'", topo.exchange))?;
    }
    conn.pipeline(
        all_queues(topo).map(|q| queue_declare(&q.name, durable, &topo.queue_args)),
        WINDOW,
        is_declare_ok,
    )
    .await
    .context("declaring queues")?;
    if topo.exchange.is_empty() {
        return Ok(0);
    }
    let binds: Vec<AMQPClass> = all_queues(topo)
        .flat_map(|q| q.bindings.iter().map(|k| bind(topo, &q.name, k)))
        .collect();
    conn.pipeline(binds, WINDOW, is_bind_ok)
        .await
        .context("binding queues")
}

/// Delete the queues, and the exchange if this run declared it.
pub async fn teardown(conn: &mut Conn, topo: &Topology) -> Result<()> {
    conn.pipeline(
        all_queues(topo).map(|q| queue_delete(&q.name)),
        WINDOW,
        is_delete_ok,
    )
    .await
    .context("deleting queues")?;
    if topo.declare_exchange {
        conn.rpc(&AMQPClass::Exchange(exchange::AMQPMethod::Delete(
            exchange::Delete {
                exchange: short(&topo.exchange),
                if_unused: false,
                nowait: false,
            },
        )))
        .await
        .with_context(|| format!("deleting exchange '{}'", topo.exchange))?;
    }
    Ok(())
}
