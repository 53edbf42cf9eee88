//! One consumer: one connection, one channel, one task.
//!
//! Each read fills the buffer with as many frames as the socket has; the
//! deliveries in it are cut out without allocating (only the delivery tag
//! and the body's timestamp are looked at), their latencies are recorded
//! under one lock, and the acks they call for are appended to the write
//! buffer and go out in one write after the read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::FieldTable;
use anyhow::{Result, bail};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::clock;
use crate::conn::{
    CHANNEL, Conn, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, describe,
    parse_method, peek_frame, short,
};
use crate::stats::Shared;
use crate::{Phase, heartbeat_timer};

pub struct ConsumerCfg {
    pub id: usize,
    pub queue: String,
    pub auto_ack: bool,
    pub prefetch: u16,
    pub multi_ack_every: u32,
    /// basic.consume's arguments (`--consumer-args`).
    pub arguments: FieldTable,
}

/// basic.qos and basic.consume; once this returns the consumer is
/// registered and messages may be published.
pub async fn prepare(conn: &mut Conn, cfg: &ConsumerCfg) -> Result<()> {
    if !cfg.auto_ack && cfg.prefetch > 0 {
        match conn
            .rpc(&AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: cfg.prefetch,
                global: false,
            })))
            .await?
        {
            AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => {}
            other => bail!("expected basic.qos-ok, got {}", describe(&other)),
        }
    }
    match conn
        .rpc(&AMQPClass::Basic(basic::AMQPMethod::Consume(
            basic::Consume {
                queue: short(&cfg.queue),
                consumer_tag: short(&format!("warren-perf-{}", cfg.id)),
                no_local: false,
                no_ack: cfg.auto_ack,
                exclusive: false,
                nowait: false,
                arguments: cfg.arguments.clone(),
            },
        )))
        .await?
    {
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => Ok(()),
        other => bail!("expected basic.consume-ok, got {}", describe(&other)),
    }
}

/// Receive (and ack) until told to stop, then ack what is left and close.
pub async fn run(
    mut conn: Conn,
    cfg: ConsumerCfg,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<crate::Phase>,
) -> Result<()> {
    let mut st = Receiver::new(&cfg);
    let mut slow = Vec::new();
    let mut latencies = Vec::new();
    let mut hb = heartbeat_timer(conn.heartbeat);
    loop {
        if conn.rbuf.capacity() - conn.rbuf.len() < 16 * 1024 {
            conn.rbuf.reserve(256 * 1024);
        }
        tokio::select! {
            biased;
            r = conn.rd.read_buf(&mut conn.rbuf) => {
                if r? == 0 {
                    bail!("the broker closed the TCP connection without connection.close");
                }
                let now = clock::now_ns();
                latencies.clear();
                let used = st.scan(&conn.rbuf, conn.frame_max, now, &mut conn.wbuf, &mut latencies, &mut slow)?;
                bytes::Buf::advance(&mut conn.rbuf, used);
                if st.received > 0 {
                    shared.received.fetch_add(st.received, Ordering::Relaxed);
                    st.received = 0;
                }
                Shared::record_latencies(&shared.latency, &latencies);
                for (channel, method) in slow.drain(..) {
                    if let Some(m) = conn.control(channel, method).await? {
                        bail!("unexpected {} from the broker", describe(&m));
                    }
                }
            }
            r = conn.wr.write_some(&conn.wbuf[conn.wpos..]), if conn.pending() > 0 || conn.wr.needs_flush() => {
                let n = r?;
                conn.written(n);
            }
            r = async { phase.wait_for(|p| *p >= Phase::StopConsumers).await.map(|_| ()) } => {
                r?;
                break;
            }
            _ = hb.tick(), if conn.heartbeat > 0 => conn.send_heartbeat(),
        }
    }
    st.flush_acks(&mut conn.wbuf);
    // The measurement is complete; a slow or failed close is not worth
    // failing the run for.
    if let Err(e) = conn.close().await {
        eprintln!("warning: consumer {}: {e:#}", cfg.id);
    }
    Ok(())
}

/// Where the consumer is in the frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A method (basic.deliver or anything else).
    Method,
    /// The content header of a delivery.
    Header,
    /// Body frames: bytes still to come.
    Body(u64),
}

