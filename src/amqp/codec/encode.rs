//! Frames out: the `encode_*` functions append complete frames to a
//! connection's output buffer. The per-message methods (`basic.deliver`,
//! `basic.get-ok`, `basic.return`, publisher confirms) are written by hand;
//! any other method goes through `amq-protocol`'s generator.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::AMQPClass;
use bytes::{BufMut, BytesMut};

use super::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD};

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

pub(super) fn put_frame_header(out: &mut BytesMut, frame_type: u8, channel: u16, size: usize) {
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
    use crate::amqp::codec::{Frame, decode};

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
}
