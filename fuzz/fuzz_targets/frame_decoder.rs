//! The frame decoder (`amqp::codec::decode`) on arbitrary bytes: it never
//! panics, and cutting the input at every byte — as a socket may deliver
//! it — changes nothing: the same frames, then the same error or the same
//! unfinished tail. Every frame-size limit is tried, 0 (unlimited) too,
//! which must not make it reserve what a frame header merely claims.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren::amqp::codec;

/// The frames of `chunks` fed one after another, then the error that
/// stopped decoding or the bytes left over.
fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>, frame_max: u32) -> (Vec<String>, String) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec::decode(&mut buf, frame_max) {
                Ok(Some(frame)) => frames.push(format!("{frame:?}")),
                Ok(None) => break,
                Err(e) => return (frames, format!("error {}", e.reply_text())),
            }
        }
    }
    (frames, format!("left {:?}", &buf[..]))
}

fuzz_target!(|data: &[u8]| {
    for frame_max in [131_072, 4096, 0] {
        let whole = decode(std::iter::once(data), frame_max);
        let bytewise = decode(data.chunks(1), frame_max);
        assert_eq!(whole, bytewise, "frame_max {frame_max}");
    }
});
