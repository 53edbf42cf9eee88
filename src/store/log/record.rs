//! One stream record's bytes, and one index entry's. Pure functions.
//!
//! A record, big-endian:
//!
//! ```text
//! u32 len      bytes after this field
//! u32 crc      CRC-32 of the bytes after this field
//! u64 offset
//! u64 timestamp (ms since the epoch)
//! u8  filter length (0: none), filter value
//! u8  exchange length, exchange
//! u8  routing key length, routing key
//! u32 properties length, properties (wire form, x-stream-offset included)
//! body (the rest)
//! ```
//!
//! In an encrypted store the properties and body are sealed together
//! (`sealed.rs`, the offset and timestamp as associated data): the
//! properties length has its top bit set and counts the sealed bytes,
//! which are the rest of the record.
//!
//! An erased record (erasure by header) keeps its length, offset and
//! timestamp; everything after them is zeros but the properties length,
//! which is the `ERASED` bit alone. Readers skip it; its offset stays
//! taken, as a record dropped by a filter's does.
//!
//! The CRC makes a torn or garbled tail detectable: recovery stops at the
//! first record whose length runs past the file or whose CRC is wrong.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before `offset` that are not covered by the CRC.
pub const HEAD: usize = 8;

/// A record as read back; every part shares the buffer it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its properties and body are still sealed (in `properties`).
    pub sealed: bool,
    /// Erased where it sat: nothing of the message is left.
    pub erased: bool,
    pub offset: u64,
    pub timestamp: u64,
    pub filter: Option<Bytes>,
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub properties: Bytes,
    pub body: Bytes,
}

/// What a record is made of, borrowed, for writing.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp: u64,
    pub filter: Option<&'a [u8]>,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    pub properties: &'a [u8],
    pub body: &'a [u8],
}

fn short(s: &[u8]) -> &[u8] {
    &s[..s.len().min(255)]
}

/// The properties-length bit that marks sealed contents.
const SEALED: u32 = 1 << 31;
/// The properties-length bit that marks an erased record.
const ERASED: u32 = 1 << 30;

/// Bytes of a record with empty filter, exchange, key and properties,
/// after the length field: the least any record has.
const MIN_LEN: usize = 4 + 8 + 8 + 1 + 1 + 1 + 4;