struct Receiver {
    channel: u16,
    auto_ack: bool,
    multi_ack_every: u32,
    expect: Expect,
    /// Delivery tag of the message being received.
    tag: u64,
    /// Timestamp from its body (0 = none yet / not ours).
    ts: u64,
    first_body: bool,
    /// Messages received but not yet acked (multi-ack).
    unacked: u32,
    /// Highest tag received (for the final multi-ack).
    last_tag: u64,
    /// Messages completed since the counter was last folded into Shared.
    received: u64,
}

impl Receiver {
    fn new(cfg: &ConsumerCfg) -> Self {
        Receiver {
            channel: CHANNEL,
            auto_ack: cfg.auto_ack,
            multi_ack_every: cfg.multi_ack_every,
            expect: Expect::Method,
            tag: 0,
            ts: 0,
            first_body: false,
            unacked: 0,
            last_tag: 0,
            received: 0,
        }
    }

    /// Consume the complete frames at the front of `buf`; returns the bytes
    /// used. Latencies (ns, against `now`) go to `latencies`, acks to `out`,
    /// other methods to `slow`.
    fn scan(
        &mut self,
        buf: &[u8],
        frame_max: u32,
        now: u64,
        out: &mut Vec<u8>,
        latencies: &mut Vec<u64>,
        slow: &mut Vec<(u16, AMQPClass)>,
    ) -> Result<usize> {
        let mut pos = 0;
        while let Some((ty, channel, size)) = peek_frame(&buf[pos..], frame_max)? {
            let p = &buf[pos + 7..pos + 7 + size];
            match (ty, self.expect) {
                (FRAME_METHOD, Expect::Method) => {
                    if size >= 5 && p[..4] == [0, 60, 0, 60] {
                        let off = 5 + p[4] as usize;
                        if size < off + 8 {
                            bail!("truncated basic.deliver from the broker");
                        }
                        let mut tag = [0u8; 8];
                        tag.copy_from_slice(&p[off..off + 8]);
                        self.tag = u64::from_be_bytes(tag);
                        self.expect = Expect::Header;
                    } else {
                        slow.push((channel, parse_method(p)?));
                    }
                }
                (FRAME_HEADER, Expect::Header) if size >= 12 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&p[4..12]);
                    let body_size = u64::from_be_bytes(n);
                    self.ts = 0;
                    self.first_body = true;
                    if body_size == 0 {
                        self.complete(now, out, latencies);
                    } else {
                        self.expect = Expect::Body(body_size);
                    }
                }
                (FRAME_BODY, Expect::Body(left)) => {
                    if self.first_body {
                        self.first_body = false;
                        if let Some(ts) = crate::producer::body_timestamp(p) {
                            self.ts = ts;
                        }
                    }
                    let left = left.saturating_sub(size as u64);
                    if left == 0 {
                        self.complete(now, out, latencies);
                    } else {
                        self.expect = Expect::Body(left);
                    }
                }
                (FRAME_HEARTBEAT, _) => {}
                (ty, expect) => bail!(
                    "unexpected frame (type {ty}, {size} bytes) from the broker while expecting {expect:?}"
                ),
            }
            pos += size + 8;
        }
        Ok(pos)
    }

    fn complete(&mut self, now: u64, out: &mut Vec<u8>, latencies: &mut Vec<u64>) {
        self.expect = Expect::Method;
        self.received += 1;
        // Messages not stamped by warren-perf (or from a clock far off) carry
        // no usable timestamp.
        if self.ts != 0 && self.ts <= now + 1_000_000_000 {
            latencies.push(now.saturating_sub(self.ts));
        }
        self.last_tag = self.tag;
        if self.auto_ack {
            return;
        }
        if self.multi_ack_every <= 1 {
            put_ack(out, self.channel, self.tag, false);
        } else {
            self.unacked += 1;
            if self.unacked >= self.multi_ack_every {
                put_ack(out, self.channel, self.tag, true);
                self.unacked = 0;
            }
        }
    }

    /// Ack whatever a multi-ack consumer still holds.
    fn flush_acks(&mut self, out: &mut Vec<u8>) {
        if !self.auto_ack && self.unacked > 0 {
            put_ack(out, self.channel, self.last_tag, true);
            self.unacked = 0;
        }
    }
}

