//! A minimal AMQP client over a raw socket, for what real client libraries
//! cannot do: send malformed frames, and see the exact bytes the broker
//! sends. Frames are built and parsed with amq-protocol, independently of
//! Warren's own codec.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any byte stream: TCP, or TLS over it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub struct RawClient {
    pub stream: Box<dyn Io>,
    buf: Vec<u8>,
}

/// What the broker said when it closed something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub channel: u16,
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    let ctx = WriteContext::from(Vec::new());
    gen_frame(frame)(ctx).expect("frame encodes").into_inner().0
}

pub fn method(channel: u16, m: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(channel, m))
}

/// A raw frame with arbitrary type, channel and payload.
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![frame_type];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

/// A content header frame with raw property bytes (flags + list).
pub fn header_frame(channel: u16, body_size: u64, properties: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 60, 0, 0];
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(properties);
    raw_frame(2, channel, &payload)
}

pub fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
    raw_frame(3, channel, body)
}

pub fn publish(channel: u16, exchange: &str, routing_key: &str) -> Vec<u8> {
    method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).ok();
        RawClient::over(stream)
    }

    /// A client over an already connected stream (TLS, say).
    pub fn over(stream: impl Io + 'static) -> RawClient {
        RawClient {
            stream: Box::new(stream),
            buf: Vec::new(),
        }
    }

    /// Connect and complete the handshake as guest on vhost "/" with the
    /// given frame_max and heartbeat.
    pub async fn open_with(addr: SocketAddr, frame_max: u32, heartbeat: u16) -> RawClient {
        RawClient::connect(addr)
            .await
            .handshake(frame_max, heartbeat)
            .await
    }

    /// The handshake as guest on vhost "/" over this client's stream.
    pub async fn handshake(mut self, frame_max: u32, heartbeat: u16) -> RawClient {
        let c = &mut self;
        c.send(b"AMQP\x00\x00\x09\x01").await;
        match c.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
            other => panic!("expected connection.start, got {other:?}"),
        }
        let mut caps = FieldTable::default();
        caps.insert(
            "authentication_failure_close".into(),
            AMQPValue::Boolean(true),
        );
        caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
        caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: LongString::from("\0guest\0guest"),
                locale: "en_US".into(),
            })),
        )
        .await;
        let tune = match c.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat,
            })),
        )
        .await;
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        match c.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        self
    }

    pub async fn open(addr: SocketAddr) -> RawClient {
        RawClient::open_with(addr, 131072, 0).await
    }

    pub async fn open_channel(&mut self, id: u16) {
        self.send_method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        match self.next_method().await {
            (ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if ch == id => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Write, ignoring failures (the broker may already have hung up).
    pub async fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn send_method(&mut self, channel: u16, m: AMQPClass) {
        self.send(&method(channel, m)).await;
    }

    /// The next frame, or `None` if the broker closed the socket (or said
    /// nothing for 5 seconds).
    pub async fn next_frame(&mut self) -> Option<AMQPFrame> {
        loop {
            if let Ok((rest, frame)) = parse_frame(self.buf.as_slice()) {
                let used = self.buf.len() - rest.len();
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let n = match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
            {
                Ok(Ok(n)) => n,
                _ => return None,
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next method frame, skipping heartbeats.
    pub async fn next_method(&mut self) -> (u16, AMQPClass) {
        loop {
            match self.next_frame().await {
                Some(AMQPFrame::Method(ch, m)) => return (ch, m),
                Some(AMQPFrame::Heartbeat) => continue,
                Some(other) => panic!("expected a method frame, got {other:?}"),
                None => panic!("connection closed while waiting for a method"),
            }
        }
    }

    /// Exactly `n` raw bytes (fewer if the socket closes or stalls).
    pub async fn read_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; n - self.buf.len()];
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        let take = n.min(self.buf.len());
        self.buf.drain(..take).collect()
    }

    /// Wait for `connection.close`, answer it with `close-ok`, and return
    /// what it said. Skips other frames.
    pub async fn expect_connection_close(&mut self) -> Closed {
        loop {
            match self.next_frame().await {
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    self.try_send(&method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    ))
                    .await;
                    return Closed {
                        channel: 0,
                        code: c.reply_code,
                        text: c.reply_text.as_str().to_string(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    };
                }
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// Wait for `channel.close` on any channel, answer `close-ok`.
    pub async fn expect_channel_close(&mut self) -> Closed {
        loop {
            match self.next_frame().await {
                Some(AMQPFrame::Method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => {
                    self.send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    )
                    .await;
                    return Closed {
                        channel: ch,
                        code: c.reply_code,
                        text: c.reply_text.as_str().to_string(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    };
                }
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    panic!(
                        "connection closed instead of channel: {} {}",
                        c.reply_code, c.reply_text
                    )
                }
                Some(_) => continue,
                None => panic!("socket closed without channel.close"),
            }
        }
    }

    /// True if the broker closes the socket within the timeout.
    pub async fn is_closed_by_peer(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
