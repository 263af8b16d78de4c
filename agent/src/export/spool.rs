//! The disk spool: record batches wait here until the collector acknowledges
//! them, across network failures and agent crashes.
//!
//! Segment files `seg-<first seq>.spool` hold entries
//! `magic "VMSP" | seq u64 | first_record u64 | source_drops u64 | records u32 | len u32 | crc32 u32 | block[len]`
//! (little-endian; the CRC covers everything after the magic up to the CRC,
//! and the block). `first_record` is the position of the batch's first record
//! in the agent's record stream, so a restarted agent knows how many records
//! it already handed over; `source_drops` is the capture's running count of
//! lost packets when the batch was closed, sent along with it. A segment
//! is deleted once every batch in it is acknowledged. The spool is bounded:
//! when a new batch does not fit, whole oldest segments are dropped and
//! counted, and the first drop of an episode is logged. `state` holds the
//! highest acknowledged sequence number and the record-stream position after
//! it (written atomically), so sequence numbers are never reused and the
//! stream position is known even when the spool is empty.
//!
//! A crash can leave a torn entry at the end of the newest segment; opening
//! the spool truncates it (the batch was never acknowledged, and its records
//! are rebuilt from the source on restart). Appends are not fsynced: the page
//! cache survives a process crash; power loss is the collector's fsync's job.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"VMSP";
const HEADER: usize = 40;
const MAX_BLOCK: u32 = 64 << 20;

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    first_record: u64,
    source_drops: u64,
    records: u32,
    offset: u64,
    len: u32,
}

