//! One client connection: its reader task, its channels, and how it ends.
//!
//! The reader task reads the socket into one buffer (a [`FrameReader`]),
//! cuts frames off it and drives the channels; everything it sends goes
//! through the connection's [`Outbox`], written by a separate writer task.
//! The reader is the only owner of the channel table, so channel state
//! needs no locks.
//!
//! A connection ends when the client closes it, the socket drops, heartbeats
//! stop, a hard protocol error occurs (`connection.close` with the reply
//! code, then a grace period for `close-ok`), or the broker shuts down or
//! force-closes it (320 CONNECTION_FORCED). Whatever the cause, cleanup is
//! the same: every channel is closed (unacked messages requeued, consumers
//! cancelled), then the connection's exclusive queues are deleted.

mod flow;

use flow::released;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, channel, connection};
use smallvec::SmallVec;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::channel::Channel;
use super::closing::{linger_for_close_ok, send_connection_close};
use super::codec::Frame;
use super::handshake::Negotiated;
use super::open_channels::OpenChannels;
use super::outbox::Outbox;
use super::reader::{End, FrameReader, Transport};
use super::session::Session;
use crate::broker::connections::LateAck;
use crate::broker::{Broker, ClientConnection};
use crate::error::AmqpError;
use crate::metrics::ChurnEvent;

/// Frames handled before the reader yields to other tasks.
const FRAMES_PER_SLICE: usize = 1024;

/// How far [`Connection::process`] got.
enum Processed {
    /// The buffer holds no complete frame.
    All,
    /// A slice was handled; more frames wait.
    Some,
    /// A reply waits for the store.
    Deferred(super::session::Deferred),
    /// The client's output is past its limit: the rest waits.
    Congested,
}

enum Slot {
    Open(Box<Channel>),
    /// We sent `channel.close`; everything but `close-ok` is discarded.
    Closing,
}

pub(super) struct Connection {
    pub(super) session: Session,
    pub(super) client: Arc<ClientConnection>,
    /// By channel number, looked up three times per publish (method,
    /// header, body), so with a cheap hash (SipHash was 3 % of a publish).
    /// The peer picks the numbers, but at most `channel_max` are open, which
    /// bounds what a collision can cost.
    channels: FxHashMap<u16, Slot>,
    channel_max: u16,
    pub(super) heartbeat: Duration,
    blocked_capable: bool,
    /// Channels that published in the current read batch and may owe confirms.
    confirm_dirty: SmallVec<[u16; 4]>,
    has_published: bool,
    /// Its channels, as the broker inspects them (memory alarm, consumer
    /// timeouts).
    open_channels: Arc<OpenChannels>,
}

impl Connection {
    pub(super) fn new(
        broker: Arc<Broker>,
        peer: SocketAddr,
        outbox: Arc<Outbox>,
        n: Negotiated,
    ) -> Self {
        let client = n.client;
        let open_channels = n.open_channels;
        let id = client.id;
        outbox.set_heartbeat(Duration::from_secs(n.heartbeat.into()));
        Connection {
            session: Session {
                broker,
                vhost: n.vhost,
                user: n.user,
                peer,
                connection_id: id,
                outbox,
                frame_max: n.frame_max,
                cancel_notify: n.capabilities.consumer_cancel_notify,
                deferred: Default::default(),
                in_flow: Default::default(),
                stored: Default::default(),
                received_ms: Default::default(),
            },
            client,
            channels: FxHashMap::default(),
            channel_max: if n.channel_max == 0 {
                u16::MAX
            } else {
                n.channel_max
            },
            heartbeat: Duration::from_secs(n.heartbeat.into()),
            blocked_capable: n.capabilities.connection_blocked,
            confirm_dirty: SmallVec::new(),
            has_published: false,
            open_channels,
        }
    }

