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

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amq_protocol::protocol::{AMQPClass, channel, connection};
use smallvec::SmallVec;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::channel::Channel;
use super::codec::{self, Frame};
use super::handshake::{self, Negotiated};
use super::outbox::Outbox;
use super::reader::{End, FrameReader, Transport};
use super::session::Session;
use crate::broker::{Broker, ClientConnection};
use crate::error::AmqpError;

/// How long a peer has to answer our `connection.close`.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Serve one accepted TCP connection until it ends.
pub async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    serve(rd, wr, peer, broker, shutdown).await;
}

/// Serve one connection over any transport until it ends: a TCP socket's
/// halves, or the fuzz targets' in-memory input (`fuzzing::ConnectionHarness`).
pub async fn serve<R: Transport, W: AsyncWrite + Unpin + Send + 'static>(
    rd: R,
    wr: W,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let outbox = Outbox::new(broker.config.limits.connection_buffer_bytes);
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
        conn.run(&mut reader, shutdown).await;
        conn.teardown();
        broker.unregister_connection(conn.client.id);
        tracing::info!(%peer, "connection closed");
    }
    outbox.finish();
    let _ = timeout(CLOSE_GRACE, writer).await;
}

fn send_connection_close(outbox: &Outbox, e: &AmqpError) {
    let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code.code(),
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    }));
    outbox.send(|buf| codec::encode_method(buf, 0, &close));
}

fn send_close_ok(outbox: &Outbox) {
    let ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
    outbox.send(|buf| codec::encode_method(buf, 0, &ok));
}

/// After sending `connection.close`, discard input until `close-ok` (or
/// `close`) arrives, the peer hangs up, or the grace period ends.
async fn linger_for_close_ok<R: Transport>(reader: &mut FrameReader<R>) {
    let deadline = Instant::now() + CLOSE_GRACE;
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::Method { channel: 0, method })) => {
                    if matches!(
                        *method,
                        AMQPClass::Connection(
                            connection::AMQPMethod::CloseOk(_) | connection::AMQPMethod::Close(_)
                        )
                    ) {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match timeout_at(deadline, reader.fill()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
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
}

impl Connection {
    fn new(broker: Arc<Broker>, peer: SocketAddr, outbox: Arc<Outbox>, n: Negotiated) -> Self {
        let id = broker.next_id();
        let client = Arc::new(ClientConnection {
            id,
            peer,
            user: n.user.clone(),
            vhost: n.vhost.name.clone(),
            connected_at: SystemTime::now(),
            close: CancellationToken::new(),
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
        }
    }

    async fn run<R: Transport>(
        &mut self,
        reader: &mut FrameReader<R>,
        shutdown: CancellationToken,
    ) {
        let mut alarm = self.session.broker.subscribe_alarm();
        let mut blocked = false;
        // Frames that arrived with the handshake's last read.
        if let Err(end) = self.drain(reader).await {
            return self.finish(reader, end).await;
        }
        loop {
            // Stop reading while the client cannot keep up with what we send,
            // or while a resource alarm blocks a publisher.
            let paused = self.session.outbox.is_congested() || (blocked && self.has_published);
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
                    let reason = alarm.borrow_and_update().clone();
                    blocked = reason.is_some();
                    self.announce_blocked(reason);
                }
                _ = self.session.outbox.room(), if paused && !blocked => {}
                read = read_with_idle_limit(reader, idle_limit), if !paused => {
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

    fn announce_blocked(&self, reason: Option<String>) {
        if !self.blocked_capable {
            return;
        }
        let method = match reason {
            Some(reason) => connection::AMQPMethod::Blocked(connection::Blocked {
                reason: reason.into(),
            }),
            None => connection::AMQPMethod::Unblocked(connection::Unblocked {}),
        };
        self.session
            .outbox
            .send(|buf| codec::encode_method(buf, 0, &AMQPClass::Connection(method)));
    }

    /// Handle the buffered frames. A reply that must wait for the store
    /// (a durable declaration, a transaction commit) pauses processing until
    /// it is sent, so replies keep their order.
    async fn drain<R: Transport>(&mut self, reader: &mut FrameReader<R>) -> Result<(), End> {
        loop {
            let deferred = match self.process(reader)? {
                Processed::All => return Ok(()),
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
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                send_close_ok(&self.session.outbox);
                Err(End::ClosedByPeer)
            }
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
                // Both sides closed at once: answer, and consider it done.
                self.session.reply(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                self.channels.remove(&id);
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

    async fn finish<R: Transport>(&mut self, reader: &mut FrameReader<R>, end: End) {
        match end {
            End::Protocol(e) => {
                if e.code != crate::error::ReplyCode::ConnectionForced {
                    tracing::warn!(peer = %self.client.peer, "closing connection: {}", e.reply_text());
                }
                self.close_channels();
                send_connection_close(&self.session.outbox, &e);
                linger_for_close_ok(reader).await;
            }
            End::ClosedByPeer | End::Closed => {}
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