struct Segment {
    path: PathBuf,
    entries: Vec<Entry>,
    bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    /// Dropped to stay within the bound (never acknowledged, never delivered).
    pub dropped_batches: u64,
    pub dropped_records: u64,
    /// Bytes cut from a torn or corrupt tail when the spool was opened.
    pub recovered_tail_bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    next_seq: u64,
    acked: u64,
    /// Record-stream position after the last appended (or acknowledged) batch.
    end_record: u64,
    acked_end_record: u64,
    in_episode: bool,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let (acked, acked_end_record) = match fs::read_to_string(dir.join("state")) {
            Ok(s) => {
                let mut it = s.split_whitespace().map(str::parse::<u64>);
                match (it.next(), it.next()) {
                    (Some(Ok(a)), Some(Ok(r))) => (a, r),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: bad spool state {s:?}", dir.display()),
                        ))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(e),
        };
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".spool")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(1 << 16),
            segment_bytes: (max_bytes / 16).clamp(1 << 16, 64 << 20),
            segments: VecDeque::new(),
            writer: None,
            next_seq: acked + 1,
            acked,
            end_record: acked_end_record,
            acked_end_record,
            in_episode: false,
            stats: SpoolStats::default(),
        };
        let last = names.len().saturating_sub(1);
        for (i, (_, path)) in names.into_iter().enumerate() {
            let seg = spool.scan(&path, i == last)?;
            if let Some(e) = seg.entries.last() {
                spool.next_seq = spool.next_seq.max(e.seq + 1);
                spool.end_record = spool.end_record.max(e.first_record + u64::from(e.records));
            }
            if seg.entries.iter().all(|e| e.seq <= acked) {
                fs::remove_file(&seg.path)?;
            } else {
                spool.segments.push_back(seg);
            }
        }
        spool.recount();
        Ok(spool)
    }

    /// Reads a segment's index; cuts a torn or corrupt tail.
    fn scan(&mut self, path: &Path, newest: bool) -> io::Result<Segment> {
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        let size = f.metadata()?.len();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let mut entries = Vec::new();
        let mut at = 0usize;
        while at < buf.len() {
            let Some(e) = parse_entry(&buf[at..], at as u64) else {
                break;
            };
            at += HEADER + e.len as usize;
            entries.push(e);
        }
        if (at as u64) < size {
            let cut = size - at as u64;
            tracing::warn!(
                "{}: {} bytes after offset {at} are a torn or corrupt entry{}; discarded",
                path.display(),
                cut,
                if newest {
                    " (agent stopped mid-write)"
                } else {
                    ""
                }
            );
            f.set_len(at as u64)?;
            self.stats.recovered_tail_bytes += cut;
        }
        Ok(Segment {
            path: path.to_path_buf(),
            entries,
            bytes: at as u64,
        })
    }

    /// Appends a batch and returns its sequence number. Makes room by
    /// dropping the oldest segments if the spool would exceed its bound.
    pub fn append(&mut self, records: u32, source_drops: u64, block: &[u8]) -> io::Result<u64> {
        let need = (HEADER + block.len()) as u64;
        if block.len() as u64 > u64::from(MAX_BLOCK) || need > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch larger than the spool",
            ));
        }
        while self.stats.bytes + need > self.max_bytes {
            if !self.drop_oldest() {
                break;
            }
        }
        let roll = match self.segments.back() {
            Some(s) => s.bytes + need > self.segment_bytes || self.writer.is_none(),
            None => true,
        };
        if roll {
            let path = self.dir.join(format!("seg-{:020}.spool", self.next_seq));
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            let bytes = f.metadata()?.len();
            self.writer = Some(f);
            self.segments.push_back(Segment {
                path,
                entries: Vec::new(),
                bytes,
            });
        }
        let seq = self.next_seq;
        let first_record = self.end_record;
        let mut head = [0u8; HEADER];
        head[..4].copy_from_slice(MAGIC);
        head[4..12].copy_from_slice(&seq.to_le_bytes());
        head[12..20].copy_from_slice(&first_record.to_le_bytes());
        head[20..28].copy_from_slice(&source_drops.to_le_bytes());
        head[28..32].copy_from_slice(&records.to_le_bytes());
        head[32..36].copy_from_slice(&(block.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[4..36]);
        crc.update(block);
        head[36..40].copy_from_slice(&crc.finalize().to_le_bytes());
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("spool has no open segment"));
        };
        let offset = seg.bytes;
        let written = w.write_all(&head).and_then(|_| w.write_all(block));
        if let Err(e) = written {
            // Leave no half entry behind (a full disk, say): cut back and report.
            let _ = w.set_len(offset);
            return Err(e);
        }
        seg.entries.push(Entry {
            seq,
            first_record,
            source_drops,
            records,
            offset,
            len: block.len() as u32,
        });
        seg.bytes += need;
        self.next_seq += 1;
        self.end_record += u64::from(records);
        self.stats.batches += 1;
        self.stats.records += u64::from(records);
        self.stats.bytes += need;
        Ok(seq)
    }

    fn drop_oldest(&mut self) -> bool {
        let Some(seg) = self.segments.pop_front() else {
            return false;
        };
        if self.segments.is_empty() {
            self.writer = None;
        }
        let records: u64 = seg.entries.iter().map(|e| u64::from(e.records)).sum();
        if !self.in_episode {
            tracing::warn!(
                "spool full ({} bytes): dropping the oldest unacknowledged data; further drops are counted, not logged",
                self.max_bytes
            );
            self.in_episode = true;
        }
        self.stats.dropped_batches += seg.entries.len() as u64;
        self.stats.dropped_records += records;
        let _ = fs::remove_file(&seg.path);
        self.recount();
        true
    }

    /// Everything up to and including `seq` is durable at the collector.
    pub fn ack(&mut self, seq: u64) -> io::Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq.min(self.next_seq.saturating_sub(1)).max(self.acked);
        if let Some(e) = self
            .segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .take_while(|e| e.seq <= self.acked)
            .last()
        {
            self.acked_end_record = e.first_record + u64::from(e.records);
        }
        let tmp = self.dir.join("state.tmp");
        fs::write(&tmp, format!("{} {}\n", self.acked, self.acked_end_record))?;
        fs::rename(&tmp, self.dir.join("state"))?;
        while let Some(seg) = self.segments.front() {
            let done = seg.entries.last().is_none_or(|e| e.seq <= self.acked);
            let is_open = self.segments.len() == 1 && self.writer.is_some();
            if !done || is_open && seg.entries.is_empty() {
                break;
            }
            if let Some(seg) = self.segments.pop_front() {
                if self.segments.is_empty() {
                    self.writer = None;
                }
                fs::remove_file(&seg.path)?;
            }
        }
        self.recount();
        // The overflow episode ends once delivery has made real room again.
        if self.stats.bytes <= self.max_bytes / 2 {
            self.in_episode = false;
        }
        Ok(())
    }

    /// Sequence numbers of unacknowledged batches after `after`, in order.
    #[cfg(test)]
    pub fn pending_after(&self, after: u64) -> Vec<u64> {
        let from = after.max(self.acked);
        self.segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.seq > from)
            .map(|e| e.seq)
            .collect()
    }

    /// The first unacknowledged batch after `after`, without scanning the
    /// whole spool (the shipper calls this once per batch it sends).
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let from = after.max(self.acked);
        let seg = self
            .segments
            .iter()
            .find(|s| s.entries.last().is_some_and(|e| e.seq > from))?;
        let i = seg.entries.partition_point(|e| e.seq <= from);
        seg.entries.get(i).map(|e| e.seq)
    }

    /// Reads a stored batch back: (records, source drops, block). `None` if
    /// it was dropped or acknowledged.
    pub fn read(&self, seq: u64) -> io::Result<Option<(u32, u64, Vec<u8>)>> {
        if seq <= self.acked {
            return Ok(None);
        }
        for seg in &self.segments {
            let Ok(i) = seg.entries.binary_search_by_key(&seq, |e| e.seq) else {
                continue;
            };
            let e = seg.entries[i];
            let mut f = File::open(&seg.path)?;
            f.seek(SeekFrom::Start(e.offset))?;
            let mut buf = vec![0u8; HEADER + e.len as usize];
            f.read_exact(&mut buf)?;
            let ok = parse_entry(&buf, e.offset).is_some_and(|p| p.seq == seq);
            if !ok {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: entry {seq} at offset {} fails its CRC",
                        seg.path.display(),
                        e.offset
                    ),
                ));
            }
            return Ok(Some((e.records, e.source_drops, buf.split_off(HEADER))));
        }
        Ok(None)
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// How many records of the agent's record stream were handed to the
    /// spool (delivered, waiting or dropped): a restarted agent with the same
    /// deterministic source skips that many.
    pub fn end_record(&self) -> u64 {
        self.end_record
    }

    /// After the collector reported `last_seq`, never hand out a sequence
    /// number it has already seen (a spool directory that was wiped, say).
    pub fn skip_to(&mut self, last_seq: u64) {
        if self.next_seq <= last_seq && self.segments.iter().all(|s| s.entries.is_empty()) {
            self.next_seq = last_seq + 1;
            self.writer = None;
        }
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    fn recount(&mut self) {
        let mut s = self.stats;
        s.batches = 0;
        s.records = 0;
        s.bytes = 0;
        for seg in &self.segments {
            for e in seg.entries.iter().filter(|e| e.seq > self.acked) {
                s.batches += 1;
                s.records += u64::from(e.records);
            }
            s.bytes += seg.bytes;
        }
        self.stats = s;
    }
}

