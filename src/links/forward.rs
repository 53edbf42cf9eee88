//! Carrying messages across a link: deliveries from a source consumer are
//! rewritten, handed to a sink (another broker over a channel in confirm
//! mode, or this broker), and acknowledged at the source as the ack mode
//! says — with `on-confirm`, only once the sink has the message safe, in
//! delivery order, so a failure anywhere leaves every unconfirmed message
//! unacknowledged at the source, to be delivered again (at least once).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{Acker, BasicProperties, Channel, Consumer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::enqueue::Routed;
use crate::broker::link_specs::AckMode;
use crate::broker::link_status::LinkStatus;
use crate::broker::{Broker, VHost};
use crate::exchange::RouteHeaders;
use crate::message::{self, Message};

/// One message on its way to the sink.
#[derive(Debug)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// Resolves to whether the sink took the message (false: refused, e.g. a
/// full queue), once it is safe there.
type Pending = Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;

/// Where forwarded messages go.
pub enum Sink {
    /// Another broker, over a channel (in confirm mode for `on-confirm`).
    Remote(Channel),
    /// This broker's `vhost` (looked up once, when the link starts):
    /// published as the management API publishes.
    Local {
        broker: Arc<Broker>,
        vhost: Arc<VHost>,
    },
}

impl Sink {
    async fn send(&self, out: Outgoing) -> Result<Pending, String> {
        match self {
            Sink::Remote(channel) => {
                let confirm = channel
                    .basic_publish(
                        out.exchange.into(),
                        out.routing_key.into(),
                        BasicPublishOptions::default(),
                        &out.body,
                        out.properties,
                    )
                    .await
                    .map_err(|e| format!("publishing to the destination: {e}"))?;
                Ok(Box::pin(async move {
                    let confirmation = confirm
                        .await
                        .map_err(|e| format!("waiting for the destination's confirm: {e}"))?;
                    Ok(!confirmation.is_nack())
                }))
            }
            Sink::Local { broker, vhost } => publish_here(broker, vhost, out),
        }
    }
}

fn publish_here(broker: &Arc<Broker>, v: &VHost, out: Outgoing) -> Result<Pending, String> {
    let exchange = v
        .exchange(&out.exchange)
        .ok_or_else(|| format!("no exchange '{}' in vhost '{}'", out.exchange, v.name))?;
    let props = out.properties;
    let expiration = props.expiration().as_ref().map(|e| e.as_str().to_string());
    let message = Arc::new(Message {
        exchange: exchange.name.clone(),
        routing_key: out.routing_key.into(),
        persistent: *props.delivery_mode() == Some(2),
        priority: props.priority().unwrap_or(0),
        expiration_ms: expiration.and_then(|e| message::expiration_ms(&e).ok()),
        received_ms: crate::queue::now_ms(),
        properties: message::encode(&props),
        body: out.body.into(),
    });
    let headers = RouteHeaders::decoded(props.headers().clone());
    let outcome = broker.publish_local(v, &exchange, &message, &headers);
    if outcome.is_refused() {
        return Ok(Box::pin(async { Ok(false) }));
    }
    if outcome != Routed::Stored {
        return Ok(Box::pin(async { Ok(true) }));
    }
    let synced = broker.store.synced();
    Ok(Box::pin(async move {
        match synced.await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => Err(format!("cannot store a forwarded message: {e}")),
            Err(_) => Err("the store stopped".into()),
        }
    }))
}

/// Start consuming `queue` as a link does: with `prefetch` unless the
/// ack mode is `no-ack`, which consumes without acknowledgements.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    arguments: lapin::types::FieldTable,
    ack_mode: AckMode,
    prefetch: u16,
) -> Result<Consumer, String> {
    let no_ack = ack_mode == AckMode::NoAck;
    if !no_ack {
        channel
            .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
    }
    channel
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            lapin::options::BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            arguments,
        )
        .await
        .map_err(|e| format!("consuming queue '{queue}': {e}"))
}

/// Whether to take the next delivery.
pub enum Gate {
    Go,
    /// Not yet: look again shortly.
    Wait,
    /// Stop forwarding (the link returns).
    Stop,
}

/// How a pump ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// It took as many messages as it was asked to.
    Limit,
    /// The gate or the cancellation stopped it.
    Stopped,
}

