//! One producer: one connection, one channel, one task.
//!
//! The publish frames (basic.publish method, content header, body frames)
//! are pre-encoded once into a template; per message only the timestamp and
//! sequence number in the body (and, with `--expiration-spread`, the digits
//! of the expiration property) are filled in. Messages are appended to the
//! connection's write buffer until it holds about `--write-batch` bytes (or
//! the confirm window, the rate schedule or `--pmessages` says stop), and the
//! buffer goes out in one write. Inbound confirms and returns are cut off the
//! read buffer without allocating.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, BasicProperties, basic, confirm};
use amq_protocol::types::AMQPValue;
use anyhow::{Result, bail};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::{ROUTE_HEADER, Route};
use crate::clock;
use crate::conn::{
    CHANNEL, Conn, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, describe,
    parse_method, peek_frame,
};
use crate::pacer::Pacer;
use crate::stats::Shared;
use crate::{Phase, heartbeat_timer};

pub struct ProducerCfg {
    pub id: usize,
    pub exchange: String,
    pub route: Route,
    pub size: usize,
    /// `--json-body`: JSON documents instead of a byte pattern.
    pub json_body: bool,
    /// `--message-properties`; delivery-mode and the route header are added.
    pub properties: BasicProperties,
    pub expiration_spread: Option<ExpirationSpread>,
    pub persistent: bool,
    pub mandatory: bool,
    pub confirm: u32,
    pub rate: Option<f64>,
    pub pmessages: Option<u64>,
    pub write_batch: usize,
    pub drain_timeout: Duration,
}

/// Put confirms on the channel (if asked for); done before the run starts.
pub async fn prepare(conn: &mut Conn, cfg: &ProducerCfg) -> Result<()> {
    if cfg.confirm > 0 {
        match conn
            .rpc(&AMQPClass::Confirm(confirm::AMQPMethod::Select(
                confirm::Select { nowait: false },
            )))
            .await?
        {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
            other => bail!("expected confirm.select-ok, got {}", describe(&other)),
        }
    }
    Ok(())
}

