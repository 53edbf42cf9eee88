//! What the fuzz targets in `fuzz/` need that the rest of the crate does
//! not make public: a connection served over an in-memory transport, a boot
//! from stored definitions without a disk, and the configuration layers
//! without a file. Not part of Warren's API; nothing in the broker calls
//! it.
//!
//! [`ConnectionHarness`] serves one client connection per call on a broker
//! it keeps between calls: the client's bytes are a fixed handshake
//! (guest/guest on `/`, no heartbeats) followed by the fuzzer's input, read
//! as a socket would deliver them, and the connection ends at the end of
//! the input as if the peer hung up. Whatever the input declared is deleted
//! afterwards, so calls do not see each other's topology.

use crate::broker::events::INTERNAL_USER;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use crate::amqp::codec::{self, PROTOCOL_HEADER};
use crate::amqp::handshake::Link;
use crate::amqp::reader::{FrameReader, Transport};
use crate::amqp::serve::serve;
use crate::broker::Broker;
use crate::broker::bindings::DestinationName;
use crate::config::{Config, Overrides};
use crate::startup::StartupError;
use crate::store::{Backend, FORMAT_VERSION, MemoryBackend, Store, StoreResult, Tree};

/// How long one connection may take before the harness calls it a hang.
const HANG: Duration = Duration::from_secs(10);

/// A broker, and a runtime to serve connections to it on.
pub struct ConnectionHarness {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    handshake: Vec<u8>,
}

impl ConnectionHarness {
    /// An in-memory broker with the default configuration.
    pub fn new() -> std::io::Result<ConnectionHarness> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(ConnectionHarness {
            runtime,
            broker: Broker::ephemeral(Config::ephemeral()),
            handshake: client_handshake(),
        })
    }

    /// Serve a connection whose client sends the handshake, then `input`,
    /// then hangs up. Returns every byte the broker wrote to it.
    ///
    /// # Panics
    /// If the connection is still open [`HANG`] after its input ended: a
    /// peer that hung up must always be let go.
    pub fn run(&self, input: &[u8]) -> Vec<u8> {
        let mut bytes = self.handshake.clone();
        bytes.extend_from_slice(input);
        let written = Capture::default();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
        let served = serve(
            FrameReader::new(MemoryInput { bytes, at: 0 }),
            written.clone(),
            Link {
                peer,
                local: peer,
                tls: None,
            },
            self.broker.clone(),
            CancellationToken::new(),
        );
        let ended = self
            .runtime
            .block_on(async { tokio::time::timeout(HANG, served).await });
        assert!(ended.is_ok(), "the connection did not end after its input");
        self.reset();
        written.take()
    }

    /// Delete what the last connection declared: exchange-to-exchange
    /// bindings, queues (with their bindings) and exchanges.
    fn reset(&self) {
        let Some(vhost) = self.broker.vhost("/") else {
            return;
        };
        for b in vhost.bindings() {
            if let DestinationName::Exchange(destination) = &b.destination {
                let _ = vhost.unbind_exchange(
                    destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    INTERNAL_USER,
                );
            }
        }
        for q in vhost.queues() {
            let owner = q.config.exclusive_owner.unwrap_or_default();
            let _ = vhost.delete_queue(owner, q.name(), false, false, INTERNAL_USER);
        }
        for e in vhost.exchanges() {
            if !e.is_default() && !e.name.as_str().starts_with("amq.") {
                let _ = vhost.delete_exchange(e.name.as_str(), false, INTERNAL_USER);
            }
        }
    }
}

/// What a client sends to open a connection: the protocol header,
/// `start-ok` (PLAIN, guest/guest, the capabilities lapin announces),
/// `tune-ok` (no heartbeats) and `open` of `/`.
pub fn client_handshake() -> Vec<u8> {
    let mut capabilities = FieldTable::default();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        capabilities.insert(name.into(), AMQPValue::Boolean(true));
    }
    let mut client_properties = FieldTable::default();
    client_properties.insert("product".into(), long("warren-fuzz"));
    client_properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    let mut out = BytesMut::new();
    out.put_slice(PROTOCOL_HEADER);
    for method in [
        connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        }),
        connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        }),
        connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        }),
    ] {
        codec::encode_method(&mut out, 0, &AMQPClass::Connection(method));
    }
    out.to_vec()
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The configuration from a config file's `text` and the environment
/// `env`, over the embedded defaults, as `warren --config` builds it.
pub fn config(text: &str, env: Vec<(String, String)>) -> Result<Config, StartupError> {
    Config::from_layers(
        Some((text, Path::new("fuzz.toml"))),
        &Overrides::default(),
        env,
    )
}

