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

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{AMQPClass, basic, parse_class};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::AmqpError;
use crate::fields::nesting;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Frame type byte + channel + size before the payload, frame-end after it.
pub const FRAME_OVERHEAD: usize = 8;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

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
        buf.reserve(size + FRAME_OVERHEAD - buf.len());
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

fn decode_method(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known_method(class_id, method_id) {
        return Err(
            AmqpError::not_implemented(format!("unknown method {class_id}.{method_id}"))
                .caused_by(class_id, method_id),
        );
    }
    // amq-protocol drops basic.qos's prefetch-size, so refuse a non-zero one
    // here, as RabbitMQ does, rather than silently ignore it.
    if (class_id, method_id) == (60, 10) && payload.len() >= 8 {
        let size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if size != 0 {
            return Err(
                AmqpError::not_implemented(format!("prefetch_size!=0 ({size})")).caused_by(60, 10),
            );
        }
    }
    if let Some(offset) = nesting::method_table_offset(class_id, method_id, payload)
        && !nesting::table_depth_ok(payload.get(offset..).unwrap_or_default())
    {
        return Err(nesting_error().caused_by(class_id, method_id));
    }
    if let Some(method) = decode_hot_method(class_id, method_id, &payload[4..]) {
        return Ok(method);
    }
    match parse_class(payload) {
        Ok((&[], method)) => Ok(method),
        _ => Err(
            AmqpError::frame_error(format!("cannot decode {}", erlang_binary(&payload[4..])))
                .caused_by(class_id, method_id),
        ),
    }
}

/// The methods sent once per message — `basic.publish` and `basic.ack` —
/// read directly: through `nom`'s combinators, `basic.publish` alone cost
/// ~10 % of a 1→1 run. Anything this does not accept goes to the general
/// parser, which accepts or refuses it with its own error — so this can
/// only ever agree with it (tests check).
fn decode_hot_method(class_id: u16, method_id: u16, args: &[u8]) -> Option<AMQPClass> {
    match (class_id, method_id) {
        (60, 40) => decode_publish(args).map(basic::AMQPMethod::Publish),
        (60, 80) => decode_ack(args).map(basic::AMQPMethod::Ack),
        _ => None,
    }
    .map(AMQPClass::Basic)
}

fn decode_ack(args: &[u8]) -> Option<basic::Ack> {
    let [tag @ .., bits] = args else {
        return None;
    };
    Some(basic::Ack {
        delivery_tag: u64::from_be_bytes(tag.try_into().ok()?),
        multiple: bits & 1 != 0,
    })
}

fn decode_publish(args: &[u8]) -> Option<basic::Publish> {
    // The deprecated ticket (u16) comes first; it is not kept.
    args.get(..2)?;
    let mut pos = 2;
    let exchange = read_short_str(args, &mut pos)?.to_owned();
    let routing_key = read_short_str(args, &mut pos)?.to_owned();
    let [bits] = args.get(pos..)? else {
        return None;
    };
    Some(basic::Publish {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

/// A UTF-8 short string at `*pos` (its length byte first), moving past it;
/// `None` if it is cut short or not UTF-8 (as `amq-protocol` refuses it).
pub fn read_short_str<'a>(raw: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    let len = usize::from(*raw.get(*pos)?);
    let s = std::str::from_utf8(raw.get(*pos + 1..*pos + 1 + len)?).ok()?;
    *pos += 1 + len;
    Some(s)
}

pub fn nesting_error() -> AmqpError {
    AmqpError::frame_error(format!(
        "field table nested deeper than {} levels",
        nesting::MAX_DEPTH
    ))
}

fn is_known_method(class_id: u16, method_id: u16) -> bool {
    match class_id {
        10 => matches!(
            method_id,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method_id, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method_id, 10 | 11),
        40 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method_id,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method_id, 10 | 11),
        90 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// Append a method frame.
pub fn encode_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    // Methods other than the per-message ones are rare; going through a Vec
    // keeps amq-protocol's generator as the single source of truth for them.
    let ctx = WriteContext::from(Vec::with_capacity(64));
    let payload = match amq_protocol::protocol::gen_class(method)(ctx) {
        Ok(ctx) => ctx.into_inner().0,
        Err(e) => {
            // Only reachable for a value Warren built itself (e.g. a table
            // too large to serialise); never for peer input.
            tracing::error!("cannot encode {method:?}: {e:?}");
            return;
        }
    };
    put_frame_header(out, FRAME_METHOD, channel, payload.len());
    out.extend_from_slice(&payload);
    out.put_u8(FRAME_END);
}

/// Append a content header and the body frames for one message.
pub fn encode_content(
    out: &mut BytesMut,
    channel: u16,
    properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    put_frame_header(out, FRAME_HEADER, channel, 12 + properties.len());
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.extend_from_slice(properties);
    out.put_u8(FRAME_END);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        put_frame_header(out, FRAME_BODY, channel, part.len());
        out.extend_from_slice(part);
        out.put_u8(FRAME_END);
    }
}

pub fn encode_heartbeat(out: &mut BytesMut) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// `basic.deliver` (60, 60).
pub fn encode_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let size = 4 + 1 + consumer_tag.len() + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len();
    put_frame_header(out, FRAME_METHOD, channel, size);
    out.put_u16(60);
    out.put_u16(60);
    put_shortstr(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    out.put_u8(FRAME_END);
}

/// `basic.get-ok` (60, 71).
pub fn encode_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) {
    let size = 4 + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len() + 4;
    put_frame_header(out, FRAME_METHOD, channel, size);
    out.put_u16(60);
    out.put_u16(71);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    out.put_u32(message_count);
    out.put_u8(FRAME_END);
}

