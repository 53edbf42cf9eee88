//! A lean AMQP 0-9-1 client connection.
//!
//! One [`Conn`] is owned by one task. It holds the two halves of the socket,
//! one read buffer that frames are cut from in place, and one write buffer
//! that frames are appended to and written out in as few syscalls as the
//! socket allows. The handshake and the setup methods go through this module's
//! small synchronous-looking helpers ([`Conn::rpc`]); the per-message paths
//! (publish, deliver, ack, confirm) live in the producer and consumer modules
//! and work on the buffers directly.
//!
//! Only channel 1 is used.

use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, channel, connection, parse_class};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren::amqp::codec::{self, Frame};

use crate::transport::{Reader, Writer};
use crate::uri::AmqpUri;

/// The one channel every connection uses.
pub const CHANNEL: u16 = 1;
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Read at most this much per read syscall.
const READ_CHUNK: usize = 256 * 1024;
/// frame_max to use when the server leaves it open (0).
const DEFAULT_FRAME_MAX: u32 = 131_072;

pub struct Conn {
    pub rd: Reader,
    pub wr: Writer,
    /// Inbound bytes not yet consumed.
    pub rbuf: BytesMut,
    /// Outbound bytes; `wbuf[wpos..]` is still to be written.
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    pub frame_max: u32,
    /// Negotiated heartbeat in seconds (0 = disabled).
    pub heartbeat: u16,
    blocked_warned: bool,
}

impl Conn {
    /// Connect, run the handshake, and open channel 1.
    pub async fn open(uri: &AmqpUri, heartbeat: u16, name: &str) -> Result<Conn> {
        let (rd, wr) = crate::transport::connect(uri).await?;
        let mut c = Conn {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
            frame_max: DEFAULT_FRAME_MAX,
            heartbeat: 0,
            blocked_warned: false,
        };
        c.handshake(uri, heartbeat, name).await?;
        match c
            .rpc(&AMQPClass::Channel(channel::AMQPMethod::Open(
                channel::Open {},
            )))
            .await?
        {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => Ok(c),
            other => bail!("expected channel.open-ok, got {}", describe(&other)),
        }
    }

