//! AMQP 0-9-1: bytes on a socket in, channel state machines in the middle,
//! bytes out.
//!
//! - `codec` cuts and encodes frames: `codec/mod.rs` the frame type and
//!   `decode`, `codec/methods.rs` method payloads (the `basic.publish` /
//!   `basic.ack` fast path and its parser fallback), `codec/encode.rs` the
//!   `encode_*` functions.
//! - `serve` takes an accepted socket (plain or TLS) through the handshake
//!   to the connection. `reader` reads a socket into one adaptive buffer
//!   and cuts frames off it; `connection` is a connection's reader task and
//!   channel table, with `handshake` for the opening exchange (logins,
//!   limits), `closing` for how it ends on the wire, and `session` for what
//!   its channels share.
//! - `channel` is the per-channel state machine: `channel/mod.rs` its state
//!   and method dispatch, then one file per class (`exchange`, `queue`,
//!   `basic`, `publish`, `tx`). `assembler` joins a publish's frames into
//!   one message, `properties` reads its content header, `confirms` tracks
//!   publisher confirms.
//! - `deliveries` is the part of a channel that queues deliver through;
//!   `outbox` buffers and writes a connection's outgoing frames.

pub mod assembler;
pub mod channel;
pub mod channel_status;
pub mod closing;
pub mod codec;
pub mod confirms;
pub mod connection;
pub mod deliveries;
pub mod handshake;
pub mod open_channels;
pub mod outbox;
pub mod properties;
pub mod reader;
pub mod serve;
pub mod session;
