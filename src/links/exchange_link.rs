//! A federated exchange's link to one upstream, as RabbitMQ's exchange
//! federation builds it. On the upstream broker it keeps a queue
//! (`federation: X -> <this cluster>`) bound to an internal exchange of
//! type `x-federation-upstream`, and binds that exchange to the upstream's
//! exchange with every binding key bound here — so the upstream sends only
//! what someone here wants. It consumes that queue and publishes each
//! message into the local exchange, marked `x-received-from`.

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use tokio_util::sync::CancellationToken;

use super::client::Linked;
use super::federation::{self, Plan};
use super::forward::{Ended, Forwarding, Gate, Outgoing, Rewritten, Sink, consume, pump};
use crate::broker::Broker;
use crate::broker::events::text;
use crate::broker::link_status::LinkStatus;
use crate::exchange::federation::{
    BOUND_FROM, DOWNSTREAM_NAME_ARG, DOWNSTREAM_VHOST_ARG, MAX_HOPS_ARG, already_seen,
    should_forward,
};
use crate::fields;

/// The name of the queue a link keeps upstream, as RabbitMQ names it.
pub fn upstream_queue_name(
    upstream_exchange: &str,
    upstream_vhost: &str,
    vhost: &str,
    exchange: &str,
    cluster: &str,
) -> String {
    let down = if vhost != upstream_vhost {
        format!(":{vhost}:{exchange}")
    } else if exchange != upstream_exchange {
        format!(":{exchange}")
    } else {
        String::new()
    };
    format!("federation: {upstream_exchange} -> {cluster}{down}")
}

