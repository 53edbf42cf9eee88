//! The AMQP 0-9-1 frame codec.
//!
//! Inbound, [`decode`] cuts one frame off the connection's read buffer. Method
//! payloads are parsed by `amq-protocol`; content headers and bodies are kept
//! as raw [`Bytes`] so a message's properties can be forwarded byte-exact and
//! its body is never turned into a `Vec` per frame.
//!
//! Outbound, the `encode_*` functions append complete frames to a connection's
//! output buffer. The methods sent per message (`basic.deliver`, `basic.get-ok`,
//! `basic.ack`, `basic.return`) are written by hand; everything else goes
//! through `amq-protocol`'s generator.
//!
//! This module knows nothing about channels or state; it only knows bytes.
//!
//! This file holds the frame constants, the inbound [`Frame`] and
//! [`decode`]; `methods` decodes method payloads (the hand-written fast
//! path for `basic.publish` and `basic.ack`, with `amq-protocol`'s parser
//! as the fallback) and `encode` writes outbound frames. Their public
//! functions are re-exported here, so callers name them `codec::…`.

mod encode;
mod methods;

use amq_protocol::protocol::AMQPClass;
use bytes::{Buf, Bytes, BytesMut};

pub use self::encode::{
    encode_confirm, encode_content, encode_deliver, encode_get_ok, encode_heartbeat, encode_method,
    encode_return,
};
use self::methods::decode_method;
pub use self::methods::{nesting_error, read_short_str};
use crate::error::AmqpError;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Frame type byte + channel + size before the payload, frame-end after it.
pub const FRAME_OVERHEAD: usize = 8;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The most [`decode`] reserves for a frame still arriving: a frame of the
/// default frame_max.
const RESERVE_AHEAD_MAX: usize = 131_072;

/// One inbound frame.
#[derive(Debug)]
pub enum Frame {
    Method {
        channel: u16,
        method: Box<AMQPClass>,
    },
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        /// Property flags and property list, exactly as the client sent them.
        properties: Bytes,
    },
    Body {
        channel: u16,
        payload: Bytes,
    },
    Heartbeat {
        channel: u16,
    },
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// Cut the next complete frame off `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. `frame_max` is the
/// negotiated maximum frame size including the 8 bytes of framing. Errors
/// carry RabbitMQ's wording (`type 3, all octets = <<>>: {frame_too_large,…}`).
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, AmqpError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let frame_type = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let max_payload = (frame_max as usize).saturating_sub(FRAME_OVERHEAD);
    if frame_max != 0 && size > max_payload {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = <<>>: {{frame_too_large,{size},{max_payload}}}"
        )));
    }
    if buf.len() < size + FRAME_OVERHEAD {
        // Room for the rest of the frame, but only as much as a frame of
        // the default size needs: with frame_max 0 (unlimited) a header can
        // claim 4 GiB, and memory should follow what arrives, not claims.
        buf.reserve((size + FRAME_OVERHEAD - buf.len()).min(RESERVE_AHEAD_MAX));
        return Ok(None);
    }
    let end = buf[7 + size];
    buf.advance(7);
    let payload = buf.split_to(size);
    buf.advance(1);
    if end != FRAME_END {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = {}: {{invalid_frame_end_marker,{end}}}",
            erlang_binary(&payload)
        )));
    }
    let unknown_frame = |payload: &[u8]| {
        AmqpError::frame_error(format!(
            "type {frame_type}, all octets = {}: unknown_frame",
            erlang_binary(payload)
        ))
    };
    let frame = match frame_type {
        FRAME_METHOD if payload.len() < 4 => return Err(unknown_frame(&payload)),
        FRAME_METHOD => Frame::Method {
            channel,
            method: Box::new(decode_method(&payload)?),
        },
        // class (2) + weight (2) + body size (8) + property flags (2)
        FRAME_HEADER if payload.len() < 14 => return Err(unknown_frame(&payload)),
        FRAME_HEADER => {
            let class_id = u16::from_be_bytes([payload[0], payload[1]]);
            let weight = u16::from_be_bytes([payload[2], payload[3]]);
            let mut size_bytes = [0u8; 8];
            size_bytes.copy_from_slice(&payload[4..12]);
            let mut payload = payload;
            payload.advance(12);
            Frame::Header {
                channel,
                // A non-zero weight is not a valid content header; reported
                // by the assembler as one for no class.
                class_id: if weight == 0 { class_id } else { 0 },
                body_size: u64::from_be_bytes(size_bytes),
                properties: payload.freeze(),
            }
        }
        FRAME_BODY => Frame::Body {
            channel,
            payload: payload.freeze(),
        },
        FRAME_HEARTBEAT if !payload.is_empty() => return Err(unknown_frame(&payload)),
        FRAME_HEARTBEAT => Frame::Heartbeat { channel },
        _ => return Err(unknown_frame(&payload)),
    };
    Ok(Some(frame))
}

