//! Erasing a stream's records where they sit (erasure by header).
//!
//! The records to erase are found by reading the committed segments, as a
//! consumer would; then, under the writer's lock (no sync rolls a segment
//! and no retention drops one meanwhile), each is overwritten in place by
//! an erased record of the same size (`record::erased_record`), and the
//! files are synced. Nothing moves, so the chunk indexes stay true.
//!
//! A crash mid-rewrite must not leave a torn record (a reader would skip
//! its whole chunk): the records to erase are first written to a journal
//! (`erasing` in the log's directory) and synced; a log opened with a
//! journal rewrites them again — rewriting is idempotent — and removes it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::cursor::to_tail;
use super::log::Log;
use super::record::{Decoded, decode, erased_record};
use super::segment::{self, Segment};
use crate::message::Message;
use crate::store::{StoreError, StoreResult};

const JOURNAL: &str = "erasing";

/// One record to erase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    /// The first offset of its segment (the segment's name).
    segment: u64,
    position: u64,
    /// Its size, length field included.
    total: u32,
    offset: u64,
    timestamp: u64,
}

const TARGET_BYTES: usize = 8 + 8 + 4 + 8 + 8;

impl Log {
    /// Erase every committed record whose message `matches`; returns the
    /// offsets erased. Records appended meanwhile are not looked at.
    pub fn erase(&self, matches: &dyn Fn(&Message) -> bool) -> StoreResult<Vec<u64>> {
        let mut targets = self.find(matches)?;
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = self.writer.lock();
        // Retention may have dropped segments since they were read.
        let live: Vec<u64> = self
            .segments
            .read()
            .iter()
            .map(|s| s.first_offset)
            .collect();
        targets.retain(|t| live.contains(&t.segment));
        write_journal(&self.dir, &targets)?;
        {
            let _readers_wait = self.rewriting.write();
            rewrite(&self.dir, &targets)?;
        }
        remove_journal(&self.dir)?;
        let offsets: Vec<u64> = targets.iter().map(|t| t.offset).collect();
        self.erase_in_tail(&offsets);
        Ok(offsets)
    }

