//! The content assembler (`amqp::assembler`) fed the frames of arbitrary
//! bytes, one assembler per channel as a connection keeps them: it never
//! panics, a message comes out only when the body frames add up to exactly
//! the size its header announced, with the properties the header carried,
//! and after an error the channel starts afresh (as a closed channel's
//! successor would).

#![no_main]

use std::collections::HashMap;

use amq_protocol::protocol::{AMQPClass, basic};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use warren::amqp::assembler::Assembler;
use warren::amqp::codec::{self, Frame};

/// A small limit, so that oversize messages are refused often.
const MAX_SIZE: u64 = 64 * 1024;

#[derive(Default)]
struct Channel {
    assembler: Assembler,
    /// The header of the message being assembled: its size and properties,
    /// and the body bytes seen so far.
    expected: Option<(u64, Bytes, Vec<u8>)>,
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut channels: HashMap<u16, Channel> = HashMap::new();
    while let Ok(Some(frame)) = codec::decode(&mut buf, 131_072) {
        let id = frame.channel();
        let ch = channels.entry(id).or_default();
        let result = match frame {
            Frame::Method { method, .. } => match *method {
                AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                    ch.assembler.start(p).map(|()| None)
                }
                _ => ch.assembler.expect_method().map(|()| None),
            },
            Frame::Header {
                class_id,
                body_size,
                properties,
                ..
            } => {
                let awaiting = matches!(ch.assembler, Assembler::AwaitingHeader(_));
                let r = ch
                    .assembler
                    .header(class_id, body_size, properties.clone(), MAX_SIZE);
                if awaiting && r.is_ok() {
                    ch.expected = Some((body_size, properties, Vec::new()));
                }
                r
            }
            Frame::Body { payload, .. } => {
                if let Some((_, _, seen)) = &mut ch.expected {
                    seen.extend_from_slice(&payload);
                }
                ch.assembler.body(payload)
            }
            Frame::Heartbeat { .. } => Ok(None),
        };
        match result {
            Ok(Some(content)) => {
                let (size, properties, seen) =
                    ch.expected.take().expect("a message without a header");
                assert_eq!(content.body.len() as u64, size);
                assert_eq!(&content.body[..], &seen[..]);
                assert_eq!(content.properties, properties);
                assert!(ch.assembler.is_idle());
            }
            Ok(None) => {}
            // Any error closes the channel (or the connection).
            Err(_) => {
                channels.remove(&id);
            }
        }
    }
});
