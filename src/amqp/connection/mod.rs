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
use std::time::{Duration, SystemTime};

use amq_protocol::protocol::{AMQPClass, channel, connection};
use smallvec::SmallVec;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::channel::Channel;
use super::closing::{
    CLOSE_GRACE, closed_linger, discard_until_hangup, linger_for_close_ok, send_close_ok,
    send_connection_close,
};
use super::codec::Frame;
use super::handshake::{self, Negotiated};
use super::open_channels::OpenChannels;
use super::outbox::Outbox;
use super::reader::{End, FrameReader, Transport};
use super::session::Session;
use crate::broker::connections::LateAck;
use crate::broker::{Broker, ClientConnection};
use crate::error::AmqpError;

/// Serve one accepted TCP connection until it ends.
pub async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let write_timeout = Duration::from_millis(broker.config.limits.write_timeout_ms);
    watch_the_peer(&stream, write_timeout);
    let (rd, wr) = stream.into_split();
    let outbox = Outbox::new(broker.config.limits.connection_buffer_bytes, write_timeout);
    let writer = tokio::spawn(outbox.clone().run_writer(wr));
    let mut reader = FrameReader::new(rd);

    let handshake_timeout = Duration::from_millis(broker.config.limits.handshake_timeout_ms);
    let negotiated = match timeout(
        handshake_timeout,
        handshake::run(&mut reader, &outbox, &broker, peer),
    )
    .await
    {
        Ok(Ok(n)) => Some(n),
        Ok(Err(End::Protocol(e))) => {
            send_connection_close(&outbox, &e);
            linger_for_close_ok(&mut reader).await;
            None
        }
        Ok(Err(End::ClosedByPeer)) => {
            send_close_ok(&outbox);
            discard_until_hangup(&mut reader, closed_linger(Duration::ZERO), &shutdown).await;
            None
        }
        Ok(Err(End::Closed)) => None,
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            None
        }
    };
    if let Some(negotiated) = negotiated {
        let mut conn = Connection::new(broker.clone(), peer, outbox.clone(), negotiated);
        broker.register_connection(conn.client.clone());
        tracing::info!(%peer, user = %conn.session.user, vhost = %conn.session.vhost.name, "connection opened");
        let closed_by_peer = conn.run(&mut reader, &shutdown).await;
        conn.teardown();
        broker.unregister_connection(conn.client.id);
        tracing::info!(%peer, "connection closed");
        if closed_by_peer {
            // As RabbitMQ: close-ok once the connection's channels and
            // exclusive queues are gone, then the client closes the socket.
            send_close_ok(&outbox);
            discard_until_hangup(&mut reader, closed_linger(conn.heartbeat), &shutdown).await;
        }
    }
    outbox.finish();
    let _ = timeout(CLOSE_GRACE, writer).await;
}

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

struct Connection {
    session: Session,
    client: Arc<ClientConnection>,
    /// By channel number, looked up three times per publish (method,
    /// header, body), so with a cheap hash (SipHash was 3 % of a publish).
    /// The peer picks the numbers, but at most `channel_max` are open, which
    /// bounds what a collision can cost.
    channels: FxHashMap<u16, Slot>,
    channel_max: u16,
    heartbeat: Duration,
    blocked_capable: bool,
    /// Channels that published in the current read batch and may owe confirms.
    confirm_dirty: SmallVec<[u16; 4]>,
    has_published: bool,
    /// Its channels, as the broker inspects them (memory alarm, consumer
    /// timeouts).
    open_channels: Arc<OpenChannels>,
}

impl Connection {
    fn new(broker: Arc<Broker>, peer: SocketAddr, outbox: Arc<Outbox>, n: Negotiated) -> Self {
        let id = broker.next_id();
        let open_channels = OpenChannels::new(outbox.clone());
        let client = Arc::new(ClientConnection {
            id,
            peer,
            user: n.user.clone(),
            vhost: n.vhost.name.clone(),
            connected_at: SystemTime::now(),
            close: CancellationToken::new(),
            flow: Default::default(),
            probe: open_channels.clone(),
            late_acks: Default::default(),
        });
        outbox.set_heartbeat(Duration::from_secs(n.heartbeat.into()));
        Connection {
            session: Session {
                broker,
                vhost: n.vhost,
                user: n.user,
                connection_id: id,
                outbox,
                frame_max: n.frame_max,
                cancel_notify: n.capabilities.consumer_cancel_notify,
                deferred: Default::default(),
                in_flow: Default::default(),
                stored: Default::default(),
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
    async fn run<R: Transport>(
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
                    let e = AmqpError::connection_forced("Closed via management plugin");
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
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.session.reply(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::Blocked(_))
            | AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => Ok(()),
            other => Err(End::Protocol(
                AmqpError::channel_error("unexpected method in connection state running")
                    .caused_by(other.get_amqp_class_id(), other.get_amqp_method_id()),
            )),
        }
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
                let ch = Channel::new(id, &self.session);
                self.open_channels.add(&ch.deliveries);
                self.channels.insert(id, Slot::Open(Box::new(ch)));
                self.session.broker.metrics.channels.increment(1.0);
                self.session.broker.metrics.channels_opened.increment(1);
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
                    self.session.broker.metrics.channels.decrement(1.0);
                    self.session.broker.metrics.channels_closed.increment(1);
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
            self.session.broker.metrics.channels.decrement(1.0);
            self.session.broker.metrics.channels_closed.increment(1);
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
        for (_, slot) in self.channels.drain() {
            if let Slot::Open(mut ch) = slot {
                ch.close(&self.session);
                self.session.broker.metrics.channels.decrement(1.0);
                self.session.broker.metrics.channels_closed.increment(1);
            }
        }
    }

    /// Release everything the connection held.
    fn teardown(&mut self) {
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

/// Let the kernel notice a peer that is gone: TCP keepalive for an idle
/// one, and (Linux) a bound on how long sent data may stay unacknowledged
/// for one that vanished mid-transfer.
fn watch_the_peer(stream: &TcpStream, write_timeout: Duration) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = socket.set_tcp_user_timeout(Some(write_timeout)) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = write_timeout;
}