/// Publish until told to stop (or `--pmessages` is reached), wait for the
/// outstanding confirms, close.
pub async fn run(
    mut conn: Conn,
    cfg: ProducerCfg,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> Result<()> {
    phase.wait_for(|p| *p >= Phase::Go).await?;
    let mut props = cfg
        .properties
        .clone()
        .with_delivery_mode(if cfg.persistent { 2 } else { 1 });
    if let Some(h) = &cfg.route.header {
        let mut t = props.headers().clone().unwrap_or_default();
        t.insert(
            ROUTE_HEADER.into(),
            AMQPValue::LongString(h.as_str().into()),
        );
        props = props.with_headers(t);
    }
    let (raw_props, expiration_at) = match cfg.expiration_spread {
        Some(spread) => {
            let (raw, at) = spread.encode_properties(&props)?;
            (raw, Some(at))
        }
        None => (warren::message::encode(&props), None),
    };
    let mut tpl = PublishTemplate::new(
        CHANNEL,
        &cfg.exchange,
        &cfg.route.routing_key,
        cfg.mandatory,
        &raw_props,
        cfg.size,
        conn.frame_max,
    );
    if let (Some(spread), Some(at)) = (cfg.expiration_spread, expiration_at) {
        tpl = tpl.with_expiration_spread(spread, at);
    }
    if cfg.json_body {
        tpl = tpl.with_json_body()?;
    }
    let per_write = (cfg.write_batch / tpl.wire_size).max(1) as u64;
    let seq_base = (cfg.id as u64) << MESSAGE_NUMBER_BITS;
    let mut outstanding = Outstanding::new();
    let mut pacer = cfg.rate.map(|r| Pacer::new(r, clock::now_ns()));
    let mut inbound = Inbound::default();
    let mut resolved = Vec::new();
    let mut slow = Vec::new();
    let mut latencies = Vec::new();
    let mut hb = heartbeat_timer(conn.heartbeat);
    let mut n: u64 = 0;
    let mut stopping = false;
    let mut deadline = Instant::now();
    let mut barrier = Barrier::NotSent;
    loop {
        let mut paced_wait = false;
        if !stopping {
            let mut budget = if conn.pending() >= cfg.write_batch {
                0
            } else {
                per_write
            };
            if let Some(max) = cfg.pmessages {
                budget = budget.min(max - n);
            }
            if cfg.confirm > 0 {
                budget = budget.min(u64::from(cfg.confirm).saturating_sub(outstanding.len()));
            }
            let now = clock::now_ns();
            if let Some(p) = pacer.as_mut()
                && budget > 0
            {
                let due = p.available(now);
                paced_wait = due == 0;
                budget = budget.min(due);
                p.record(budget);
            }
            if budget > 0 {
                conn.compact();
                conn.wbuf.reserve(budget as usize * tpl.wire_size);
                for _ in 0..budget {
                    tpl.encode(&mut conn.wbuf, now, seq_base | n);
                    n += 1;
                    if cfg.confirm > 0 {
                        outstanding.push(now);
                    }
                }
                shared.sent.fetch_add(budget, Ordering::Relaxed);
            }
            if cfg.pmessages.is_some_and(|max| n >= max) {
                stopping = true;
                deadline = Instant::now() + cfg.drain_timeout;
                shared.producer_stopped();
            }
        }
        if stopping && conn.pending() == 0 && outstanding.len() == 0 {
            // A round trip on the channel after the last publish: once its
            // reply is in, every basic.return for earlier publishes is too
            // (the broker answers a channel's methods in order).
            match barrier {
                Barrier::NotSent => {
                    conn.send_method(
                        CHANNEL,
                        &AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                            prefetch_count: 0,
                            global: false,
                        })),
                    );
                    barrier = Barrier::Sent;
                    continue;
                }
                Barrier::Sent => {}
                Barrier::Done => break,
            }
        }
        let next_due = match &pacer {
            Some(p) if paced_wait => clock::instant_at(p.next_due_ns()),
            _ => deadline,
        };
        if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
            conn.rbuf.reserve(64 * 1024);
        }
        tokio::select! {
            biased;
            r = conn.rd.read_buf(&mut conn.rbuf) => {
                if r? == 0 {
                    bail!("the broker closed the TCP connection without connection.close");
                }
                scan(
                    &conn.rbuf,
                    conn.frame_max,
                    &mut inbound,
                    &mut outstanding,
                    &mut resolved,
                    &mut slow,
                )
                .map(|used| bytes::Buf::advance(&mut conn.rbuf, used))?;
                if inbound.acked + inbound.nacked + inbound.returned > 0 {
                    shared.confirmed.fetch_add(inbound.acked, Ordering::Relaxed);
                    shared.nacked.fetch_add(inbound.nacked, Ordering::Relaxed);
                    shared.returned.fetch_add(inbound.returned, Ordering::Relaxed);
                    inbound.acked = 0;
                    inbound.nacked = 0;
                    inbound.returned = 0;
                }
                if !resolved.is_empty() {
                    let now = clock::now_ns();
                    latencies.clear();
                    latencies.extend(resolved.drain(..).map(|ts| now.saturating_sub(ts)));
                    Shared::record_latencies(&shared.confirm_latency, &latencies);
                }
                for (channel, method) in slow.drain(..) {
                    match conn.control(channel, method).await? {
                        Some(AMQPClass::Basic(basic::AMQPMethod::QosOk(_)))
                            if barrier == Barrier::Sent =>
                        {
                            barrier = Barrier::Done;
                        }
                        Some(m) => bail!("unexpected {} from the broker", describe(&m)),
                        None => {}
                    }
                }
            }
            r = conn.wr.write_some(&conn.wbuf[conn.wpos..]), if conn.pending() > 0 || conn.wr.needs_flush() => {
                let written = r?;
                conn.written(written);
            }
            _ = tokio::time::sleep_until(next_due), if paced_wait && conn.pending() == 0 => {}
            r = async { phase.wait_for(|p| *p >= Phase::StopProducers).await.map(|_| ()) }, if !stopping => {
                r?;
                stopping = true;
                deadline = Instant::now() + cfg.drain_timeout;
            }
            _ = tokio::time::sleep_until(deadline), if stopping => {
                // Confirms (or the socket) did not come through in time.
                break;
            }
            _ = hb.tick(), if conn.heartbeat > 0 => conn.send_heartbeat(),
        }
    }
    if outstanding.len() > 0 {
        eprintln!(
            "warning: producer {} stopped with {} messages unconfirmed",
            cfg.id,
            outstanding.len()
        );
    }
    // The measurement is complete; a slow or failed close is not worth
    // failing the run for.
    if let Err(e) = conn.close().await {
        eprintln!("warning: producer {}: {e:#}", cfg.id);
    }
    Ok(())
}