    async fn handshake(&mut self, uri: &AmqpUri, heartbeat: u16, name: &str) -> Result<()> {
        self.wbuf.extend_from_slice(codec::PROTOCOL_HEADER);
        self.flush().await?;
        let start = match self
            .next_method()
            .await
            .context("during the AMQP handshake")?
        {
            (_, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
            (_, other) => bail!("expected connection.start, got {}", describe(&other)),
        };
        if !start
            .mechanisms
            .to_string()
            .split_whitespace()
            .any(|m| m == "PLAIN")
        {
            bail!(
                "the server does not offer the PLAIN mechanism (offers: {})",
                start.mechanisms
            );
        }
        let mut response = Vec::with_capacity(uri.user.len() + uri.password.len() + 2);
        response.push(0);
        response.extend_from_slice(uri.user.as_bytes());
        response.push(0);
        response.extend_from_slice(uri.password.as_bytes());
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(name),
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        );
        self.flush().await?;
        let tune = match self
            .next_reply()
            .await
            .with_context(|| format!("authenticating as user '{}'", uri.user))?
        {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => bail!("expected connection.tune, got {}", describe(&other)),
        };
        self.frame_max = if tune.frame_max == 0 {
            DEFAULT_FRAME_MAX
        } else {
            tune.frame_max
        };
        if self.frame_max < 4096 {
            bail!("the server's frame_max {} is below 4096", self.frame_max);
        }
        self.heartbeat = negotiate_heartbeat(tune.heartbeat, heartbeat);
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: self.frame_max,
                heartbeat: self.heartbeat,
            })),
        );
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: short(&uri.vhost),
            })),
        );
        self.flush().await?;
        match self
            .next_reply()
            .await
            .with_context(|| format!("opening vhost '{}'", uri.vhost))?
        {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => Ok(()),
            other => bail!("expected connection.open-ok, got {}", describe(&other)),
        }
    }

    /// Append a method frame to the write buffer.
    pub fn send_method(&mut self, channel: u16, method: &AMQPClass) {
        let mut b = BytesMut::with_capacity(64);
        codec::encode_method(&mut b, channel, method);
        self.wbuf.extend_from_slice(&b);
    }

    pub fn send_heartbeat(&mut self) {
        let mut b = BytesMut::with_capacity(8);
        codec::encode_heartbeat(&mut b);
        self.wbuf.extend_from_slice(&b);
    }

    /// Whether there are bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Account for `n` bytes written by a `wr.write(&wbuf[wpos..])`.
    pub fn written(&mut self, n: usize) {
        self.wpos += n;
        if self.wpos >= self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
    }

    /// Drop already-written bytes from the front of the write buffer, so it
    /// does not grow while the socket is backed up.
    pub fn compact(&mut self) {
        if self.wpos > 0 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
    }

    /// Write everything buffered.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending() > 0 {
            self.wr
                .write_all(&self.wbuf[self.wpos..])
                .await
                .context("writing to the broker")?;
        }
        // TLS: what rustls still holds goes out too (a no-op for TCP).
        self.wr.flush().await.context("writing to the broker")?;
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }

    /// Make room and read once; an orderly EOF is an error (the broker went
    /// away without connection.close).
    pub async fn read_more(&mut self) -> Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = self
            .rd
            .read_buf(&mut self.rbuf)
            .await
            .context("reading from the broker")?;
        if n == 0 {
            bail!("the broker closed the TCP connection without connection.close");
        }
        Ok(n)
    }

    /// The next method, skipping heartbeats and stray content frames.
    async fn next_method(&mut self) -> Result<(u16, AMQPClass)> {
        loop {
            match codec::decode(&mut self.rbuf, self.frame_max)
                .map_err(|e| anyhow!("bad frame from the broker: {}", e.reply_text()))?
            {
                Some(Frame::Method { channel, method }) => return Ok((channel, *method)),
                Some(_) => continue,
                None => {
                    self.read_more().await?;
                }
            }
        }
    }

    /// Send a method on channel 1 and wait for the reply. Broker-initiated
    /// closes become errors.
    pub async fn rpc(&mut self, method: &AMQPClass) -> Result<AMQPClass> {
        self.send_method(CHANNEL, method);
        self.flush().await?;
        self.next_reply().await
    }

    /// The next method that is not a notification, as `rpc` waits for it.
    pub async fn next_reply(&mut self) -> Result<AMQPClass> {
        loop {
            let (channel, method) = self.next_method().await?;
            if let Some(m) = self.control(channel, method).await? {
                return Ok(m);
            }
        }
    }

    /// Handle a method that may arrive at any time: broker-initiated closes
    /// (answered with close-ok, then returned as an error) and
    /// connection.blocked/unblocked (reported once). Anything else is handed
    /// back to the caller.
    pub async fn control(&mut self, channel: u16, method: AMQPClass) -> Result<Option<AMQPClass>> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                self.send_method(
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                let _ = self.flush().await;
                Err(anyhow!(
                    "the broker closed the connection: {} {}{}",
                    c.reply_code,
                    c.reply_text,
                    caused_by(c.class_id, c.method_id)
                ))
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                self.send_method(
                    channel,
                    &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                let _ = self.flush().await;
                Err(anyhow!(
                    "the broker closed channel {channel}: {} {}{}",
                    c.reply_code,
                    c.reply_text,
                    caused_by(c.class_id, c.method_id)
                ))
            }
            AMQPClass::Connection(connection::AMQPMethod::Blocked(b)) => {
                if !self.blocked_warned {
                    self.blocked_warned = true;
                    eprintln!(
                        "warning: the broker blocked a connection (resource alarm): {}",
                        b.reason
                    );
                }
                Ok(None)
            }
            AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => Ok(None),
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => Err(anyhow!(
                "the broker cancelled consumer '{}' (queue deleted?)",
                c.consumer_tag
            )),
            other => Ok(Some(other)),
        }
    }

    /// Send `methods` on channel 1 with up to `window` awaiting their reply,
    /// reading replies while writing. Every reply must satisfy `is_reply`.
    /// Returns the number of replies.
    pub async fn pipeline(
        &mut self,
        methods: impl IntoIterator<Item = AMQPClass>,
        window: usize,
        is_reply: impl Fn(&AMQPClass) -> bool,
    ) -> Result<usize> {
        let mut methods = methods.into_iter().peekable();
        let (mut sent, mut replies) = (0usize, 0usize);
        loop {
            while sent - replies < window {
                let Some(m) = methods.next() else { break };
                self.send_method(CHANNEL, &m);
                sent += 1;
            }
            if replies == sent && methods.peek().is_none() {
                return Ok(replies);
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                r = self.wr.write_some(&self.wbuf[self.wpos..]), if self.pending() > 0 || self.wr.needs_flush() => {
                    let n = r.context("writing to the broker")?;
                    self.written(n);
                }
                r = self.rd.read_buf(&mut self.rbuf) => {
                    if r.context("reading from the broker")? == 0 {
                        bail!("the broker closed the TCP connection without connection.close");
                    }
                    loop {
                        let frame = codec::decode(&mut self.rbuf, self.frame_max)
                            .map_err(|e| anyhow!("bad frame from the broker: {}", e.reply_text()))?;
                        match frame {
                            Some(Frame::Method { channel, method }) => {
                                if let Some(m) = self.control(channel, *method).await? {
                                    if !is_reply(&m) {
                                        bail!("unexpected {} from the broker", describe(&m));
                                    }
                                    replies += 1;
                                }
                            }
                            Some(_) => {}
                            None => break,
                        }
                    }
                }
            }
        }
    }

    /// Close the connection politely: connection.close, then wait (briefly)
    /// for close-ok, discarding whatever else is still arriving.
    pub async fn close(self) -> Result<()> {
        match tokio::time::timeout(Duration::from_secs(5), self.close_inner()).await {
            Ok(r) => r,
            Err(_) => bail!("no connection.close-ok within 5 s (broker busy or blocking us)"),
        }
    }

    async fn close_inner(mut self) -> Result<()> {
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        self.flush().await?;
        loop {
            match codec::decode(&mut self.rbuf, self.frame_max) {
                Ok(Some(Frame::Method { method, .. })) => match *method {
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                        return Ok(());
                    }
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                        // Both sides closed at once; the broker's reason
                        // matters only if it is an error.
                        if c.reply_code != 200 {
                            return Err(anyhow!(
                                "the broker closed the connection: {} {}",
                                c.reply_code,
                                c.reply_text
                            ));
                        }
                        return Ok(());
                    }
                    _ => continue,
                },
                Ok(Some(_)) => continue,
                Ok(None) => {
                    if self.read_more().await.is_err() {
                        // EOF after our close: good enough.
                        return Ok(());
                    }
                }
                Err(e) => return Err(anyhow!("bad frame while closing: {}", e.reply_text())),
            }
        }
    }
}

