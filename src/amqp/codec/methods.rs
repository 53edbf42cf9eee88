//! Method payloads in: [`decode_method`] refuses unknown methods, a
//! non-zero prefetch-size and over-deep field tables, reads the two methods
//! sent once per message (`basic.publish`, `basic.ack`) by hand, and leaves
//! everything else to `amq-protocol`'s parser.

use amq_protocol::protocol::{AMQPClass, basic, parse_class};

use super::erlang_binary;
use crate::error::AmqpError;
use crate::fields::nesting;

pub(super) fn decode_method(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::codec::tests::frame_bytes;
    use crate::amqp::codec::{FRAME_METHOD, decode, encode_method};
    use bytes::BytesMut;

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
