//! The content-header properties a publish is checked and routed by, read
//! straight from the wire bytes.
//!
//! Decoding properties with `amq-protocol` builds the whole header table —
//! a string per key, a buffer per value, a tree of them — and with five
//! short headers that was half of a publish's cost. The broker looks inside
//! the table only to route through a headers exchange or to honour
//! `CC`/`BCC`, so here the table is only *checked*: the same grammar the
//! decoder accepts (RabbitMQ's type tags, containers consumed exactly, UTF-8
//! keys, at most [`crate::fields::nesting::MAX_DEPTH`] levels), walked without allocating.
//! What this accepts, `message::parse` decodes (a test holds the two to it).

use super::codec::read_short_str as short_str;
use crate::fields::nesting::MAX_DEPTH;

/// `basic` property flags, most significant bit first.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

/// What the broker needs from a publish's properties.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PublishProperties<'a> {
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub reply_to: Option<&'a str>,
    pub expiration: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// The header table, its 4-byte length first; checked well-formed.
    pub headers: Option<&'a [u8]>,
}

impl PublishProperties<'_> {
    /// Whether the header table has one of `names` as a top-level key.
    pub fn has_header(&self, names: &[&str]) -> bool {
        let Some(table) = self.headers else {
            return false;
        };
        let mut pos = 4;
        while pos < table.len() {
            let Some(key) = short_str(table, &mut pos) else {
                return false;
            };
            if names.contains(&key) {
                return true;
            }
            match value_len(table, pos) {
                Some(n) => pos += n,
                None => return false,
            }
        }
        false
    }
}

/// Read raw properties; `None` if `message::parse` would refuse them.
pub fn read(raw: &[u8]) -> Option<PublishProperties<'_>> {
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    let mut pos = 2;
    let mut p = PublishProperties::default();
    let skip_str = |pos: &mut usize| short_str(raw, pos).map(drop);
    if flags & CONTENT_TYPE != 0 {
        skip_str(&mut pos)?;
    }
    if flags & CONTENT_ENCODING != 0 {
        skip_str(&mut pos)?;
    }
    if flags & HEADERS != 0 {
        let len = u32_at(raw, pos)?;
        let end = pos.checked_add(4)?.checked_add(len)?;
        let table = raw.get(pos..end)?;
        if !table_ok(table) {
            return None;
        }
        p.headers = Some(table);
        pos = end;
    }
    if flags & DELIVERY_MODE != 0 {
        p.delivery_mode = Some(*raw.get(pos)?);
        pos += 1;
    }
    if flags & PRIORITY != 0 {
        p.priority = Some(*raw.get(pos)?);
        pos += 1;
    }
    if flags & CORRELATION_ID != 0 {
        skip_str(&mut pos)?;
    }
    if flags & REPLY_TO != 0 {
        p.reply_to = Some(short_str(raw, &mut pos)?);
    }
    if flags & EXPIRATION != 0 {
        p.expiration = Some(short_str(raw, &mut pos)?);
    }
    if flags & MESSAGE_ID != 0 {
        skip_str(&mut pos)?;
    }
    if flags & TIMESTAMP != 0 {
        raw.get(pos..pos + 8)?;
        pos += 8;
    }
    if flags & TYPE != 0 {
        skip_str(&mut pos)?;
    }
    if flags & USER_ID != 0 {
        p.user_id = Some(short_str(raw, &mut pos)?);
    }
    if flags & APP_ID != 0 {
        skip_str(&mut pos)?;
    }
    if flags & CLUSTER_ID != 0 {
        skip_str(&mut pos)?;
    }
    (pos == raw.len()).then_some(p)
}

