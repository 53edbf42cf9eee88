//! AMQP 0-9-1: bytes on a socket in, channel state machines in the middle,
//! bytes out.
//!
//! `codec` cuts and encodes frames; `connection` owns a socket's reader task
//! and channel table (with `handshake` for the opening exchange); `channel`
//! is the per-channel state machine, `assembler` its content assembly;
//! `deliveries` is the part of a channel that queues deliver through;
//! `outbox` buffers and writes a connection's outgoing frames.

pub mod assembler;
pub mod channel;
pub mod codec;
pub mod confirms;
pub mod connection;
pub mod deliveries;
pub mod handshake;
pub mod outbox;
pub mod properties;
pub mod session;