/// The frame at the start of `buf`, if it is complete: `(type, channel,
/// payload size)`; the payload is `buf[7..7 + size]` and the frame is
/// `size + 8` bytes long.
#[inline]
pub fn peek_frame(buf: &[u8], frame_max: u32) -> Result<Option<(u8, u16, usize)>> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if size + 8 > frame_max as usize {
        bail!(
            "the broker sent a {}-byte frame, above frame_max {frame_max}",
            size + 8
        );
    }
    if buf.len() < size + 8 {
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        bail!("the broker sent a frame without a frame-end octet");
    }
    Ok(Some((buf[0], u16::from_be_bytes([buf[1], buf[2]]), size)))
}

/// Parse a method frame's payload (the slow path, for anything that is not
/// one of the per-message methods).
pub fn parse_method(payload: &[u8]) -> Result<AMQPClass> {
    match parse_class(payload) {
        Ok((_, m)) => Ok(m),
        Err(_) => {
            let (c, m) = if payload.len() >= 4 {
                (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    u16::from_be_bytes([payload[2], payload[3]]),
                )
            } else {
                (0, 0)
            };
            bail!("cannot parse method {} from the broker", method_name(c, m))
        }
    }
}

/// Client heartbeat preference `client` (0 = disabled) against the server's
/// proposal: 0 disables heartbeats whatever the server proposed; otherwise
/// the smaller non-zero value wins.
pub fn negotiate_heartbeat(server: u16, client: u16) -> u16 {
    match (server, client) {
        (_, 0) => 0,
        (0, c) => c,
        (s, c) => s.min(c),
    }
}