/// Set the link up on the upstream and forward until an error or `cancel`.
pub async fn link(
    broker: &Arc<Broker>,
    plan: &Plan,
    status: &LinkStatus,
    cancel: &CancellationToken,
    up: &Linked,
) -> Result<Ended, String> {
    let spec = &plan.spec;
    let local = broker.cluster_name();
    let upstream_exchange = spec.exchange.clone().unwrap_or_else(|| plan.name.clone());
    let queue = upstream_queue_name(
        &upstream_exchange,
        &up.vhost,
        &plan.vhost,
        &plan.name,
        &local,
    );
    let failed = |what: &'static str| move |e: lapin::Error| format!("{what}: {e}");
    let ch = up
        .connection
        .create_channel()
        .await
        .map_err(failed("opening a channel"))?;
    let mut args = FieldTable::default();
    if let Some(ms) = spec.expires {
        args.insert("x-expires".into(), AMQPValue::LongLongInt(ms as i64));
    }
    if let Some(ms) = spec.message_ttl {
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms as i64));
    }
    args.insert("x-internal-purpose".into(), text("federation"));
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map_err(failed("declaring the upstream queue"))?;
    ensure_upstream_exchange(broker, plan, &up.connection, &upstream_exchange).await?;
    // Alternate between two internal exchanges, as RabbitMQ does, so the
    // queue stays bound to one while the other is rebuilt.
    let (internal, old) = match exists(&up.connection, &format!("{queue} A")).await {
        true => (format!("{queue} B"), format!("{queue} A")),
        false => (format!("{queue} A"), format!("{queue} B")),
    };
    declare_internal(
        &up.connection,
        &internal,
        spec.max_hops,
        &local,
        &plan.vhost,
    )
    .await?;
    ch.queue_bind(
        queue.as_str().into(),
        internal.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(failed("binding the upstream queue"))?;
    let suffix = internal.rsplit(' ').next().unwrap_or("A").to_string();
    let mut bound = Bindings {
        upstream_exchange: upstream_exchange.clone(),
        internal: internal.clone(),
        suffix,
        upstream_name: up.cluster_name.clone(),
        upstream_vhost: up.vhost.clone(),
        max_hops: spec.max_hops,
        bound: BTreeMap::new(),
    };
    let commands = up
        .connection
        .create_channel()
        .await
        .map_err(failed("opening a command channel"))?;
    let mut changes = broker.events.definitions_changed();
    bound.sync(broker, plan, &local, &commands).await?;
    let _ = commands
        .exchange_delete(old.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let consumer = consume(
        &ch,
        &queue,
        "",
        FieldTable::default(),
        spec.ack_mode,
        spec.prefetch_count,
    )
    .await?;
    super::set_state(broker, status, "running", None);
    let sink = Sink::Local {
        broker: broker.clone(),
        vhost: broker
            .vhost(&plan.vhost)
            .ok_or_else(|| format!("no vhost '{}'", plan.vhost))?,
    };
    let mark = federation::received_from(up, "exchange", &upstream_exchange);
    let forwarding = pump(
        consumer,
        Forwarding {
            sink: &sink,
            ack_mode: spec.ack_mode,
            status,
            limit: None,
            cancel,
        },
        || Gate::Go,
        |d| rewrite(plan, &local, &mark, d),
    );
    let following = async {
        loop {
            if changes.changed().await.is_err() {
                return Ok::<(), String>(());
            }
            bound.sync(broker, plan, &local, &commands).await?;
        }
    };
    let ended = tokio::select! {
        ended = forwarding => ended,
        failed = following => failed.map(|()| Ended::Stopped),
    };
    if cancel.is_cancelled() && spec.cleanup && broker.links.get(&status.key).is_none() {
        // No longer federated: what the link made upstream goes too.
        let _ = commands
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = commands
            .exchange_delete(internal.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    ended
}

fn rewrite(plan: &Plan, local: &str, mark: &FieldTable, d: &Delivery) -> Rewritten {
    // The upstream may be a plain fanout (no federation there): check again.
    let headers = d.properties.headers().as_ref();
    if !should_forward(
        headers,
        i64::from(plan.spec.max_hops),
        Some(local),
        Some(&plan.vhost),
    ) {
        return Rewritten::Drop;
    }
    Rewritten::Forward(Box::new(Outgoing {
        exchange: plan.name.clone(),
        routing_key: d.routing_key.to_string(),
        properties: federation::mark(&plan.spec, mark, d),
        body: d.data.clone(),
    }))
}

/// The upstream's exchange: checked, and declared as the local one is if
/// it does not exist.
async fn ensure_upstream_exchange(
    broker: &Broker,
    plan: &Plan,
    connection: &Connection,
    name: &str,
) -> Result<(), String> {
    if exists(connection, name).await {
        return Ok(());
    }
    let local = broker
        .vhost(&plan.vhost)
        .and_then(|v| v.exchange(&plan.name))
        .ok_or_else(|| format!("no exchange '{}' here", plan.name))?;
    let ch = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Custom(local.kind.as_str().to_string()),
        ExchangeDeclareOptions {
            durable: local.durable,
            auto_delete: local.auto_delete,
            internal: local.internal,
            ..Default::default()
        },
        local.arguments.clone(),
    )
    .await
    .map_err(|e| format!("declaring the upstream exchange '{name}': {e}"))?;
    let _ = ch.close(200, "OK".into()).await;
    Ok(())
}

/// Whether exchange `name` exists (a passive declare, on a channel of its
/// own: a refusal closes it).
async fn exists(connection: &Connection, name: &str) -> bool {
    let Ok(ch) = connection.create_channel().await else {
        return false;
    };
    let found = ch
        .exchange_declare(
            name.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    if found {
        let _ = ch.close(200, "OK".into()).await;
    }
    found
}

/// The internal `x-federation-upstream` exchange (recreated), or a
/// fanout where the upstream does not know that type.
async fn declare_internal(
    connection: &Connection,
    name: &str,
    max_hops: u32,
    local: &str,
    vhost: &str,
) -> Result<(), String> {
    let ch = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let _ = ch
        .exchange_delete(name.into(), ExchangeDeleteOptions::default())
        .await;
    let options = ExchangeDeclareOptions {
        durable: true,
        internal: true,
        auto_delete: true,
        ..Default::default()
    };
    let mut args = FieldTable::default();
    args.insert("x-internal-purpose".into(), text("federation"));
    let plain = args.clone();
    args.insert(
        MAX_HOPS_ARG.into(),
        AMQPValue::LongLongInt(i64::from(max_hops)),
    );
    args.insert(DOWNSTREAM_NAME_ARG.into(), text(local));
    args.insert(DOWNSTREAM_VHOST_ARG.into(), text(vhost));
    let typed = ch
        .exchange_declare(
            name.into(),
            ExchangeKind::Custom("x-federation-upstream".into()),
            options,
            args,
        )
        .await;
    match typed {
        Ok(()) => Ok(()),
        Err(_) => {
            let ch = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            ch.exchange_declare(name.into(), ExchangeKind::Fanout, options, plain)
                .await
                .map_err(|e| format!("declaring the upstream's internal exchange: {e}"))
        }
    }
}

/// The bindings made upstream, kept equal to the local exchange's.
struct Bindings {
    upstream_exchange: String,
    internal: String,
    suffix: String,
    upstream_name: Option<String>,
    upstream_vhost: String,
    max_hops: u32,
    /// Bound upstream: (routing key, arguments in wire form) → arguments.
    bound: BTreeMap<(String, Vec<u8>), FieldTable>,
}

impl Bindings {
    /// Bind what is new here and unbind what is gone.
    async fn sync(
        &mut self,
        broker: &Broker,
        plan: &Plan,
        local: &str,
        commands: &Channel,
    ) -> Result<(), String> {
        let Some(v) = broker.vhost(&plan.vhost) else {
            return Ok(());
        };
        let mut wanted = BTreeMap::new();
        for b in v.bindings() {
            if b.source.as_str() != plan.name {
                continue;
            }
            if let Some(args) = self.propagated(&b.arguments, local, &plan.vhost, &plan.name) {
                let wire = fields::generate(|ctx| {
                    amq_protocol::types::generation::gen_field_table(&args)(ctx)
                });
                wanted.insert((b.routing_key.to_string(), wire), args);
            }
        }
        for ((key, wire), args) in &wanted {
            if self.bound.contains_key(&(key.clone(), wire.clone())) {
                continue;
            }
            commands
                .exchange_bind(
                    self.internal.as_str().into(),
                    self.upstream_exchange.as_str().into(),
                    ShortString::from(key.as_str()),
                    ExchangeBindOptions::default(),
                    args.clone(),
                )
                .await
                .map_err(|e| format!("binding upstream with key '{key}': {e}"))?;
            self.bound.insert((key.clone(), wire.clone()), args.clone());
        }
        let gone: Vec<((String, Vec<u8>), FieldTable)> = self
            .bound
            .iter()
            .filter(|(k, _)| !wanted.contains_key(*k))
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        for ((key, wire), args) in gone {
            commands
                .exchange_unbind(
                    self.internal.as_str().into(),
                    self.upstream_exchange.as_str().into(),
                    ShortString::from(key.as_str()),
                    ExchangeUnbindOptions::default(),
                    args,
                )
                .await
                .map_err(|e| format!("unbinding upstream key '{key}': {e}"))?;
            self.bound.remove(&(key, wire));
        }
        Ok(())
    }

    /// The arguments of the upstream binding for a local binding with
    /// `args`: `x-bound-from` gains this hop; `None` when the binding
    /// has come far enough (or from that upstream).
    fn propagated(
        &self,
        args: &FieldTable,
        local: &str,
        vhost: &str,
        exchange: &str,
    ) -> Option<FieldTable> {
        let path: Vec<AMQPValue> = match args.inner().get(BOUND_FROM) {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
            _ => Vec::new(),
        };
        let hops = match path.first() {
            None => i128::from(self.max_hops),
            Some(_)
                if already_seen(
                    &path,
                    self.upstream_name.as_deref(),
                    Some(&self.upstream_vhost),
                ) =>
            {
                0
            }
            Some(AMQPValue::FieldTable(prev)) => {
                let prev_hops = prev
                    .inner()
                    .get("hops")
                    .and_then(fields::int_value)
                    .unwrap_or(0);
                (prev_hops - 1).min(i128::from(self.max_hops))
            }
            Some(_) => 0,
        };
        if hops <= 0 {
            return None;
        }
        let mut entry = FieldTable::default();
        entry.insert("cluster-name".into(), text(local));
        entry.insert("vhost".into(), text(vhost));
        entry.insert(
            "exchange".into(),
            text(format!("{vhost}:{exchange} {}", self.suffix)),
        );
        entry.insert("hops".into(), AMQPValue::ShortInt(hops as i16));
        let mut list = vec![AMQPValue::FieldTable(entry)];
        list.extend(path);
        let mut out = args.clone();
        out.insert(
            BOUND_FROM.into(),
            AMQPValue::FieldArray(FieldArray::from(list)),
        );
        Some(out)
    }
}