/// basic.ack (60, 80).
fn put_ack(out: &mut Vec<u8>, channel: u16, tag: u64, multiple: bool) {
    out.push(FRAME_METHOD);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&[0, 60, 0, 80]);
    out.extend_from_slice(&tag.to_be_bytes());
    out.push(u8::from(multiple));
    out.push(FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use warren::amqp::codec::{self, Frame};

    fn cfg(auto_ack: bool, every: u32) -> ConsumerCfg {
        ConsumerCfg {
            id: 0,
            queue: "q".into(),
            auto_ack,
            prefetch: 0,
            multi_ack_every: every,
            arguments: FieldTable::default(),
        }
    }

    fn delivery(b: &mut BytesMut, tag: u64, ts: u64, size: usize, frame_max: u32) {
        codec::encode_deliver(b, 1, "ctag", tag, false, "", "q");
        let mut body = vec![0u8; size];
        body[..8].copy_from_slice(&ts.to_be_bytes());
        codec::encode_content(b, 1, &[0, 0], &body, frame_max);
    }

    fn acks(out: &[u8]) -> Vec<(u64, bool)> {
        let mut b = BytesMut::from(out);
        let mut v = Vec::new();
        while let Some(f) = codec::decode(&mut b, 131_072).unwrap() {
            match f {
                Frame::Method { method, .. } => match *method {
                    AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                        v.push((a.delivery_tag, a.multiple))
                    }
                    other => panic!("unexpected {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        v
    }

    #[test]
    fn deliveries_latencies_and_single_acks() {
        let mut b = BytesMut::new();
        delivery(&mut b, 1, 1_000, 16, 131_072);
        delivery(&mut b, 2, 2_000, 10_000, 4096); // several body frames
        codec::encode_heartbeat(&mut b);
        let whole = b.len();
        delivery(&mut b, 3, 3_000, 16, 131_072);
        let mut r = Receiver::new(&cfg(false, 1));
        let (mut out, mut lat, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        // Everything but the last byte: the third delivery stays incomplete.
        let used = r
            .scan(
                &b[..b.len() - 1],
                131_072,
                10_000,
                &mut out,
                &mut lat,
                &mut slow,
            )
            .unwrap();
        assert!(used > whole);
        assert_eq!(r.received, 2);
        assert_eq!(lat, [9_000, 8_000]);
        assert_eq!(acks(&out), [(1, false), (2, false)]);
        let used2 = r
            .scan(&b[used..], 131_072, 10_000, &mut out, &mut lat, &mut slow)
            .unwrap();
        assert_eq!(used + used2, b.len());
        assert_eq!(r.received, 3);
        assert!(slow.is_empty());
    }

    #[test]
    fn multi_ack_and_final_flush() {
        let mut b = BytesMut::new();
        for tag in 1..=7 {
            delivery(&mut b, tag, 5, 16, 131_072);
        }
        let mut r = Receiver::new(&cfg(false, 3));
        let (mut out, mut lat, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        r.scan(&b, 131_072, 10, &mut out, &mut lat, &mut slow)
            .unwrap();
        assert_eq!(acks(&out), [(3, true), (6, true)]);
        r.flush_acks(&mut out);
        assert_eq!(acks(&out), [(3, true), (6, true), (7, true)]);
    }

    #[test]
    fn auto_ack_sends_nothing_and_foreign_messages_have_no_latency() {
        let mut b = BytesMut::new();
        delivery(&mut b, 1, 0, 16, 131_072);
        codec::encode_deliver(&mut b, 1, "ctag", 2, false, "", "q");
        codec::encode_content(&mut b, 1, &[0, 0], &[], 131_072);
        let mut r = Receiver::new(&cfg(true, 1));
        let (mut out, mut lat, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        r.scan(&b, 131_072, 10, &mut out, &mut lat, &mut slow)
            .unwrap();
        assert_eq!(r.received, 2);
        assert!(out.is_empty() && lat.is_empty());
        r.flush_acks(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn other_methods_go_to_the_slow_path() {
        let mut b = BytesMut::new();
        codec::encode_method(
            &mut b,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: "ctag".into(),
                nowait: true,
            })),
        );
        let mut r = Receiver::new(&cfg(true, 1));
        let (mut out, mut lat, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        r.scan(&b, 131_072, 10, &mut out, &mut lat, &mut slow)
            .unwrap();
        assert_eq!(slow.len(), 1);
        // a body frame out of place is an error
        let mut b = BytesMut::new();
        codec::encode_content(&mut b, 1, &[0, 0], &[1], 131_072);
        assert!(
            r.scan(&b, 131_072, 10, &mut out, &mut lat, &mut slow)
                .is_err()
        );
    }
}