pub fn short(s: &str) -> ShortString {
    // Names come from the command line; the broker rejects over-long ones
    // with a clear error, so pass them through unchanged.
    ShortString::from(s)
}

fn client_properties(name: &str) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "exchange_exchange_bindings",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    t.insert(
        "product".into(),
        AMQPValue::LongString("warren-perf".into()),
    );
    t.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    t.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    t.insert("connection_name".into(), AMQPValue::LongString(name.into()));
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

fn caused_by(class_id: u16, method_id: u16) -> String {
    if class_id == 0 {
        String::new()
    } else {
        format!(" (in reply to {})", method_name(class_id, method_id))
    }
}

/// `queue.declare` for (50, 10), etc.
pub fn method_name(class_id: u16, method_id: u16) -> String {
    let class = match class_id {
        10 => "connection",
        20 => "channel",
        40 => "exchange",
        50 => "queue",
        60 => "basic",
        85 => "confirm",
        90 => "tx",
        _ => return format!("{class_id}.{method_id}"),
    };
    let method = match (class_id, method_id) {
        (10, 10) => "start",
        (10, 11) => "start-ok",
        (10, 30) => "tune",
        (10, 31) => "tune-ok",
        (10, 40) => "open",
        (10, 50) => "close",
        (20, 10) => "open",
        (20, 40) => "close",
        (40, 10) | (50, 10) => "declare",
        (40, 20) | (50, 40) => "delete",
        (40, 30) | (50, 20) => "bind",
        (50, 50) => "unbind",
        (50, 30) => "purge",
        (60, 10) => "qos",
        (60, 20) => "consume",
        (60, 30) => "cancel",
        (60, 40) => "publish",
        (60, 80) => "ack",
        (60, 90) => "reject",
        (60, 120) => "nack",
        (85, 10) => "select",
        _ => return format!("{class}.{method_id}"),
    };
    format!("{class}.{method}")
}

/// A short description of a method for error messages.
pub fn describe(m: &AMQPClass) -> String {
    method_name(m.get_amqp_class_id(), m.get_amqp_method_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_negotiation() {
        assert_eq!(negotiate_heartbeat(60, 0), 0);
        assert_eq!(negotiate_heartbeat(0, 0), 0);
        assert_eq!(negotiate_heartbeat(60, 10), 10);
        assert_eq!(negotiate_heartbeat(5, 10), 5);
        assert_eq!(negotiate_heartbeat(0, 30), 30);
    }

    #[test]
    fn peek_frame_cuts_and_checks() {
        let mut b = BytesMut::new();
        codec::encode_heartbeat(&mut b);
        assert_eq!(peek_frame(&b, 4096).unwrap(), Some((FRAME_HEARTBEAT, 0, 0)));
        assert_eq!(peek_frame(&b[..7], 4096).unwrap(), None);
        let mut bad = b.to_vec();
        bad[7] = 0;
        assert!(peek_frame(&bad, 4096).is_err());
        let mut big = vec![FRAME_BODY, 0, 1];
        big.extend_from_slice(&10_000u32.to_be_bytes());
        assert!(peek_frame(&big, 4096).is_err());
    }

    #[test]
    fn method_names() {
        assert_eq!(method_name(50, 10), "queue.declare");
        assert_eq!(method_name(60, 40), "basic.publish");
        assert_eq!(method_name(99, 1), "99.1");
    }
}
