//! One segment of a stream: a data file of records and an index file of
//! chunks (see `record`), named by the segment's first offset.
//!
//! Only the group-commit thread appends, and only to the last segment;
//! readers read any segment with positioned reads (the page cache does the
//! caching). Opening a segment checks it: index entries are trusted up to
//! the first bad one, the records after the last trusted chunk are scanned
//! and re-indexed, and a torn or garbled tail is cut off, so no torn record
//! is ever readable.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use super::record::{CHUNK_BYTES, Chunk, Decoded, decode};
use crate::store::{StoreError, StoreResult};

/// Bytes read at once when scanning.
const READ_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct Segment {
    pub first_offset: u64,
    data_path: PathBuf,
    index_path: PathBuf,
    data: File,
    index: File,
    pub chunks: ChunkIndex,
    /// Bytes of records (the data file's length).
    pub bytes: u64,
}

pub(super) fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

impl Segment {
    pub fn names(dir: &Path, first_offset: u64) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{first_offset:020}.seg")),
            dir.join(format!("{first_offset:020}.idx")),
        )
    }

    /// A new, empty segment starting at `first_offset`.
    pub fn create(dir: &Path, first_offset: u64) -> StoreResult<Segment> {
        let (data_path, index_path) = Segment::names(dir, first_offset);
        let data = open_file(&data_path, "cannot create")?;
        let index = open_file(&index_path, "cannot create")?;
        sync_dir(dir)?;
        Ok(Segment {
            first_offset,
            data_path,
            index_path,
            data,
            index,
            chunks: ChunkIndex::default(),
            bytes: 0,
        })
    }

    /// Open and check an existing segment (see the module's comment).
    pub fn open(dir: &Path, first_offset: u64) -> StoreResult<Segment> {
        let (data_path, index_path) = Segment::names(dir, first_offset);
        let data = open_file(&data_path, "cannot open")?;
        let index = open_file(&index_path, "cannot open")?;
        let mut segment = Segment {
            first_offset,
            data_path,
            index_path,
            data,
            index,
            chunks: ChunkIndex::default(),
            bytes: 0,
        };
        segment.check()?;
        Ok(segment)
    }

    /// Trust the index up to its first bad entry, scan the rest, cut a
    /// torn tail, rewrite the index if it changed.
    fn check(&mut self) -> StoreResult<()> {
        let len = self
            .data
            .metadata()
            .map_err(|e| io("cannot read", &self.data_path, e))?
            .len();
        let raw =
            std::fs::read(&self.index_path).map_err(|e| io("cannot read", &self.index_path, e))?;
        let mut chunks = Vec::new();
        let mut expected = (self.first_offset, 0u64);
        for entry in raw.chunks(CHUNK_BYTES) {
            match Chunk::decode(entry) {
                Some(c)
                    if (c.first_offset, c.position) == expected && c.position + c.bytes <= len =>
                {
                    expected = (c.next_offset(), c.position + c.bytes);
                    chunks.push(c);
                }
                _ => break,
            }
        }
        let trusted = chunks.len();
        let (mut offset, mut position) = expected;
        // Records after the last trusted chunk: scanned, one chunk each
        // read, until the end or the first bad one.
        while position < len {
            let want = (len - position).min(READ_BYTES as u64) as usize;
            let mut buf = vec![0u8; want];
            self.data
                .read_exact_at(&mut buf, position)
                .map_err(|e| io("cannot read", &self.data_path, e))?;
            let mut buf = Bytes::from(buf);
            let mut chunk: Option<Chunk> = None;
            let mut stop = false;
            loop {
                match decode(&buf) {
                    Decoded::Record(r, n) if r.offset == offset => {
                        let c = chunk.get_or_insert(Chunk {
                            first_offset: offset,
                            count: 0,
                            position,
                            bytes: 0,
                            first_timestamp: r.timestamp,
                            last_timestamp: r.timestamp,
                            filters: 0,
                            unfiltered: false,
                        });
                        c.count += 1;
                        c.bytes += n as u64;
                        c.last_timestamp = c.last_timestamp.max(r.timestamp);
                        match &r.filter {
                            Some(f) => c.filters |= super::record::bloom_bits(f),
                            None => c.unfiltered = true,
                        }
                        offset += 1;
                        position += n as u64;
                        let _ = buf.split_to(n);
                    }
                    Decoded::Partial(n) if n > buf.len() && (position + n as u64) <= len => {
                        // A record longer than what was read: read it whole.
                        let mut big = vec![0u8; n];
                        self.data
                            .read_exact_at(&mut big, position)
                            .map_err(|e| io("cannot read", &self.data_path, e))?;
                        buf = Bytes::from(big);
                    }
                    Decoded::Partial(_) if buf.is_empty() => break,
                    // A torn tail, garbage, or a record out of sequence.
                    _ => {
                        stop = true;
                        break;
                    }
                }
                if buf.is_empty() {
                    break;
                }
            }
            chunks.extend(chunk);
            if stop {
                break;
            }
        }
        if position < len {
            tracing::warn!(
                segment = %self.data_path.display(),
                "cutting {} bytes of torn or damaged records off a stream segment",
                len - position
            );
            self.data
                .set_len(position)
                .map_err(|e| io("cannot truncate", &self.data_path, e))?;
            self.data
                .sync_data()
                .map_err(|e| io("cannot sync", &self.data_path, e))?;
        }
        if chunks.len() != trusted || raw.len() != trusted * CHUNK_BYTES {
            let mut out = BytesMut::new();
            for c in &chunks {
                c.encode(&mut out);
            }
            std::fs::write(&self.index_path, &out)
                .map_err(|e| io("cannot rewrite", &self.index_path, e))?;
            let f =
                File::open(&self.index_path).map_err(|e| io("cannot open", &self.index_path, e))?;
            f.sync_all()
                .map_err(|e| io("cannot sync", &self.index_path, e))?;
        }
        self.chunks = ChunkIndex::new(chunks);
        self.bytes = position;
        Ok(())
    }

    /// The offset after the segment's last record.
    pub fn next_offset(&self) -> u64 {
        self.chunks
            .last()
            .map_or(self.first_offset, |c| c.next_offset())
    }

    /// Append records and make them durable, then their index entries.
    /// The index is not synced: an entry on disk always describes synced
    /// records, and entries a crash loses are rebuilt at open by scanning
    /// the records after the last one (see `check`) — one sync per append,
    /// not two.
    pub fn append(&mut self, data: &[u8], chunks: &[Chunk]) -> StoreResult<()> {
        self.data
            .write_all(data)
            .map_err(|e| io("cannot write", &self.data_path, e))?;
        self.data
            .sync_data()
            .map_err(|e| io("cannot sync", &self.data_path, e))?;
        let mut index = BytesMut::with_capacity(chunks.len() * CHUNK_BYTES);
        for c in chunks {
            c.encode(&mut index);
        }
        self.index
            .write_all(&index)
            .map_err(|e| io("cannot write", &self.index_path, e))?;
        self.bytes += data.len() as u64;
        self.chunks.extend(chunks);
        Ok(())
    }

    /// A handle readers use for positioned reads.
    pub fn reader(&self) -> StoreResult<File> {
        File::open(&self.data_path).map_err(|e| io("cannot open", &self.data_path, e))
    }

    /// Remove the segment's files (retention, deletion). Readers that
    /// opened it keep reading what they have open.
    pub fn remove(&self) {
        for p in [&self.data_path, &self.index_path] {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// Make a new file's directory entry durable.
pub(super) fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// The first offsets of the segments in `dir`, in order.
pub fn list(dir: &Path) -> StoreResult<Vec<u64>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".seg")
            && let Ok(first) = stem.parse::<u64>()
        {
            out.push(first);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A segment's chunk index, shared by its writer and its readers: the
/// writer appends, readers search, nothing is copied. Chunks are in offset
/// order, and so in timestamp order (timestamps never go back).
#[derive(Clone, Debug, Default)]
pub struct ChunkIndex(Arc<RwLock<Vec<Chunk>>>);

impl ChunkIndex {
    pub fn new(chunks: Vec<Chunk>) -> ChunkIndex {
        ChunkIndex(Arc::new(RwLock::new(chunks)))
    }

    fn extend(&self, chunks: &[Chunk]) {
        self.0.write().extend_from_slice(chunks);
    }

    pub fn last(&self) -> Option<Chunk> {
        self.0.read().last().copied()
    }

    /// Every chunk, in order (a copy: the writer may append meanwhile).
    pub fn all(&self) -> Vec<Chunk> {
        self.0.read().clone()
    }

    /// The chunk that holds `offset`, if one does.
    pub fn holding(&self, offset: u64) -> Option<Chunk> {
        let chunks = self.0.read();
        let i = chunks.partition_point(|c| c.first_offset <= offset);
        let c = *chunks.get(i.checked_sub(1)?)?;
        (offset < c.next_offset()).then_some(c)
    }

    /// The first chunk whose newest record is at or after `timestamp`.
    pub fn first_since(&self, timestamp: u64) -> Option<Chunk> {
        let chunks = self.0.read();
        let i = chunks.partition_point(|c| c.last_timestamp < timestamp);
        chunks.get(i).copied()
    }
}

/// A segment's data or index file, for appending and positioned reads;
/// made if missing, never truncated.
fn open_file(p: &Path, what: &str) -> StoreResult<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .open(p)
        .map_err(|e| io(what, p, e))
}
