//! A client connection after the handshake (`amqp::connection` and every
//! channel state machine behind it, down to queues): arbitrary bytes from a
//! client that opened `/` as guest, then hung up. The broker never panics,
//! never hangs on a peer that is gone (the harness allows 10 s), and never
//! answers with 541 INTERNAL_ERROR: whatever a client sends, a failure is
//! the client's, with its own reply code.
//!
//! One broker serves every run; what a run declares is deleted after it.

#![no_main]

use std::sync::LazyLock;

use amq_protocol::protocol::{AMQPClass, channel, connection};
use libfuzzer_sys::fuzz_target;
use warren::amqp::codec::Frame;
use warren::fuzzing::{ConnectionHarness, server_frames};

static HARNESS: LazyLock<ConnectionHarness> =
    LazyLock::new(|| ConnectionHarness::new().expect("a runtime for the harness"));

const INTERNAL_ERROR: u16 = 541;

fuzz_target!(|data: &[u8]| {
    let written = HARNESS.run(data);
    for frame in server_frames(&written) {
        let Frame::Method { method, .. } = frame else {
            continue;
        };
        let code = match &*method {
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => c.reply_code,
            AMQPClass::Channel(channel::AMQPMethod::Close(c)) => c.reply_code,
            _ => continue,
        };
        assert_ne!(code, INTERNAL_ERROR, "{method:?}");
    }
});