/// Boot a broker, as after a restart, from a store whose definitions are
/// `records`: each the kind letter its key starts with (`v`, `u`, `p`,
/// `P`, `e`, `q`, `b`: see `store::definitions`) and the stored JSON.
/// Returns how many queues it restored; an error is the start-up error
/// such a store gives.
pub fn boot_from_definitions(records: &[(u8, &[u8])]) -> StoreResult<usize> {
    let backend = Arc::new(MemoryBackend::default());
    backend.insert(Tree::Meta, b"format", FORMAT_VERSION.to_string().as_bytes())?;
    for (i, (kind, json)) in records.iter().enumerate() {
        let mut key = vec![*kind];
        key.extend_from_slice(&(i as u64).to_be_bytes());
        backend.insert(Tree::Definitions, &key, json)?;
    }
    let broker = Broker::open(Config::ephemeral(), Store::over(backend)?)?;
    let queues = broker.vhosts().iter().map(|v| v.queue_count()).sum();
    broker.close();
    Ok(queues)
}

/// The client's side of the socket: its bytes, handed out as reads of at
/// most the room the reader offers, then end of stream.
struct MemoryInput {
    bytes: Vec<u8>,
    at: usize,
}

impl Transport for MemoryInput {
    fn try_read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        let room = (buf.capacity() - buf.len()).max(1);
        let rest = &self.bytes[self.at..];
        let n = rest.len().min(room);
        buf.extend_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }

    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// The broker's side of the socket: everything written, kept.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The frames the broker wrote, as far as they decode.
pub fn server_frames(written: &[u8]) -> Vec<codec::Frame> {
    let mut buf = BytesMut::from(written);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec::decode(&mut buf, 0) {
        frames.push(frame);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, channel, queue};
    use codec::Frame;

    fn method(out: &mut BytesMut, channel: u16, m: AMQPClass) {
        codec::encode_method(out, channel, &m);
    }

    #[test]
    fn a_connection_is_served_from_memory_and_its_topology_reset() {
        let harness = ConnectionHarness::new().unwrap();
        let mut input = BytesMut::new();
        method(
            &mut input,
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        method(
            &mut input,
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        );
        method(
            &mut input,
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "q".into(),
                mandatory: false,
                immediate: false,
            })),
        );
        codec::encode_content(&mut input, 1, &[0, 0], b"hello", 131_072);
        method(
            &mut input,
            1,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: "q".into(),
                no_ack: true,
            })),
        );
        let written = harness.run(&input);
        let replies: Vec<(u16, u16)> = server_frames(&written)
            .iter()
            .filter_map(|f| match f {
                Frame::Method { method, .. } => {
                    Some((method.get_amqp_class_id(), method.get_amqp_method_id()))
                }
                _ => None,
            })
            .collect();
        // start, tune, open-ok; channel.open-ok, declare-ok, get-ok.
        assert_eq!(
            replies,
            [(10, 10), (10, 30), (10, 41), (20, 11), (50, 11), (60, 71)]
        );
        assert!(harness.broker.vhost("/").unwrap().queues().is_empty());
        // The next connection starts afresh: the queue is gone.
        assert!(!harness.run(&input).is_empty());
    }

    #[test]
    fn a_broker_boots_from_stored_definitions() {
        let queue = br#"{"vhost":"/","name":"q","uid":3,"auto_delete":false,"arguments":{}}"#;
        assert_eq!(
            boot_from_definitions(&[(b'v', br#""/""#), (b'q', queue)]).unwrap(),
            1
        );
        assert!(boot_from_definitions(&[(b'q', b"{")]).is_err());
    }

    #[test]
    fn the_config_layers_parse_from_text() {
        let c = config("[amqp]\nport = 1234\n", vec![]).unwrap();
        assert_eq!(c.amqp.port, 1234);
        assert!(config("[amqp\n", vec![]).is_err());
    }
}