/// The end-of-run round trip (see the stop condition in [`run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Barrier {
    NotSent,
    Sent,
    Done,
}

/// What the read side of a producer has seen since the counters were last
/// folded into the shared ones, and where it is in a returned message.
#[derive(Default)]
struct Inbound {
    acked: u64,
    nacked: u64,
    returned: u64,
    /// The content of a basic.return still to skip: header pending, then
    /// body bytes.
    return_header: bool,
    return_body: u64,
}

/// Consume the complete frames at the front of `buf`; returns the bytes
/// used. Confirm timestamps go to `resolved`; methods other than confirms
/// and returns go to `slow` for the async handler.
fn scan(
    buf: &[u8],
    frame_max: u32,
    st: &mut Inbound,
    outstanding: &mut Outstanding,
    resolved: &mut Vec<u64>,
    slow: &mut Vec<(u16, AMQPClass)>,
) -> Result<usize> {
    let mut pos = 0;
    let mut nacked_ts = Vec::new();
    while let Some((ty, channel, size)) = peek_frame(&buf[pos..], frame_max)? {
        let p = &buf[pos + 7..pos + 7 + size];
        match ty {
            FRAME_METHOD if size >= 4 => {
                let class = u16::from_be_bytes([p[0], p[1]]);
                let method = u16::from_be_bytes([p[2], p[3]]);
                match (class, method) {
                    (60, 80) | (60, 120) if size >= 13 => {
                        let tag =
                            u64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]);
                        let multiple = p[12] & 1 != 0;
                        if method == 80 {
                            st.acked += outstanding.resolve(tag, multiple, resolved);
                        } else {
                            st.nacked += outstanding.resolve(tag, multiple, &mut nacked_ts);
                        }
                    }
                    (60, 50) => {
                        st.returned += 1;
                        st.return_header = true;
                    }
                    _ => slow.push((channel, parse_method(p)?)),
                }
            }
            FRAME_HEADER if st.return_header && size >= 12 => {
                st.return_header = false;
                st.return_body =
                    u64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]);
            }
            FRAME_BODY if st.return_body > 0 => {
                st.return_body = st.return_body.saturating_sub(size as u64);
            }
            FRAME_HEARTBEAT => {}
            _ => bail!("unexpected frame (type {ty}, {size} bytes) on a publishing connection"),
        }
        pos += size + 8;
    }
    Ok(pos)
}

/// A body's sequence number is `producer id << MESSAGE_NUMBER_BITS |
/// message number`.
const MESSAGE_NUMBER_BITS: u32 = 40;

/// Per-message expirations of `base_ms + n % spread_ms`, `n` being the
/// producer's message number, so that messages do not expire in queue
/// order. The expiration is encoded once as fixed-width zero-padded digits
/// (RabbitMQ and Warren both read "0010000" as 10000 ms); per message only
/// those digits are overwritten in the template, which keeps its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpirationSpread {
    pub base_ms: u64,
    pub spread_ms: u64,
}

impl ExpirationSpread {
    /// Digits of the largest expiration.
    fn width(self) -> usize {
        let max = self.base_ms.saturating_add(self.spread_ms.max(1) - 1);
        max.checked_ilog10().unwrap_or(0) as usize + 1
    }

    /// `props` with a placeholder expiration of the right width, encoded,
    /// and the offset of its digits in the encoding.
    pub fn encode_properties(self, props: &BasicProperties) -> Result<(Bytes, usize)> {
        let with = |digit: &str| {
            warren::message::encode(
                &props
                    .clone()
                    .with_expiration(digit.repeat(self.width()).into()),
            )
        };
        let (zeros, ones) = (with("0"), with("1"));
        // The two encodings differ exactly in the digits.
        match zeros.iter().zip(&ones).position(|(a, b)| a != b) {
            Some(at) if zeros.len() == ones.len() => Ok((zeros, at)),
            _ => bail!("cannot locate the expiration in the encoded properties"),
        }
    }