/// Format bytes as Erlang prints a binary, as RabbitMQ's error texts do:
/// `<<"abc">>` when printable, `<<0,50,0,10>>` otherwise. Long payloads
/// are cut short.
pub fn erlang_binary(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(32)];
    let printable =
        !shown.is_empty() && shown.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'"');
    let body = if printable {
        format!("\"{}\"", String::from_utf8_lossy(shown))
    } else {
        shown
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let more = if bytes.len() > shown.len() {
        ",..."
    } else {
        ""
    };
    format!("<<{body}{more}>>")
}

#[cfg(test)]
mod tests {
    use super::encode::put_frame_header;
    use super::*;
    use amq_protocol::protocol::{channel, queue};
    use bytes::BufMut;

    pub(super) fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        put_frame_header(&mut b, frame_type, channel, payload.len());
        b.extend_from_slice(payload);
        b.put_u8(FRAME_END);
        b
    }

    #[test]
    fn method_round_trip() {
        let mut out = BytesMut::new();
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        }));
        encode_method(&mut out, 3, &m);
        match decode(&mut out, 131072).unwrap().unwrap() {
            Frame::Method { channel, method } => {
                assert_eq!(channel, 3);
                assert_eq!(*method, m);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(out.is_empty());
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut full = BytesMut::new();
        encode_method(
            &mut full,
            1,
            &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(decode(&mut part, 131072).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn bad_frame_end_is_a_frame_error() {
        let mut b = frame_bytes(FRAME_BODY, 1, b"abc");
        let last = b.len() - 1;
        b[last] = 0;
        let e = decode(&mut b, 131072).unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::FrameError);
    }

    #[test]
    fn oversized_frame_is_rejected_before_it_is_buffered() {
        let mut b = BytesMut::new();
        put_frame_header(&mut b, FRAME_BODY, 1, 5000);
        let e = decode(&mut b, 4096).unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::FrameError);
    }

    /// Found by the `frame_decoder` fuzz target: with frame_max 0
    /// (unlimited) a frame header claiming 4 GiB made the decoder reserve
    /// 4 GiB before a byte of it arrived.
    #[test]
    fn a_claimed_size_reserves_no_more_than_a_default_frame() {
        for frame_max in [0, 131_072] {
            let mut b = BytesMut::from(&[FRAME_BODY, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
            let _ = decode(&mut b, frame_max);
            assert!(b.capacity() <= 256 * 1024, "reserved {}", b.capacity());
        }
    }

    #[test]
    fn frame_error_texts_follow_rabbitmq() {
        let mut b = BytesMut::new();
        put_frame_header(&mut b, FRAME_BODY, 1, 131172);
        assert_eq!(
            decode(&mut b, 131072).unwrap_err().reply_text(),
            "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131172,131064}"
        );
        let mut b = frame_bytes(4, 0, b"abc");
        assert_eq!(
            decode(&mut b, 131072).unwrap_err().reply_text(),
            "FRAME_ERROR - type 4, all octets = <<\"abc\">>: unknown_frame"
        );
        let mut b = frame_bytes(FRAME_METHOD, 0, &[0, 50, 0, 10, 0, 0, 0, 4]);
        let last = b.len() - 1;
        b[last] = 0;
        assert_eq!(
            decode(&mut b, 131072).unwrap_err().reply_text(),
            "FRAME_ERROR - type 1, all octets = <<0,50,0,10,0,0,0,4>>: {invalid_frame_end_marker,0}"
        );
    }

    /// Random bytes, and random mutations of valid frames, never panic the
    /// decoder: every input is a frame, "need more", or an error.
    #[test]
    fn arbitrary_input_never_panics() {
        use rand::{Rng, RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut valid = BytesMut::new();
        encode_method(
            &mut valid,
            1,
            &AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: Default::default(),
            })),
        );
        encode_content(
            &mut valid,
            1,
            &[0x90, 0x00, 4, b't', b'e', b'x', b't'],
            b"hello",
            4096,
        );
        for round in 0..20_000 {
            let mut input = if round % 2 == 0 {
                let len = rng.random_range(0..64);
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                // Make the frame-type byte plausible half of the time.
                if len > 0 && rng.random_bool(0.5) {
                    v[0] = [FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT][round % 4];
                }
                BytesMut::from(&v[..])
            } else {
                let mut v = valid.to_vec();
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
                v.truncate(rng.random_range(0..=v.len()));
                BytesMut::from(&v[..])
            };
            while let Ok(Some(frame)) = decode(&mut input, 4096) {
                if let Frame::Header { properties, .. } = frame {
                    let _ = crate::message::parse(&properties);
                }
            }
        }
    }
}