/// `basic.return` (60, 50).
pub fn encode_return(
    out: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &str,
    exchange: &str,
    routing_key: &str,
) {
    let size = 4 + 2 + 1 + reply_text.len() + 1 + exchange.len() + 1 + routing_key.len();
    put_frame_header(out, FRAME_METHOD, channel, size);
    out.put_u16(60);
    out.put_u16(50);
    out.put_u16(reply_code);
    put_shortstr(out, reply_text);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    out.put_u8(FRAME_END);
}

/// A publisher confirm: `basic.ack` (60, 80) or `basic.nack` (60, 120).
pub fn encode_confirm(out: &mut BytesMut, channel: u16, ack: bool, tag: u64, multiple: bool) {
    put_frame_header(out, FRAME_METHOD, channel, 4 + 8 + 1);
    out.put_u16(60);
    out.put_u16(if ack { 80 } else { 120 });
    out.put_u64(tag);
    out.put_u8(multiple as u8);
    out.put_u8(FRAME_END);
}

fn put_frame_header(out: &mut BytesMut, frame_type: u8, channel: u16, size: usize) {
    out.reserve(size + FRAME_OVERHEAD);
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(size as u32);
}

/// Short strings are at most 255 bytes; every caller passes names that were
/// validated (or received) as short strings, so truncation never happens in
/// practice but keeps the frame well-formed if it did.
fn put_shortstr(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{channel, queue};

    fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8]) -> BytesMut {
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

    #[test]
    fn unknown_method_is_not_implemented() {
        let mut b = frame_bytes(FRAME_METHOD, 1, &[0, 99, 0, 10]);
        let e = decode(&mut b, 131072).unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::NotImplemented);
    }

    #[test]
    fn malformed_and_trailing_arguments_are_frame_errors() {
        // queue.declare cut short after the queue name
        let mut b = frame_bytes(
            FRAME_METHOD,
            1,
            &[0, 50, 0, 10, 0, 0, 3, b'a', b'b', b'c', 0],
        );
        let e = decode(&mut b, 131072).unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::FrameError);
        assert_eq!((e.class_id, e.method_id), (50, 10));
        // channel.open with garbage after its one argument
        let mut b = frame_bytes(FRAME_METHOD, 1, &[0, 20, 0, 10, 0, 9, 9]);
        assert!(decode(&mut b, 131072).is_err());
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

    #[test]
    fn content_is_split_at_frame_max() {
        let mut out = BytesMut::new();
        let body = vec![7u8; 10_000];
        encode_content(&mut out, 1, &[0, 0], &body, 4096);
        let mut got = Vec::new();
        match decode(&mut out, 4096).unwrap().unwrap() {
            Frame::Header { body_size, .. } => assert_eq!(body_size, 10_000),
            other => panic!("unexpected {other:?}"),
        }
        while let Some(f) = decode(&mut out, 4096).unwrap() {
            match f {
                Frame::Body { payload, .. } => {
                    assert!(payload.len() <= 4096 - 8);
                    got.extend_from_slice(&payload);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, body);
    }

    #[test]
    fn hand_written_deliver_matches_amq_protocol() {
        use amq_protocol::protocol::basic;
        let mut ours = BytesMut::new();
        encode_deliver(&mut ours, 2, "ctag", 42, true, "ex", "rk");
        let mut theirs = BytesMut::new();
        encode_method(
            &mut theirs,
            2,
            &AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
            })),
        );
        assert_eq!(ours, theirs);

        let mut ours = BytesMut::new();
        encode_get_ok(&mut ours, 2, 7, false, "ex", "rk", 3);
        let mut theirs = BytesMut::new();
        encode_method(
            &mut theirs,
            2,
            &AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 7,
                redelivered: false,
                exchange: "ex".into(),
                routing_key: "rk".into(),
                message_count: 3,
            })),
        );
        assert_eq!(ours, theirs);

        let mut ours = BytesMut::new();
        encode_return(&mut ours, 2, 312, "NO_ROUTE", "ex", "rk");
        let mut theirs = BytesMut::new();
        encode_method(
            &mut theirs,
            2,
            &AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
            })),
        );
        assert_eq!(ours, theirs);

        let mut ours = BytesMut::new();
        encode_confirm(&mut ours, 2, true, 9, true);
        let mut theirs = BytesMut::new();
        encode_method(
            &mut theirs,
            2,
            &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 9,
                multiple: true,
            })),
        );
        assert_eq!(ours, theirs);
    }

    #[test]
    fn publish_fast_path_agrees_with_the_parser() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(40);
        let mut valid = BytesMut::new();
        encode_method(
            &mut valid,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "amq.topic".into(),
                routing_key: "a.b.ç".into(),
                mandatory: true,
                immediate: false,
            })),
        );
        // The method payload: after the 7-byte frame header, before the end.
        let payload = valid[7..valid.len() - 1].to_vec();
        let mut cases = vec![payload.clone()];
        for cut in 4..payload.len() {
            cases.push(payload[..cut].to_vec());
        }
        for _ in 0..20_000 {
            let mut c = payload.clone();
            if rng.random_range(0..4) == 0 {
                c.push(rng.random());
            }
            for _ in 0..rng.random_range(1..3) {
                let i = rng.random_range(4..c.len());
                c[i] = rng.random();
            }
            cases.push(c);
        }
        assert_hot_path_agrees(&cases);
    }

    #[test]
    fn ack_fast_path_agrees_with_the_parser() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(80);
        let mut valid = BytesMut::new();
        encode_method(
            &mut valid,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 0x0102_0304_0506_0708,
                multiple: true,
            })),
        );
        let payload = valid[7..valid.len() - 1].to_vec();
        let mut cases = vec![payload.clone()];
        for cut in 4..payload.len() {
            cases.push(payload[..cut].to_vec());
        }
        for _ in 0..5_000 {
            let mut c = payload.clone();
            if rng.random_range(0..4) == 0 {
                c.push(rng.random());
            }
            let i = rng.random_range(4..c.len());
            c[i] = rng.random();
            cases.push(c);
        }
        assert_hot_path_agrees(&cases);
    }

    /// Every payload the hot-method path decodes, the parser decodes the
    /// same; most of `cases` must take the hot path.
    fn assert_hot_path_agrees(cases: &[Vec<u8>]) {
        let mut fast = 0;
        for c in cases {
            let ids = (
                u16::from_be_bytes([c[0], c[1]]),
                u16::from_be_bytes([c[2], c[3]]),
            );
            let Some(hot) = decode_hot_method(ids.0, ids.1, &c[4..]) else {
                continue;
            };
            fast += 1;
            match parse_class(&c[..]) {
                Ok((&[], parsed)) => {
                    assert_eq!(format!("{hot:?}"), format!("{parsed:?}"), "on {c:?}")
                }
                other => panic!("hot path took {c:?}, parser says {other:?}"),
            }
        }
        assert!(
            fast > cases.len() / 4,
            "only {fast} cases took the hot path"
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

    #[test]
    fn deeply_nested_tables_do_not_overflow_the_stack() {
        // queue.declare whose arguments nest tables as deep as a frame allows.
        let depth = 18_000usize;
        let mut table: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut outer = vec![1u8, b'k', b'F'];
            outer.extend_from_slice(&(table.len() as u32).to_be_bytes());
            outer.extend_from_slice(&table);
            table = outer;
        }
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
        payload.extend_from_slice(&table);
        let mut b = frame_bytes(FRAME_METHOD, 1, &payload);
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || decode(&mut b, 0).map(|_| ()))
            .unwrap();
        let result = handle.join().expect("decoding overflowed a 2 MiB stack");
        assert_eq!(
            result.unwrap_err().code,
            crate::error::ReplyCode::FrameError
        );
    }
}
