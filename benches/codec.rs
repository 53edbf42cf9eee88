//! Micro-benchmarks of the AMQP frame codec, on the per-message paths.
//!
//! - `publish_in/*`: cut a `basic.publish` + content header + body off one
//!   read buffer with `codec::decode`, then (in `assemble`) feed the frames
//!   through the `Assembler` to one `Content`, as a connection does.
//! - `deliver_out/*`: hand-encode `basic.deliver` + content header + body
//!   into a reused output buffer with `codec::encode_deliver` and
//!   `codec::encode_content`, as a consumer delivery appends to the
//!   connection's outbox buffer.
//! - `properties/*`: parse and encode basic properties with a header table
//!   (`message::parse`, `message::encode`).
//!
//! Run with `cargo bench --bench codec` (about 13 s once built); add a filter
//! such as `cargo bench --bench codec -- publish_in` to run a subset.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, BasicProperties, basic};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warren::amqp::assembler::Assembler;
use warren::amqp::codec::{self, Frame};
use warren::message;

const FRAME_MAX: u32 = 131_072;
const MAX_MESSAGE: u64 = 128 * 1024 * 1024;
const BODY_SIZES: [(&str, usize); 2] = [("16B", 16), ("1KiB", 1024)];

/// Properties a typical client sends, with a small header table.
fn properties() -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-trace-id".into(),
        AMQPValue::LongString("4bf92f3577b34da6".into()),
    );
    headers.insert("attempt".into(), AMQPValue::LongInt(3));
    headers.insert("retryable".into(), AMQPValue::Boolean(true));
    headers.insert("score".into(), AMQPValue::Double(0.25));
    headers.insert(
        "tags".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString(LongString::from("a")),
            AMQPValue::LongString(LongString::from("b")),
        ])),
    );
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_priority(1)
        .with_message_id(ShortString::from("msg-000001"))
        .with_timestamp(1_700_000_000)
        .with_headers(headers)
}

/// The bytes a client sends for one publish: method, header, one body frame.
fn publish_stream(body_len: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "amq.topic".into(),
        routing_key: "orders.eu.created".into(),
        mandatory: false,
        immediate: false,
    }));
    codec::encode_method(&mut buf, 1, &publish);
    let props = message::encode(&properties());
    codec::encode_content(&mut buf, 1, &props, &vec![b'x'; body_len], FRAME_MAX);
    buf
}

/// Decode every frame in `buf`, as the connection's read loop does. The
/// emptied buffer is handed back so that freeing it (which a connection,
/// reusing its read buffer, does not do per message) is not timed.
fn decode_all(mut buf: BytesMut) -> (usize, BytesMut) {
    let mut frames = 0;
    while let Some(frame) = codec::decode(&mut buf, FRAME_MAX).unwrap() {
        black_box(&frame);
        frames += 1;
    }
    (frames, buf)
}

/// Decode and assemble one publish into its body; the buffer is handed
/// back as in `decode_all`.
fn decode_and_assemble(mut buf: BytesMut) -> (Option<Bytes>, BytesMut) {
    let mut assembler = Assembler::default();
    while let Some(frame) = codec::decode(&mut buf, FRAME_MAX).unwrap() {
        let done = match frame {
            Frame::Method { method, .. } => match *method {
                AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                    assembler.start(p).unwrap();
                    None
                }
                other => panic!("unexpected method {other:?}"),
            },
            Frame::Header {
                class_id,
                body_size,
                properties,
                ..
            } => assembler
                .header(class_id, body_size, properties, MAX_MESSAGE)
                .unwrap(),
            Frame::Body { payload, .. } => assembler.body(payload).unwrap(),
            Frame::Heartbeat { .. } => None,
        };
        if let Some(content) = done {
            return (Some(content.body), buf);
        }
    }
    (None, buf)
}

fn publish_in(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_in");
    for (label, size) in BODY_SIZES {
        let stream = publish_stream(size);
        assert_eq!(decode_all(stream.clone()).0, 3);
        assert_eq!(
            decode_and_assemble(stream.clone()).0.map(|b| b.len()),
            Some(size)
        );
        group.throughput(Throughput::Bytes(stream.len() as u64));
        // Each iteration needs a fresh copy of the read buffer; the copy is
        // made in the untimed setup, and dropped untimed with the output.
        group.bench_function(format!("decode/{label}"), |b| {
            b.iter_batched(
                || stream.clone(),
                |buf| decode_all(black_box(buf)),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("assemble/{label}"), |b| {
            b.iter_batched(
                || stream.clone(),
                |buf| decode_and_assemble(black_box(buf)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn deliver_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("deliver_out");
    let props = message::encode(&properties());
    for (label, size) in BODY_SIZES {
        let body = Bytes::from(vec![b'x'; size]);
        let mut out = BytesMut::with_capacity(64 * 1024);
        group.bench_function(label, |b| {
            let mut tag = 0u64;
            b.iter(|| {
                // The outbox reuses its buffer once the writer has taken the
                // bytes; clearing keeps the capacity, as that does.
                out.clear();
                tag += 1;
                codec::encode_deliver(
                    &mut out,
                    black_box(1),
                    black_box("amq.ctag-Jx8b3_2ZqQy6oXp9K0mWng"),
                    tag,
                    false,
                    black_box("amq.topic"),
                    black_box("orders.eu.created"),
                );
                codec::encode_content(&mut out, 1, black_box(&props), black_box(&body), FRAME_MAX);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn properties_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("properties");
    let props = properties();
    let raw = message::encode(&props);
    assert_eq!(message::parse(&raw).as_ref(), Some(&props));
    group.bench_function("parse_with_headers", |b| {
        b.iter(|| message::parse(black_box(&raw)))
    });
    group.bench_function("encode_with_headers", |b| {
        b.iter(|| message::encode(black_box(&props)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = publish_in, deliver_out, properties_codec
}
criterion_main!(benches);
