//! Method frames (`amqp::codec`'s method decoding, with its hand-written
//! `basic.publish` / `basic.ack` fast path) against amq-protocol's parser,
//! differentially: whatever Warren accepts, amq-protocol parses from the
//! same bytes to the same method, and it encodes and decodes back to
//! itself. Warren may refuse more (unknown methods, a non-zero
//! prefetch-size, over-deep tables), never accept differently.

#![no_main]

use amq_protocol::protocol::{AMQPClass, parse_class};
use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use warren::amqp::codec::{self, Frame};

fn method_frame(payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(codec::FRAME_METHOD);
    b.put_u16(1);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.put_u8(codec::FRAME_END);
    b
}

/// A method's wire form: compared instead of the methods themselves, since
/// a float argument may be NaN, which equals nothing.
fn encoded(method: &AMQPClass) -> BytesMut {
    let mut b = BytesMut::new();
    codec::encode_method(&mut b, 1, method);
    b
}

fuzz_target!(|payload: &[u8]| {
    let Ok(Some(frame)) = codec::decode(&mut method_frame(payload), 0) else {
        return;
    };
    let Frame::Method { method, .. } = frame else {
        panic!("a method frame decoded as {frame:?}");
    };
    match parse_class(payload) {
        Ok((rest, general)) => {
            assert!(
                rest.is_empty(),
                "Warren accepted {} trailing bytes",
                rest.len()
            );
            assert_eq!(
                encoded(&method),
                encoded(&general),
                "{method:?} vs {general:?}"
            );
        }
        Err(e) => panic!("Warren accepted {method:?}; amq-protocol refused it: {e:?}"),
    }
    let mut again = encoded(&method);
    match codec::decode(&mut again, 0) {
        Ok(Some(Frame::Method { method: back, .. })) => {
            assert_eq!(
                encoded(&back),
                encoded(&method),
                "{method:?} came back as {back:?}"
            );
        }
        other => panic!("{method:?} encoded does not decode: {other:?}"),
    }
});