    #[inline]
    fn write(self, digits: &mut [u8], seq: u64) {
        let n = seq & ((1 << MESSAGE_NUMBER_BITS) - 1);
        let mut v = self.base_ms + n % self.spread_ms;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
}

/// The frames of one publish with everything but the body's first 16 bytes
/// (and a spread expiration) filled in.
pub struct PublishTemplate {
    /// basic.publish method frame + content header frame.
    prefix: Vec<u8>,
    body: Vec<u8>,
    channel: u16,
    /// Largest body frame payload.
    chunk: usize,
    /// Where the properties start in `prefix`.
    properties_at: usize,
    /// The expiration digits in `prefix` rewritten per message.
    expiration: Option<(ExpirationSpread, std::ops::Range<usize>)>,
    /// Bytes one message takes on the wire.
    pub wire_size: usize,
    /// The body is JSON: the timestamp and sequence number are written as
    /// hex digits at [`JSON_TS`] and [`JSON_SEQ`].
    json: bool,
}

/// Where a JSON body's hex timestamp and sequence number go.
pub const JSON_TS: std::ops::Range<usize> = 6..22;
pub const JSON_SEQ: std::ops::Range<usize> = 29..45;
const JSON_MIN: usize = 54;

impl PublishTemplate {
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        properties: &[u8],
        size: usize,
        frame_max: u32,
    ) -> Self {
        let mut prefix = Vec::new();
        // basic.publish: class, method, reserved-1, exchange, routing-key, bits
        let mut m = vec![0, 60, 0, 40, 0, 0];
        put_shortstr(&mut m, exchange);
        put_shortstr(&mut m, routing_key);
        m.push(u8::from(mandatory));
        put_frame(&mut prefix, FRAME_METHOD, channel, &m);
        // content header: class, weight, body size, properties
        let mut h = vec![0, 60, 0, 0];
        h.extend_from_slice(&(size as u64).to_be_bytes());
        let properties_at = prefix.len() + 7 + h.len();
        h.extend_from_slice(properties);
        put_frame(&mut prefix, FRAME_HEADER, channel, &h);
        // Body bytes after the timestamp and sequence number: a pattern, so
        // that compression or dedup cannot make them free.
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let chunk = (frame_max as usize - 8).max(16);
        let frames = size.div_ceil(chunk).max(1);
        let wire_size = prefix.len() + size + frames * 8;
        PublishTemplate {
            prefix,
            body,
            channel,
            chunk,
            properties_at,
            expiration: None,
            wire_size,
            json: false,
        }
    }

    /// Make the body a JSON document of the same size.
    pub fn with_json_body(mut self) -> Result<Self> {
        let size = self.body.len();
        if size < JSON_MIN || size > self.chunk {
            bail!(
                "--json-body needs --size between {JSON_MIN} and one frame ({})",
                self.chunk
            );
        }
        let mut body = format!("{{\"t\":\"{:016x}\",\"s\":\"{:016x}\",\"p\":\"", 0, 0).into_bytes();
        body.resize(size - 2, b'x');
        body.extend_from_slice(b"\"}");
        self.body = body;
        self.json = true;
        Ok(self)
    }

    /// Spread expirations; `at` is where the placeholder digits are in the
    /// properties (see [`ExpirationSpread::encode_properties`]).
    pub fn with_expiration_spread(mut self, spread: ExpirationSpread, at: usize) -> Self {
        let start = self.properties_at + at;
        self.expiration = Some((spread, start..start + spread.width()));
        self
    }

    /// Append one message.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>, timestamp: u64, seq: u64) {
        let start = out.len();
        out.extend_from_slice(&self.prefix);
        if let Some((spread, digits)) = &self.expiration {
            spread.write(&mut out[start + digits.start..start + digits.end], seq);
        }
        let len = self.body.len();
        let mut start = 0;
        while start < len {
            let end = (start + self.chunk).min(len);
            out.push(FRAME_BODY);
            out.extend_from_slice(&self.channel.to_be_bytes());
            out.extend_from_slice(&((end - start) as u32).to_be_bytes());
            if start == 0 && self.json {
                let at = out.len();
                out.extend_from_slice(&self.body[..end]);
                write_hex(&mut out[at + JSON_TS.start..at + JSON_TS.end], timestamp);
                write_hex(&mut out[at + JSON_SEQ.start..at + JSON_SEQ.end], seq);
            } else if start == 0 {
                out.extend_from_slice(&timestamp.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&self.body[16..end]);
            } else {
                out.extend_from_slice(&self.body[start..end]);
            }
            out.push(FRAME_END);
            start = end;
        }
    }
}

/// 16 lowercase hex digits of `v`.
fn write_hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// The timestamp of a body written by [`PublishTemplate`]: hex in a JSON
/// body, the first 8 bytes otherwise.
pub fn body_timestamp(first: &[u8]) -> Option<u64> {
    if first.first() == Some(&b'{') {
        let hex = first.get(JSON_TS)?;
        return u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok();
    }
    let t: [u8; 8] = first.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(t))
}