fn parse_entry(b: &[u8], offset: u64) -> Option<Entry> {
    let head = b.get(..HEADER)?;
    if &head[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(head[4..12].try_into().ok()?);
    let first_record = u64::from_le_bytes(head[12..20].try_into().ok()?);
    let source_drops = u64::from_le_bytes(head[20..28].try_into().ok()?);
    let records = u32::from_le_bytes(head[28..32].try_into().ok()?);
    let len = u32::from_le_bytes(head[32..36].try_into().ok()?);
    let crc = u32::from_le_bytes(head[36..40].try_into().ok()?);
    if len > MAX_BLOCK {
        return None;
    }
    let body = b.get(HEADER..HEADER + len as usize)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&head[4..36]);
    h.update(body);
    (h.finalize() == crc).then_some(Entry {
        seq,
        first_record,
        source_drops,
        records,
        offset,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(i: u64) -> Vec<u8> {
        (0..(100 + i % 50)).map(|k| (k ^ i) as u8).collect()
    }

    #[test]
    fn append_read_ack_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=100u64 {
            assert_eq!(s.append(i as u32, i * 3, &block(i)).unwrap(), i);
        }
        assert_eq!(s.read(42).unwrap(), Some((42, 126, block(42))));
        s.ack(60).unwrap();
        assert_eq!(s.read(42).unwrap(), None);
        assert_eq!(s.pending_after(0), (61..=100).collect::<Vec<_>>());
        assert_eq!(s.next_after(0), Some(61));
        assert_eq!(s.next_after(70), Some(71));
        assert_eq!(s.next_after(100), None);
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.acked(), 60);
        assert_eq!(s.pending_after(0), (61..=100).collect::<Vec<_>>());
        assert_eq!(s.read(77).unwrap(), Some((77, 231, block(77))));
        assert_eq!(s.append(1, 0, b"x").unwrap(), 101);
        assert_eq!(s.end_record(), (1..=100).sum::<u64>() + 1);
        s.ack(101).unwrap();
        assert_eq!(s.stats().batches, 0);
        drop(s);
        // Sequence numbers and the stream position survive an empty spool.
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.end_record(), (1..=100).sum::<u64>() + 1);
        assert_eq!(s.append(1, 0, b"y").unwrap(), 102);
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=10u64 {
            s.append(1, 0, &block(i)).unwrap();
        }
        drop(s);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .unwrap()
            .path();
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 7).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.pending_after(0), (1..=9).collect::<Vec<_>>());
        assert!(s.stats().recovered_tail_bytes > 0);
        // The torn entry's number is given out again. That is safe: a batch
        // is sent only after its entry is completely written, so a torn one
        // never reached the collector.
        assert_eq!(s.append(1, 0, b"z").unwrap(), 10);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 16).unwrap();
        let big = vec![7u8; 1000];
        for _ in 0..200 {
            s.append(10, 0, &big).unwrap();
        }
        let st = s.stats();
        assert!(st.bytes <= 1 << 16, "{st:?}");
        assert!(st.dropped_batches > 0);
        assert_eq!(st.dropped_records, st.dropped_batches * 10);
        assert_eq!(st.batches + st.dropped_batches, 200);
        let pending = s.pending_after(0);
        assert_eq!(*pending.last().unwrap(), 200);
        assert_eq!(pending.len() as u64, st.batches);
    }
}