    /// Serve the connection until it ends; true if the client closed it
    /// (its `close-ok` is still owed).
    pub(super) async fn run<R: Transport>(
        &mut self,
        reader: &mut FrameReader<R>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut alarm = self.session.broker.alarms.subscribe();
        // As RabbitMQ: while an alarm is on, a connection is blocked (and
        // told so) once it publishes; one that only consumes carries on.
        let mut reason: Option<&'static str> = *alarm.borrow_and_update();
        let mut announced = false;
        let client = self.client.clone();
        // Frames that arrived with the handshake's last read.
        if let Err(end) = self.drain(reader).await {
            return self.finish(reader, end).await;
        }
        loop {
            // The writer gave up on a peer that stopped reading (or the
            // socket failed): the connection is over, its deliveries return.
            if self.session.outbox.is_dead() {
                tracing::warn!(peer = %self.client.peer, "closing connection: the client stopped reading what it was sent");
                return self.finish(reader, End::Closed).await;
            }
            let blocked = reason.is_some() && self.has_published;
            if blocked != announced {
                self.announce_blocked(reason.filter(|_| blocked));
                announced = blocked;
            }
            // Stop reading while the client cannot keep up with what we send,
            // or while a resource alarm blocks a publisher.
            let paused = self.session.outbox.is_congested() || (blocked && self.has_published);
            let flowing = self.held_back_by();
            let in_flow = flowing.holds();
            let idle_limit = (!self.heartbeat.is_zero()).then(|| self.heartbeat * 2);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let e = AmqpError::connection_forced("broker forced connection closure with reason 'shutdown'");
                    return self.finish(reader, End::Protocol(e)).await;
                }
                _ = self.client.close.cancelled() => {
                    let reason = self.client.close_reason.lock().clone();
                    let e = AmqpError::connection_forced(
                        reason.unwrap_or_else(|| "Closed via management plugin".into()),
                    );
                    return self.finish(reader, End::Protocol(e)).await;
                }
                changed = alarm.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    reason = *alarm.borrow_and_update();
                }
                late = client.late_acks.next() => {
                    for l in late {
                        if let Err(end) = self.close_late_channel(l) {
                            return self.finish(reader, end).await;
                        }
                    }
                    self.session.outbox.flush();
                }
                _ = self.session.outbox.room(), if paused && !blocked => {
                    // Frames read before the pause come first.
                    if let Err(end) = self.drain(reader).await {
                        return self.finish(reader, end).await;
                    }
                }
                _ = released(flowing), if in_flow && !paused => {
                    // Frames read before the pause come first.
                    if let Err(end) = self.drain(reader).await {
                        return self.finish(reader, end).await;
                    }
                }
                read = read_with_idle_limit(reader, idle_limit), if !paused && !in_flow => {
                    match read {
                        Ok(0) | Err(ReadFailure::Io) => return self.finish(reader, End::Closed).await,
                        Err(ReadFailure::Idle) => {
                            tracing::warn!(peer = %self.client.peer, "missed heartbeats from client, timeout: {}s", self.heartbeat.as_secs());
                            return self.finish(reader, End::Closed).await;
                        }
                        Ok(_) => {
                            if let Err(end) = self.drain(reader).await {
                                return self.finish(reader, end).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Handle the buffered frames. A reply that must wait for the store
    /// (a durable declaration, a transaction commit) pauses processing until
    /// it is sent, so replies keep their order.
    async fn drain<R: Transport>(&mut self, reader: &mut FrameReader<R>) -> Result<(), End> {
        loop {
            let deferred = match self.process(reader)? {
                Processed::All | Processed::Congested => return Ok(()),
                // A queue this connection publishes to is in flow: the rest
                // of the read waits until it releases the connection.
                Processed::Some if self.held_back_by().holds() => return Ok(()),
                Processed::Some => {
                    // A large read is handled in slices, letting the other
                    // connections on this worker (consumers acking, say)
                    // have their turn in between.
                    tokio::task::yield_now().await;
                    continue;
                }
                Processed::Deferred(d) => d,
            };
            match deferred.flushed.await {
                Ok(Ok(())) => {
                    self.session.reply(deferred.channel, deferred.reply);
                    for m in deferred.then {
                        self.session.reply(deferred.channel, m);
                    }
                    self.session.outbox.flush();
                }
                Ok(Err(e)) => {
                    return Err(End::Protocol(AmqpError::internal_error(format!(
                        "cannot make the change durable: {e}"
                    ))));
                }
                Err(_) => {
                    return Err(End::Protocol(AmqpError::internal_error(
                        "the store stopped before the change was durable",
                    )));
                }
            }
        }
    }

    /// Handle complete frames from the buffer until it is empty or a reply
    /// is deferred, then flush.
    fn process<R: Transport>(&mut self, reader: &mut FrameReader<R>) -> Result<Processed, End> {
        let mut budget = FRAMES_PER_SLICE;
        self.session.received_ms.set(0);
        let result = loop {
            if budget == 0 {
                break Ok(Processed::Some);
            }
            budget -= 1;
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(end) = self.on_frame(frame) {
                        break Err(end);
                    }
                    if let Some(deferred) = self.session.deferred.get_mut().take() {
                        break Ok(Processed::Deferred(deferred));
                    }
                    // A client that sends faster than it reads (pipelined
                    // basic.get, say) does not get to fill memory: the rest
                    // of its input waits until it has read what it was sent.
                    if self.session.outbox.looks_congested() {
                        break Ok(Processed::Congested);
                    }
                }
                Ok(None) => break Ok(Processed::All),
                Err(e) => break Err(End::Protocol(e)),
            }
        };
        for id in std::mem::take(&mut self.confirm_dirty) {
            if let Some(Slot::Open(ch)) = self.channels.get_mut(&id) {
                ch.flush_confirms(&self.session);
            }
        }
        self.session.outbox.flush();
        result
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Heartbeat { channel: 0 } => Ok(()),
            Frame::Heartbeat { .. } => Err(End::Protocol(AmqpError::unexpected_frame(
                "type 8, all octets = <<>>",
            ))),
            Frame::Method { channel: 0, method } => self.on_connection_method(*method),
            Frame::Method { channel, method } => self.on_channel_method(channel, *method),
            Frame::Header {
                channel,
                class_id,
                body_size,
                properties,
            } => {
                let Some(ch) = content_channel(&mut self.channels, channel)? else {
                    return Ok(());
                };
                let result = ch.handle_header(&self.session, class_id, body_size, properties);
                self.after_content(channel, result)
            }
            Frame::Body { channel, payload } => {
                let Some(ch) = content_channel(&mut self.channels, channel)? else {
                    return Ok(());
                };
                let result = ch.handle_body(&self.session, payload);
                self.after_content(channel, result)
            }
        }
    }

    fn after_content(&mut self, channel: u16, result: Result<(), AmqpError>) -> Result<(), End> {
        self.has_published = true;
        if !self.confirm_dirty.contains(&channel) {
            self.confirm_dirty.push(channel);
        }
        result.or_else(|e| self.channel_failed(channel, e))
    }

    fn on_connection_method(&mut self, method: AMQPClass) -> Result<(), End> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => Err(End::ClosedByPeer),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(u)) => {
                self.update_secret(u.new_secret.as_bytes(), u.reason.as_str())
            }
            AMQPClass::Connection(connection::AMQPMethod::Blocked(_))
            | AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => Ok(()),
            other => Err(End::Protocol(
                AmqpError::channel_error("unexpected method in connection state running")
                    .caused_by(other.get_amqp_class_id(), other.get_amqp_method_id()),
            )),
        }
    }

    /// `connection.update-secret`. Warren's users are RabbitMQ's internal
    /// backend, whose state cannot expire (`state_can_expire() -> false`), so
    /// RabbitMQ takes any new secret and keeps the user as it was; so do we.
    /// The secret exists for token backends (OAuth 2), which Warren lacks.
    fn update_secret(&mut self, _secret: &[u8], reason: &str) -> Result<(), End> {
        let broker = &self.session.broker;
        let user = &self.session.user;
        tracing::info!(peer = %self.client.peer, "user '{user}' updated secret, reason: {reason}");
        broker.audit.record(
            "user.secret.updated",
            Some(&crate::broker::audit::Actor::amqp(user, self.client.peer)),
            serde_json::json!({"reason": reason}),
        );
        self.session.reply(
            0,
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                connection::UpdateSecretOk {},
            )),
        );
        Ok(())
    }

    /// A channel of this connection is gone, however it ended.
    fn channel_gone(&self, id: u16) {
        let broker = &self.session.broker;
        broker
            .events
            .channel_closed(&broker.node_name, &self.client, id);
        broker.metrics.channels.decrement(1.0);
        broker.metrics.churn(ChurnEvent::ChannelClosed);
        broker.close_channel(&self.session.user);
    }

    fn on_channel_method(&mut self, id: u16, method: AMQPClass) -> Result<(), End> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        match (self.channels.get_mut(&id), method) {
            (None, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                // As RabbitMQ: channel_max bounds how many channels are open,
                // not the numbers they use.
                if self.channels.len() >= usize::from(self.channel_max) {
                    return Err(End::Protocol(AmqpError::not_allowed(format!(
                        "number of channels opened ({}) has reached the negotiated channel_max ({})",
                        self.channels.len(),
                        self.channel_max
                    ))));
                }
                self.session
                    .broker
                    .open_channel(&self.session.user)
                    .map_err(|e| End::Protocol(e.caused_by(class_id, method_id)))?;
                let ch = Channel::new(id, &self.session);
                self.open_channels.add(&ch.deliveries);
                self.channels.insert(id, Slot::Open(Box::new(ch)));
                let broker = &self.session.broker;
                broker.metrics.channels.increment(1.0);
                broker
                    .events
                    .channel_created(&broker.node_name, &self.client, id);
                self.session
                    .broker
                    .metrics
                    .churn(ChurnEvent::ChannelCreated);
                self.session.reply(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                Ok(())
            }
            (None, _) => Err(End::Protocol(
                AmqpError::channel_error("expected 'channel.open'").caused_by(class_id, method_id),
            )),
            (Some(Slot::Closing), AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                self.channels.remove(&id);
                Ok(())
            }
            (Some(Slot::Closing), AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                // Both sides closed at once: answer, and still wait for the
                // client's close-ok to ours, as RabbitMQ does.
                self.session.reply(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            (Some(Slot::Closing), _) => Ok(()),
            (Some(Slot::Open(_)), AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                if let Some(Slot::Open(mut ch)) = self.channels.remove(&id) {
                    ch.flush_confirms(&self.session);
                    ch.close(&self.session);
                    self.channel_gone(id);
                }
                self.session.reply(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            (Some(Slot::Open(ch)), method) => {
                let result = ch.handle_method(&self.session, method);
                result.or_else(|e| self.channel_failed(id, e))
            }
        }
    }

    /// A channel method failed: a soft error closes the channel, a hard one
    /// the connection.
    /// The consumer timeout: a channel with a delivery unacknowledged past
    /// its deadline is closed with 406, which requeues what it held.
    fn close_late_channel(&mut self, late: LateAck) -> Result<(), End> {
        let Some(Slot::Open(ch)) = self.channels.get(&late.channel) else {
            return Ok(());
        };
        // Checked again: the channel may have been acked (or closed and
        // reopened) since the broker looked.
        let now = self.session.broker.ack_clock.now_ms();
        let Some(timeout_ms) = ch.deliveries.late(now) else {
            return Ok(());
        };
        let late = LateAck { timeout_ms, ..late };
        tracing::warn!(peer = %self.client.peer, channel = late.channel, "consumer timeout: {}", late.reason());
        self.channel_failed(late.channel, AmqpError::precondition_failed(late.reason()))
    }

    fn channel_failed(&mut self, id: u16, e: AmqpError) -> Result<(), End> {
        if e.is_hard() {
            return Err(End::Protocol(e));
        }
        tracing::debug!(channel = id, "channel error: {}", e.reply_text());
        if let Some(Slot::Open(mut ch)) = self.channels.insert(id, Slot::Closing) {
            ch.flush_confirms(&self.session);
            ch.close(&self.session);
            self.channel_gone(id);
        }
        let close = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: e.code.code(),
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        }));
        self.session.reply(id, close);
        Ok(())
    }

    /// End the connection for `end`; true if the client closed it.
    async fn finish<R: Transport>(&mut self, reader: &mut FrameReader<R>, end: End) -> bool {
        match end {
            End::Protocol(e) => {
                if e.code != crate::error::ReplyCode::ConnectionForced {
                    tracing::warn!(peer = %self.client.peer, "closing connection: {}", e.reply_text());
                }
                self.close_channels();
                send_connection_close(&self.session.outbox, &e);
                linger_for_close_ok(reader).await;
                false
            }
            End::ClosedByPeer => true,
            End::Closed => false,
        }
    }

    fn close_channels(&mut self) {
        let open: Vec<(u16, Box<Channel>)> = self
            .channels
            .drain()
            .filter_map(|(id, slot)| match slot {
                Slot::Open(ch) => Some((id, ch)),
                Slot::Closing => None,
            })
            .collect();
        for (id, mut ch) in open {
            ch.close(&self.session);
            self.channel_gone(id);
        }
    }

    /// Release everything the connection held.
    pub(super) fn teardown(&mut self) {
        if self.client.flow.swap(false, Ordering::Relaxed) {
            self.session
                .broker
                .metrics
                .connections_in_flow
                .decrement(1.0);
        }
        self.close_channels();
        self.session
            .vhost
            .delete_exclusive_queues(self.session.connection_id);
    }
}

/// The channel a content frame belongs to: `None` if it is closing (the
/// frame is dropped); an error if it was never opened.
fn content_channel(
    channels: &mut FxHashMap<u16, Slot>,
    channel: u16,
) -> Result<Option<&mut Channel>, End> {
    match channels.get_mut(&channel) {
        Some(Slot::Open(ch)) => Ok(Some(ch)),
        Some(Slot::Closing) => Ok(None),
        None => Err(End::Protocol(AmqpError::unexpected_frame(
            "expected method frame, got non method frame instead",
        ))),
    }
}

enum ReadFailure {
    Io,
    Idle,
}

async fn read_with_idle_limit<R: Transport>(
    reader: &mut FrameReader<R>,
    idle_limit: Option<Duration>,
) -> Result<usize, ReadFailure> {
    match idle_limit {
        None => reader.fill().await.map_err(|_| ReadFailure::Io),
        Some(limit) => match timeout(limit, reader.fill()).await {
            Ok(r) => r.map_err(|_| ReadFailure::Io),
            Err(_) => Err(ReadFailure::Idle),
        },
    }
}