fn u32_at(raw: &[u8], at: usize) -> Option<usize> {
    let b = raw.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The length of the tagged value at `pos` (tag included), containers whole.
fn value_len(raw: &[u8], pos: usize) -> Option<usize> {
    let body = match *raw.get(pos)? {
        b't' | b'b' | b'B' => 1,
        b's' | b'u' | b'U' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        b'S' | b'x' | b'F' | b'A' => 4 + u32_at(raw, pos + 1)?,
        _ => return None,
    };
    let len = 1 + body;
    raw.get(pos..pos.checked_add(len)?)?;
    Some(len)
}

/// Whether `table` (its length first, exactly that long) is a well-formed
/// field table: walked with an explicit stack, so nesting costs no
/// recursion.
fn table_ok(table: &[u8]) -> bool {
    // Open containers: (is a table, end offset).
    let mut stack: Vec<(bool, usize)> = vec![(true, table.len())];
    let mut pos = 4;
    while let Some(&(is_table, end)) = stack.last() {
        if pos == end {
            stack.pop();
            continue;
        }
        if is_table {
            match short_str(&table[..end], &mut pos) {
                Some(_) => {}
                None => return false,
            }
        }
        let Some(len) = value_len(&table[..end], pos) else {
            return false;
        };
        let tag = table[pos];
        if tag == b'F' || tag == b'A' {
            if stack.len() >= MAX_DEPTH {
                return false;
            }
            stack.push((tag == b'F', pos + len));
            pos += 5;
        } else {
            pos += len;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::message;

    fn sample() -> BasicProperties {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(-3));
        inner.insert("v".into(), AMQPValue::Void);
        let mut headers = FieldTable::default();
        headers.insert("task".into(), AMQPValue::LongString("tasks.add".into()));
        headers.insert("retries".into(), AMQPValue::ShortInt(2));
        headers.insert("ok".into(), AMQPValue::Boolean(true));
        headers.insert("x".into(), AMQPValue::Double(1.5));
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString(LongString::from("a")),
                AMQPValue::FieldTable(inner.clone()),
            ])),
        );
        headers.insert("nested".into(), AMQPValue::FieldTable(inner));
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("app".into())
    }

    #[test]
    fn reads_what_the_broker_needs() {
        let raw = message::encode(&sample());
        let p = read(&raw).unwrap();
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.priority, Some(7));
        assert_eq!(p.reply_to, Some("r"));
        assert_eq!(p.expiration, Some("60000"));
        assert_eq!(p.user_id, Some("guest"));
        assert!(p.has_header(&["CC", "BCC"]));
        assert!(!p.has_header(&["BCC"]));
        assert!(p.has_header(&["nested"]));
        let none = message::encode(&BasicProperties::default());
        assert_eq!(read(&none), Some(PublishProperties::default()));
    }

    /// Whatever the decoder accepts this accepts, and the reverse, over
    /// valid encodings cut short, extended, and with random bytes changed.
    #[test]
    fn accepts_exactly_what_the_decoder_accepts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let valid = message::encode(&sample()).to_vec();
        let mut cases = vec![valid.clone()];
        for cut in 0..valid.len() {
            cases.push(valid[..cut].to_vec());
        }
        let mut longer = valid.clone();
        longer.push(0);
        cases.push(longer);
        for _ in 0..20_000 {
            let mut c = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..c.len());
                c[i] = match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => c[i].wrapping_add(1),
                    _ => b"tbBsUuIifLldDTSxVFA\xff"[rng.random_range(0..20)],
                };
            }
            cases.push(c);
        }
        let mut accepted = 0;
        for c in &cases {
            let decoded = message::parse(c);
            assert_eq!(read(c).is_some(), decoded.is_some(), "disagree on {c:?}");
            if let (Some(p), Some(d)) = (read(c), decoded) {
                accepted += 1;
                assert_eq!(p.delivery_mode, *d.delivery_mode());
                assert_eq!(p.priority, *d.priority());
                assert_eq!(p.user_id, d.user_id().as_ref().map(|s| s.as_str()));
                assert_eq!(p.expiration, d.expiration().as_ref().map(|s| s.as_str()));
            }
        }
        assert!(accepted > 100, "only {accepted} mutations decoded");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut t = FieldTable::default();
        for _ in 0..MAX_DEPTH + 1 {
            let mut outer = FieldTable::default();
            outer.insert("t".into(), AMQPValue::FieldTable(t));
            t = outer;
        }
        let raw = message::encode(&BasicProperties::default().with_headers(t));
        assert!(read(&raw).is_none());
        assert!(message::parse(&raw).is_none());
    }
}