    /// The committed records `matches` selects, read chunk by chunk.
    fn find(&self, matches: &dyn Fn(&Message) -> bool) -> StoreResult<Vec<Target>> {
        let committed = self.committed();
        let views = self.segments.read().clone();
        let mut out = Vec::new();
        for view in views {
            for chunk in view.chunks.all() {
                if chunk.first_offset >= committed {
                    break;
                }
                let mut buf = vec![0u8; chunk.bytes as usize];
                {
                    let _no_rewrite = self.rewriting.read();
                    view.file
                        .read_exact_at(&mut buf, chunk.position)
                        .map_err(|e| {
                            StoreError::Io(format!("cannot read a stream segment: {e}"))
                        })?;
                }
                let mut buf = Bytes::from(buf);
                let mut position = chunk.position;
                while let Decoded::Record(r, n) = decode(&buf) {
                    let _ = buf.split_to(n);
                    let at = position;
                    position += n as u64;
                    if r.erased || r.offset >= committed {
                        continue;
                    }
                    let (offset, timestamp) = (r.offset, r.timestamp);
                    let Ok(opened) = r.opened(self.keys.as_deref()) else {
                        continue;
                    };
                    if matches(&to_tail(opened).message) {
                        out.push(Target {
                            segment: view.first_offset,
                            position: at,
                            total: n as u32,
                            offset,
                            timestamp,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Overwrite each target with an erased record, then sync the files.
fn rewrite(dir: &Path, targets: &[Target]) -> StoreResult<()> {
    let mut i = 0;
    while let Some(first) = targets.get(i) {
        let (data, _) = Segment::names(dir, first.segment);
        let file = OpenOptions::new()
            .write(true)
            .open(&data)
            .map_err(|e| segment::io("cannot open", &data, e))?;
        while let Some(t) = targets.get(i).filter(|t| t.segment == first.segment) {
            let bytes = erased_record(t.total as usize, t.offset, t.timestamp)
                .ok_or_else(|| StoreError::corrupt("stream erasure", "a record too small"))?;
            file.write_all_at(&bytes, t.position)
                .map_err(|e| segment::io("cannot rewrite", &data, e))?;
            i += 1;
        }
        file.sync_data()
            .map_err(|e| segment::io("cannot sync", &data, e))?;
    }
    Ok(())
}

fn write_journal(dir: &Path, targets: &[Target]) -> StoreResult<()> {
    let mut out = BytesMut::with_capacity(targets.len() * TARGET_BYTES + 4);
    for t in targets {
        out.put_u64(t.segment);
        out.put_u64(t.position);
        out.put_u32(t.total);
        out.put_u64(t.offset);
        out.put_u64(t.timestamp);
    }
    let crc = crc32fast::hash(&out);
    out.put_u32(crc);
    let path = dir.join(JOURNAL);
    let file = std::fs::File::create(&path).map_err(|e| segment::io("cannot create", &path, e))?;
    file.write_all_at(&out, 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| segment::io("cannot write", &path, e))?;
    segment::sync_dir(dir)
}

fn remove_journal(dir: &Path) -> StoreResult<()> {
    let path = dir.join(JOURNAL);
    std::fs::remove_file(&path).map_err(|e| segment::io("cannot remove", &path, e))?;
    segment::sync_dir(dir)
}

/// Finish an erasure a crash interrupted, before the log's segments are
/// opened. A journal that does not read back whole was being written when
/// the crash came: nothing had been rewritten yet, and it goes.
pub(super) fn finish_interrupted(dir: &Path) -> StoreResult<()> {
    let path = dir.join(JOURNAL);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(segment::io("cannot read", &path, e)),
    };
    if let Some(targets) = parse_journal(&raw) {
        tracing::warn!(
            log = %dir.display(),
            "finishing an erasure a stop interrupted ({} records)",
            targets.len()
        );
        rewrite(dir, &targets)?;
    }
    remove_journal(dir)
}

fn parse_journal(raw: &[u8]) -> Option<Vec<Target>> {
    let (body, crc) = raw.split_at_checked(raw.len().checked_sub(4)?)?;
    if body.len() % TARGET_BYTES != 0
        || crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?)
    {
        return None;
    }
    let mut b = body;
    let mut out = Vec::with_capacity(body.len() / TARGET_BYTES);
    while b.has_remaining() {
        out.push(Target {
            segment: b.get_u64(),
            position: b.get_u64(),
            total: b.get_u32(),
            offset: b.get_u64(),
            timestamp: b.get_u64(),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_and_a_torn_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target {
            segment: 0,
            position: 40,
            total: 60,
            offset: 3,
            timestamp: 17,
        };
        write_journal(dir.path(), &[t, t]).unwrap();
        let raw = std::fs::read(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(parse_journal(&raw), Some(vec![t, t]));
        assert_eq!(parse_journal(&raw[..raw.len() - 1]), None);
        assert_eq!(parse_journal(&[]), None);
    }

    #[test]
    fn an_erasure_a_crash_interrupted_is_finished_at_open() {
        use crate::store::memory_backend::MemoryBackend;
        let dir = tempfile::tempdir().unwrap();
        let backend = MemoryBackend::default();
        let path = dir.path().join("log");
        let log = Log::open(1, path.clone(), 1 << 20, &backend, None).unwrap();
        for body in ["a-secret", "b", "c-secret"] {
            log.append(1, |_, _| super::super::Entry {
                message: std::sync::Arc::new(Message {
                    body: Bytes::from_static(body.as_bytes()),
                    ..Message::empty()
                }),
                filter: None,
            });
        }
        log.sync(&backend).unwrap();
        let targets = log.find(&|m| m.body.ends_with(b"secret")).unwrap();
        assert_eq!(targets.len(), 2);
        // The journal is on disk; the crash came before any rewrite.
        write_journal(&path, &targets).unwrap();
        drop(log);
        let log = std::sync::Arc::new(Log::open(1, path.clone(), 1 << 20, &backend, None).unwrap());
        assert!(!path.join(JOURNAL).exists());
        let read = super::super::Cursor::new(log, 0, None).read(10).unwrap();
        let bodies: Vec<_> = read.iter().map(|r| r.message.body.clone()).collect();
        assert_eq!(bodies, [Bytes::from_static(b"b")]);
    }
}