fn put_shortstr(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn put_frame(out: &mut Vec<u8>, ty: u8, channel: u16, payload: &[u8]) {
    out.push(ty);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// Unconfirmed publishes: delivery tags `base..base + ts.len()`, each with
/// its publish timestamp (0 once confirmed).
pub struct Outstanding {
    base: u64,
    ts: VecDeque<u64>,
    pending: u64,
}

impl Outstanding {
    pub fn new() -> Self {
        Outstanding {
            base: 1,
            ts: VecDeque::new(),
            pending: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.pending
    }

    /// Record the next publish (its delivery tag is implied).
    pub fn push(&mut self, ts: u64) {
        self.ts.push_back(ts.max(1));
        self.pending += 1;
    }

    /// Settle `tag` (and, if `multiple`, every tag below it); the settled
    /// publishes' timestamps are appended to `out`. Returns how many were
    /// settled now (tags settled before, or never used, count for nothing).
    pub fn resolve(&mut self, tag: u64, multiple: bool, out: &mut Vec<u64>) -> u64 {
        if tag < self.base || self.ts.is_empty() {
            return 0;
        }
        let idx = ((tag - self.base) as usize).min(self.ts.len() - 1);
        let first = if multiple { 0 } else { idx };
        if !multiple && (tag - self.base) as usize >= self.ts.len() {
            return 0;
        }
        let mut n = 0;
        for slot in self.ts.range_mut(first..=idx) {
            if *slot != 0 {
                out.push(*slot);
                *slot = 0;
                n += 1;
            }
        }
        self.pending -= n;
        while self.ts.front() == Some(&0) {
            self.ts.pop_front();
            self.base += 1;
        }
        n
    }
}

impl Default for Outstanding {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;
    use bytes::BytesMut;
    use warren::amqp::codec::{self, Frame};

    #[test]
    fn template_encodes_a_publish_the_broker_codec_reads() {
        let props = warren::message::encode(&BasicProperties::default().with_delivery_mode(2));
        for (size, frame_max) in [(16usize, 131_072u32), (1024, 131_072), (10_000, 4096)] {
            let tpl = PublishTemplate::new(1, "ex", "rk", true, &props, size, frame_max);
            let mut out = Vec::new();
            tpl.encode(&mut out, 0x0102_0304_0506_0708, 42);
            assert_eq!(out.len(), tpl.wire_size, "size {size}");
            let mut buf = BytesMut::from(&out[..]);
            match codec::decode(&mut buf, frame_max).unwrap().unwrap() {
                Frame::Method { channel, method } => {
                    assert_eq!(channel, 1);
                    assert_eq!(
                        *method,
                        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                            exchange: "ex".into(),
                            routing_key: "rk".into(),
                            mandatory: true,
                            immediate: false,
                        }))
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
            match codec::decode(&mut buf, frame_max).unwrap().unwrap() {
                Frame::Header {
                    body_size,
                    properties,
                    ..
                } => {
                    assert_eq!(body_size, size as u64);
                    assert_eq!(
                        warren::message::parse(&properties).unwrap().delivery_mode(),
                        &Some(2)
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
            let mut body = Vec::new();
            while let Some(f) = codec::decode(&mut buf, frame_max).unwrap() {
                match f {
                    Frame::Body { payload, .. } => body.extend_from_slice(&payload),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(body.len(), size);
            assert_eq!(&body[..8], &0x0102_0304_0506_0708u64.to_be_bytes());
            assert_eq!(&body[8..16], &42u64.to_be_bytes());
        }
    }

    #[test]
    fn spread_expirations_are_rewritten_per_message() {
        let props = BasicProperties::default()
            .with_delivery_mode(1)
            .with_priority(7)
            .with_reply_to("r".into())
            .with_message_id("after-expiration".into());
        for (base_ms, spread_ms, seqs, want) in [
            (
                10_000u64,
                5_000u64,
                [0u64, 1, 4_999, 5_000, (3 << 40) | 7],
                ["10000", "10001", "14999", "10000", "10007"],
            ),
            (
                5,
                100,
                [0, 1, 94, 95, 99],
                ["005", "006", "099", "100", "104"],
            ),
        ] {
            let spread = ExpirationSpread { base_ms, spread_ms };
            let (raw, at) = spread.encode_properties(&props).unwrap();
            let tpl = PublishTemplate::new(1, "", "q", false, &raw, 16, 131_072)
                .with_expiration_spread(spread, at);
            for (seq, want) in seqs.into_iter().zip(want) {
                let mut out = Vec::new();
                tpl.encode(&mut out, 1, seq);
                assert_eq!(out.len(), tpl.wire_size);
                let mut buf = BytesMut::from(&out[..]);
                codec::decode(&mut buf, 131_072).unwrap().unwrap();
                let Frame::Header { properties, .. } =
                    codec::decode(&mut buf, 131_072).unwrap().unwrap()
                else {
                    panic!("no content header");
                };
                let p = warren::message::parse(&properties).unwrap();
                assert_eq!(p.expiration().as_ref().unwrap().as_str(), want);
                let ms: u64 = want.parse().unwrap();
                assert_eq!(warren::message::expiration_of(&properties), Some(ms));
                assert_eq!(
                    (p.priority(), p.message_id()),
                    (&Some(7), &Some("after-expiration".into()))
                );
            }
        }
    }

    #[test]
    fn outstanding_single_multiple_and_out_of_order() {
        let mut o = Outstanding::new();
        for ts in 1..=10 {
            o.push(ts * 100);
        }
        let mut out = Vec::new();
        assert_eq!(o.resolve(3, false, &mut out), 1);
        assert_eq!(out, [300]);
        assert_eq!(o.len(), 9);
        // multiple up to 5 settles 1, 2, 4, 5 (3 already was)
        out.clear();
        assert_eq!(o.resolve(5, true, &mut out), 4);
        assert_eq!(out, [100, 200, 400, 500]);
        assert_eq!(o.len(), 5);
        // repeats and unknown tags are ignored
        assert_eq!(o.resolve(5, false, &mut out), 0);
        assert_eq!(o.resolve(99, false, &mut out), 0);
        assert_eq!(o.resolve(8, false, &mut out), 1);
        out.clear();
        assert_eq!(o.resolve(10, true, &mut out), 4);
        assert_eq!(out, [600, 700, 900, 1000]);
        assert_eq!(o.len(), 0);
        o.push(5);
        assert_eq!(o.resolve(11, false, &mut out), 1);
    }

    #[test]
    fn scan_counts_confirms_and_skips_returns() {
        let mut o = Outstanding::new();
        for _ in 0..4 {
            o.push(7);
        }
        let mut b = BytesMut::new();
        codec::encode_confirm(&mut b, 1, true, 2, true);
        codec::encode_return(&mut b, 1, 312, "NO_ROUTE", "ex", "rk");
        codec::encode_content(&mut b, 1, &[0, 0], &[1u8; 100], 4096);
        codec::encode_confirm(&mut b, 1, false, 3, false);
        codec::encode_heartbeat(&mut b);
        let full = b.len();
        // and half of another frame
        codec::encode_confirm(&mut b, 1, true, 4, false);
        let mut st = Inbound::default();
        let (mut resolved, mut slow) = (Vec::new(), Vec::new());
        let used = scan(
            &b[..full + 5],
            4096,
            &mut st,
            &mut o,
            &mut resolved,
            &mut slow,
        )
        .unwrap();
        assert_eq!(used, full);
        assert_eq!((st.acked, st.nacked, st.returned), (2, 1, 1));
        assert_eq!(resolved, [7, 7]);
        assert!(slow.is_empty());
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn json_bodies_are_json_and_carry_their_timestamp() {
        let props = warren::message::encode(&BasicProperties::default());
        let tpl = PublishTemplate::new(1, "", "q", false, &props, 1024, 131_072)
            .with_json_body()
            .unwrap();
        let mut out = Vec::new();
        tpl.encode(&mut out, 0x0102_0304_0506_0708, 42);
        assert_eq!(out.len(), tpl.wire_size);
        let mut buf = BytesMut::from(&out[..]);
        codec::decode(&mut buf, 131_072).unwrap().unwrap();
        codec::decode(&mut buf, 131_072).unwrap().unwrap();
        let Frame::Body { payload, .. } = codec::decode(&mut buf, 131_072).unwrap().unwrap() else {
            panic!("no body");
        };
        let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(doc["s"], "000000000000002a");
        assert_eq!(payload.len(), 1024);
        assert_eq!(body_timestamp(&payload), Some(0x0102_0304_0506_0708));
        assert!(
            PublishTemplate::new(1, "", "q", false, &props, 20, 131_072)
                .with_json_body()
                .is_err()
        );
    }
}
