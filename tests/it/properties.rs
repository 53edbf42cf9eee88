//! Message properties travel byte-exact: all 14 basic properties and a
//! header table holding every AMQP field type, in an order a sorted map
//! would not keep, come out exactly as they went in.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, basic, queue};

use crate::common::*;
use crate::raw::*;

fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A field table with one entry of every type RabbitMQ knows, keys in
/// descending order.
fn every_field_type() -> Vec<u8> {
    let mut t = Vec::new();
    let mut entry = |key: &str, tag: u8, value: &[u8]| {
        shortstr(&mut t, key);
        t.push(tag);
        t.extend_from_slice(value);
    };
    entry("z-void", b'V', &[]);
    entry("y-bytes", b'x', &[0, 0, 0, 3, 0xff, 0x00, 0x7f]);
    let mut nested = Vec::new();
    shortstr(&mut nested, "inner");
    nested.push(b'I');
    nested.extend_from_slice(&7i32.to_be_bytes());
    let mut table = (nested.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(&nested);
    entry("x-table", b'F', &table);
    entry("w-timestamp", b'T', &1_700_000_000u64.to_be_bytes());
    let array = [&[0u8, 0, 0, 7][..], &[b't', 1], &[b'S', 0, 0, 0, 1, b'a']].concat();
    let mut arr = vec![];
    arr.extend_from_slice(&((array.len() - 4) as u32).to_be_bytes());
    arr.extend_from_slice(&array[4..]);
    entry("v-array", b'A', &arr);
    let mut ls = Vec::new();
    longstr(&mut ls, "long string \u{e9}".as_bytes());
    entry("u-longstr", b'S', &ls);
    entry("t-decimal", b'D', &[2, 0, 0, 0x30, 0x39]);
    entry("s-double", b'd', &1.5f64.to_be_bytes());
    entry("r-float", b'f', &2.5f32.to_be_bytes());
    entry("q-long", b'l', &(-5i64).to_be_bytes());
    entry("p-uint", b'i', &4_000_000_000u32.to_be_bytes());
    entry("o-int", b'I', &(-70_000i32).to_be_bytes());
    entry("n-ushort", b'u', &60_000u16.to_be_bytes());
    entry("m-short", b's', &(-300i16).to_be_bytes());
    entry("l-ubyte", b'B', &[200]);
    entry("k-byte", b'b', &[0x85]);
    entry("j-bool", b't', &[1]);
    let mut out = (t.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&t);
    out
}

/// Property flags with all 14 properties set, then the property list.
fn all_properties() -> Vec<u8> {
    let mut p = vec![0xff, 0xfc];
    shortstr(&mut p, "application/json");
    shortstr(&mut p, "gzip");
    p.extend_from_slice(&every_field_type());
    p.push(2); // delivery-mode
    p.push(7); // priority
    shortstr(&mut p, "corr-1");
    shortstr(&mut p, "reply.here");
    shortstr(&mut p, "60000");
    shortstr(&mut p, "msg-1");
    p.extend_from_slice(&1_700_000_001u64.to_be_bytes());
    shortstr(&mut p, "type-x");
    shortstr(&mut p, "guest");
    shortstr(&mut p, "app-y");
    shortstr(&mut p, "cluster-z");
    p
}

#[tokio::test]
async fn all_properties_and_every_field_type_round_trip_byte_exact() {
    let server = start().await;
    let mut c = RawClient::open(server.amqp_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "props".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        })),
    )
    .await;
    c.next_method().await;
    let props = all_properties();
    c.send(&publish(1, "", "props")).await;
    c.send(&header_frame(1, 4, &props)).await;
    c.send(&body_frame(1, b"body")).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "props".into(),
            no_ack: true,
        })),
    )
    .await;
    match c.next_method().await {
        (1, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))) => {}
        other => panic!("expected get-ok, got {other:?}"),
    }
    // Read the content header frame raw: type, channel, size, then payload.
    let head = c.read_raw(7).await;
    assert_eq!(head[0], 2, "content header frame");
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let rest = c.read_raw(size + 1).await;
    let payload = &rest[..size];
    assert_eq!(&payload[..4], &[0, 60, 0, 0]);
    assert_eq!(u64::from_be_bytes(payload[4..12].try_into().unwrap()), 4);
    assert_eq!(
        &payload[12..],
        props.as_slice(),
        "properties changed in transit"
    );
    match c.next_frame().await {
        Some(AMQPFrame::Body(1, body)) => assert_eq!(body, b"body"),
        other => panic!("expected the body, got {other:?}"),
    }
}