/// The bytes that replace a record of `total` bytes (length field
/// included) when it is erased: the same size, so nothing around it moves.
/// `None` if `total` cannot be a record's size.
pub fn erased_record(total: usize, offset: u64, timestamp: u64) -> Option<Vec<u8>> {
    let len = total.checked_sub(4).filter(|l| *l >= MIN_LEN)?;
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(len as u32);
    out.put_u32(0);
    out.put_u64(offset);
    out.put_u64(timestamp);
    out.put_bytes(0, 3);
    out.put_u32(ERASED);
    out.put_bytes(0, total - out.len());
    let crc = crc32fast::hash(&out[HEAD..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    Some(out.to_vec())
}

fn sealing_aad(offset: u64, timestamp: u64) -> [u8; 16] {
    let mut aad = [0u8; 16];
    aad[..8].copy_from_slice(&offset.to_be_bytes());
    aad[8..].copy_from_slice(&timestamp.to_be_bytes());
    aad
}

impl Record {
    /// The record with its properties and body opened (as it is, if they
    /// were not sealed); the error says why they do not open.
    pub fn opened(self, keys: Option<&crate::store::sealed::Keyring>) -> Result<Record, String> {
        if !self.sealed {
            return Ok(self);
        }
        let keys = keys.ok_or("a sealed stream record and no encryption key")?;
        let plain = keys.open(&sealing_aad(self.offset, self.timestamp), &self.properties)?;
        let mut b = Bytes::from(plain);
        if b.remaining() < 4 {
            return Err("a sealed stream record opens to nothing".into());
        }
        let props_len = b.get_u32() as usize;
        if b.remaining() < props_len {
            return Err("a sealed stream record's properties run past its end".into());
        }
        let properties = b.split_to(props_len);
        Ok(Record {
            sealed: false,
            properties,
            body: b,
            ..self
        })
    }
}

impl RecordRef<'_> {
    /// Append the record's bytes to `out`, its properties and body sealed
    /// under `keys` if given; returns how many.
    pub fn encode_sealed(
        &self,
        out: &mut BytesMut,
        keys: Option<&crate::store::sealed::Keyring>,
    ) -> usize {
        let Some(keys) = keys else {
            return self.encode(out);
        };
        let mut content = Vec::with_capacity(4 + self.properties.len() + self.body.len());
        content.extend_from_slice(&(self.properties.len() as u32).to_be_bytes());
        content.extend_from_slice(self.properties);
        content.extend_from_slice(self.body);
        let sealed = keys.seal(&sealing_aad(self.offset, self.timestamp), &content);
        RecordRef {
            properties: &sealed,
            body: &[],
            ..*self
        }
        .encode_with(out, SEALED)
    }

    /// Append the record's bytes to `out`; returns how many.
    pub fn encode(&self, out: &mut BytesMut) -> usize {
        self.encode_with(out, 0)
    }

    fn encode_with(&self, out: &mut BytesMut, props_flag: u32) -> usize {
        let filter = self.filter.map(short).unwrap_or_default();
        let exchange = short(self.exchange);
        let key = short(self.routing_key);
        let len = 4
            + 8
            + 8
            + 1
            + filter.len()
            + 1
            + exchange.len()
            + 1
            + key.len()
            + 4
            + self.properties.len()
            + self.body.len();
        let start = out.len();
        out.reserve(4 + len);
        out.put_u32(len as u32);
        out.put_u32(0);
        out.put_u64(self.offset);
        out.put_u64(self.timestamp);
        out.put_u8(filter.len() as u8);
        out.put_slice(filter);
        out.put_u8(exchange.len() as u8);
        out.put_slice(exchange);
        out.put_u8(key.len() as u8);
        out.put_slice(key);
        out.put_u32(self.properties.len() as u32 | props_flag);
        out.put_slice(self.properties);
        out.put_slice(self.body);
        let crc = crc32fast::hash(&out[start + HEAD..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        out.len() - start
    }
}

/// What is at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record of `len` bytes.
    Record(Record, usize),
    /// The buffer ends inside a record of `len` bytes (read more).
    Partial(usize),
    /// Not a valid record: a torn or garbled tail.
    Corrupt,
}

/// The largest record accepted back (a length beyond it is garbage).
pub const MAX_RECORD: usize = 1 << 30;

/// Decode the record at the front of `buf` (a shared buffer, so the
/// record's parts are slices of it, not copies).
pub fn decode(buf: &Bytes) -> Decoded {
    if buf.len() < HEAD {
        return Decoded::Partial(HEAD);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(4 + 8 + 8 + 4..=MAX_RECORD).contains(&len) {
        return Decoded::Corrupt;
    }
    let total = 4 + len;
    if buf.len() < total {
        return Decoded::Partial(total);
    }
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc32fast::hash(&buf[HEAD..total]) != crc {
        return Decoded::Corrupt;
    }
    match parse(buf.slice(HEAD..total)) {
        Some(r) => Decoded::Record(r, total),
        None => Decoded::Corrupt,
    }
}

fn parse(mut b: Bytes) -> Option<Record> {
    fn take(b: &mut Bytes, n: usize) -> Option<Bytes> {
        (b.remaining() >= n).then(|| b.split_to(n))
    }
    if b.remaining() < 17 {
        return None;
    }
    let offset = b.get_u64();
    let timestamp = b.get_u64();
    let filter_len = b.get_u8() as usize;
    let filter = take(&mut b, filter_len)?;
    let exchange_len = *b.first()? as usize;
    b.advance(1);
    let exchange = take(&mut b, exchange_len)?;
    let key_len = *b.first()? as usize;
    b.advance(1);
    let routing_key = take(&mut b, key_len)?;
    if b.remaining() < 4 {
        return None;
    }
    let props_field = b.get_u32();
    let sealed = props_field & SEALED != 0;
    let erased = props_field & ERASED != 0;
    let properties = take(&mut b, (props_field & !(SEALED | ERASED)) as usize)?;
    Some(Record {
        sealed,
        erased,
        offset,
        timestamp,
        filter: (filter_len > 0).then_some(filter),
        exchange,
        routing_key,
        properties,
        body: b,
    })
}

/// One chunk of a segment, as its index file keeps it: the records one
/// sync wrote (or a slice of them), where they start, when they were
/// written, and which filter values they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub first_offset: u64,
    pub count: u32,
    /// Byte position of the chunk's first record in its segment.
    pub position: u64,
    pub bytes: u64,
    pub first_timestamp: u64,
    pub last_timestamp: u64,
    /// A 64-bit Bloom filter of the chunk's filter values.
    pub filters: u64,
    /// Some record of the chunk has no filter value.
    pub unfiltered: bool,
}

/// Bytes of one index entry on disk.
pub const CHUNK_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 8 + 8 + 1 + 4;

impl Chunk {
    pub fn next_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u64(self.first_offset);
        out.put_u32(self.count);
        out.put_u64(self.position);
        out.put_u64(self.bytes);
        out.put_u64(self.first_timestamp);
        out.put_u64(self.last_timestamp);
        out.put_u64(self.filters);
        out.put_u8(u8::from(self.unfiltered));
        let crc = crc32fast::hash(&out[start..]);
        out.put_u32(crc);
    }

    /// An entry from its bytes; `None` if they are not one.
    pub fn decode(b: &[u8]) -> Option<Chunk> {
        if b.len() != CHUNK_BYTES {
            return None;
        }
        let (body, crc) = b.split_at(CHUNK_BYTES - 4);
        if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = body;
        Some(Chunk {
            first_offset: r.get_u64(),
            count: r.get_u32(),
            position: r.get_u64(),
            bytes: r.get_u64(),
            first_timestamp: r.get_u64(),
            last_timestamp: r.get_u64(),
            filters: r.get_u64(),
            unfiltered: r.get_u8() != 0,
        })
    }

    /// Whether the chunk may hold a record a consumer with `filter` wants.
    pub fn may_match(&self, filter: &crate::store::log::Filter) -> bool {
        (filter.match_unfiltered && self.unfiltered) || self.filters & filter.bloom != 0
    }
}

/// The bits a filter value sets in a chunk's Bloom filter.
pub fn bloom_bits(value: &[u8]) -> u64 {
    let h = crc32fast::hash(value);
    (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63)) | (1u64 << ((h >> 12) & 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offset: u64, filter: Option<&'static [u8]>) -> RecordRef<'static> {
        RecordRef {
            offset,
            timestamp: 1_700_000_000_000 + offset,
            filter,
            exchange: b"ex",
            routing_key: b"key",
            properties: b"\x00\x00",
            body: b"hello",
        }
    }

    #[test]
    fn an_erased_record_takes_the_place_of_the_original_exactly() {
        let mut buf = BytesMut::new();
        let n = sample(9, Some(b"eu")).encode(&mut buf);
        let erased = erased_record(n, 9, 1_700_000_000_009).unwrap();
        assert_eq!(erased.len(), n);
        let Decoded::Record(r, len) = decode(&Bytes::from(erased)) else {
            panic!("an erased record must read back");
        };
        assert_eq!((len, r.offset, r.timestamp), (n, 9, 1_700_000_000_009));
        assert!(r.erased && r.filter.is_none() && r.properties.is_empty());
        assert!(r.body.iter().all(|b| *b == 0));
        assert_eq!(
            erased_record(MIN_LEN + 3, 0, 0),
            None,
            "smaller than any record"
        );
    }

    #[test]
    fn a_sealed_record_reads_back_only_with_its_key() {
        use base64::Engine;
        let keys = |b: u8| crate::store::sealed::Keyring {
            current: crate::store::StoreKey::from_base64(
                &base64::engine::general_purpose::STANDARD.encode([b; 32]),
            )
            .unwrap(),
            old: None,
        };
        let mut buf = BytesMut::new();
        sample(7, Some(b"eu")).encode_sealed(&mut buf, Some(&keys(1)));
        assert!(!buf.windows(5).any(|w| w == b"hello"));
        let buf = buf.freeze();
        let Decoded::Record(r, _) = decode(&buf) else {
            panic!("not a record");
        };
        assert!(r.sealed);
        // Offset, timestamp and filter stay readable (indexes, retention).
        assert_eq!((r.offset, r.filter.as_deref()), (7, Some(&b"eu"[..])));
        assert!(r.clone().opened(Some(&keys(2))).is_err());
        assert!(r.clone().opened(None).is_err());
        let opened = r.opened(Some(&keys(1))).unwrap();
        assert_eq!(
            (&opened.properties[..], &opened.body[..]),
            (&b"\x00\x00"[..], &b"hello"[..])
        );
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let mut buf = BytesMut::new();
        let n = sample(7, Some(b"eu")).encode(&mut buf);
        sample(8, None).encode(&mut buf);
        let buf = buf.freeze();
        let Decoded::Record(r, len) = decode(&buf) else {
            panic!("not a record")
        };
        assert_eq!(len, n);
        assert_eq!(r.offset, 7);
        assert_eq!(r.filter.as_deref(), Some(&b"eu"[..]));
        assert_eq!(&r.body[..], b"hello");
        let Decoded::Record(r2, _) = decode(&buf.slice(len..)) else {
            panic!("second record")
        };
        assert_eq!((r2.offset, r2.filter), (8, None));
    }

    #[test]
    fn a_torn_or_garbled_record_is_never_read() {
        let mut buf = BytesMut::new();
        let n = sample(1, None).encode(&mut buf);
        let whole = buf.freeze();
        for cut in 0..n {
            assert!(matches!(
                decode(&whole.slice(..cut)),
                Decoded::Partial(_) | Decoded::Corrupt
            ));
        }
        for i in 4..n {
            let mut bad = whole.to_vec();
            bad[i] ^= 0x40;
            assert_eq!(decode(&Bytes::from(bad)), Decoded::Corrupt, "byte {i}");
        }
        assert_eq!(decode(&Bytes::from_static(&[0xff; 16])), Decoded::Corrupt);
    }

    #[test]
    fn an_index_entry_round_trips_and_refuses_garbage() {
        let c = Chunk {
            first_offset: 10,
            count: 3,
            position: 4096,
            bytes: 300,
            first_timestamp: 5,
            last_timestamp: 9,
            filters: bloom_bits(b"a"),
            unfiltered: true,
        };
        let mut buf = BytesMut::new();
        c.encode(&mut buf);
        assert_eq!(buf.len(), CHUNK_BYTES);
        assert_eq!(Chunk::decode(&buf), Some(c));
        buf[3] ^= 1;
        assert_eq!(Chunk::decode(&buf), None);
    }
}