/// What rewriting a delivery decided.
pub enum Rewritten {
    Forward(Box<Outgoing>),
    /// Acknowledge it and forward nothing (federation's hop limit).
    Drop,
}

/// How long a forwarded message may wait for the sink to take it.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many deliveries are settled with one acknowledgement.
const ACK_BATCH: usize = 256;

/// Acknowledge a delivery and every one before it on its channel.
async fn ack_through(acker: &Acker) -> Result<(), String> {
    acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(drop)
        .map_err(|e| format!("acknowledging at the source: {e}"))
}

/// What a link forwards to and how.
pub struct Forwarding<'a> {
    pub sink: &'a Sink,
    pub ack_mode: AckMode,
    /// Counts what was moved.
    pub status: &'a LinkStatus,
    /// Stop after this many deliveries.
    pub limit: Option<u64>,
    pub cancel: &'a CancellationToken,
}

/// Forward deliveries from `consumer` until an error (the link
/// reconnects), the limit, the gate says stop, or cancellation.
pub async fn pump(
    mut consumer: Consumer,
    how: Forwarding<'_>,
    gate: impl Fn() -> Gate,
    mut rewrite: impl FnMut(&Delivery) -> Rewritten,
) -> Result<Ended, String> {
    let Forwarding {
        sink,
        ack_mode,
        status,
        limit,
        cancel,
    } = how;
    // Bounded by the source's prefetch: one entry per unacked delivery.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Acker, Option<Pending>)>();
    let acking = async move {
        let mut batch = Vec::with_capacity(ACK_BATCH);
        while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
            // In delivery order: a run of messages the sink took is one
            // `multiple` acknowledgement; a refused one goes back alone.
            let mut last_taken: Option<Acker> = None;
            let mut forwarded = 0;
            for (acker, pending) in batch.drain(..) {
                let taken = match pending {
                    None => true,
                    Some(pending) => {
                        // A destination that stops answering must not hold
                        // the source's messages forever: the link restarts
                        // and they are delivered again.
                        let taken = tokio::time::timeout(CONFIRM_TIMEOUT, pending)
                            .await
                            .map_err(|_| {
                                format!(
                                    "the destination did not confirm within {} s",
                                    CONFIRM_TIMEOUT.as_secs()
                                )
                            })??;
                        forwarded += u64::from(taken);
                        taken
                    }
                };
                if taken {
                    last_taken = Some(acker);
                    continue;
                }
                if let Some(run) = last_taken.take() {
                    ack_through(&run).await?;
                }
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("returning a refused message to the source: {e}"))?;
            }
            if let Some(run) = last_taken.take() {
                ack_through(&run).await?;
            }
            status.count_forwarded(forwarded);
        }
        Ok::<(), String>(())
    };
    let taking = async move {
        let mut taken = 0u64;
        let ended = loop {
            if limit.is_some_and(|l| taken >= l) {
                break Ended::Limit;
            }
            match gate() {
                Gate::Go => {}
                Gate::Wait => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                        _ = cancel.cancelled() => break Ended::Stopped,
                    }
                }
                Gate::Stop => break Ended::Stopped,
            }
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = cancel.cancelled() => break Ended::Stopped,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(format!("consuming from the source: {e}")),
                None => return Err("the source cancelled the link's consumer".into()),
            };
            taken += 1;
            let out = match rewrite(&delivery) {
                Rewritten::Forward(out) => *out,
                Rewritten::Drop => {
                    if ack_mode != AckMode::NoAck {
                        let _ = tx.send((delivery.acker, None));
                    }
                    continue;
                }
            };
            let pending = sink.send(out).await?;
            match ack_mode {
                AckMode::OnConfirm => {
                    let _ = tx.send((delivery.acker, Some(pending)));
                }
                AckMode::OnPublish => {
                    delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| format!("acknowledging at the source: {e}"))?;
                    status.count_forwarded(1);
                }
                AckMode::NoAck => status.count_forwarded(1),
            }
        };
        // Every delivery taken is settled before the pump returns.
        drop(tx);
        Ok(ended)
    };
    tokio::pin!(acking, taking);
    let mut ended = None;
    loop {
        tokio::select! {
            r = &mut taking, if ended.is_none() => ended = Some(r?),
            r = &mut acking => {
                r?;
                return ended.ok_or_else(|| "the acknowledgements stopped".to_string());
            }
        }
    }
}
