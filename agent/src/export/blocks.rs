//! Record files in the spool's own format: `replay --format blocks` writes
//! one, `vmflow cat` reads it back (and spool segments, which are the same
//! thing) as NDJSON. A segment header, then entries of up to
//! [`BLOCK_RECORDS`] records, each a compressed column block with a CRC
//! (see `spool::segment`): about 17 bytes a record where NDJSON takes ~400,
//! and damage costs only the entries it touches.
//!
//! A block is a set: its records come back ordered by `first_ns`, not in
//! the order they were written (the encoder sorts them so time deltas stay
//! small). The same records, then, but within each block in time order.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use vmflow_proto::FlowRecord;
use vmflow_proto::{decode_records, encode_records};

use super::spool::segment::{
    encode_entry, encode_header, parse_entry, parse_header, renumber_entry, Entry, ENTRY_HEADER,
    ENTRY_MAGIC, MAX_BLOCK, SEG_HEADER, SEG_MAGIC,
};
use super::RecordSink;

/// Records per entry: the agent's default batch is 1024; larger blocks
/// compress a little better and a file is read whole anyway.
pub const BLOCK_RECORDS: usize = 4096;
/// The spool's zstd level: fast, and most of the gain is the columns.
const LEVEL: i32 = 1;

pub struct BlockFileSink<W: Write> {
    out: BufWriter<W>,
    pending: Vec<FlowRecord>,
    /// Entries written; the next one's sequence number is `seq + 1`.
    seq: u64,
    /// Records written in entries so far (the next entry's first position).
    written: u64,
    header: bool,
}

impl<W: Write> BlockFileSink<W> {
    pub fn new(w: W) -> Self {
        BlockFileSink {
            out: BufWriter::with_capacity(1 << 16, w),
            pending: Vec::with_capacity(BLOCK_RECORDS),
            seq: 0,
            written: 0,
            header: false,
        }
    }

    /// Writes the first `n` pending records as one entry.
    fn emit(&mut self, n: usize) -> io::Result<()> {
        if !self.header {
            self.out.write_all(&file_header())?;
            self.header = true;
        }
        if n == 0 {
            return Ok(());
        }
        let block = encode_records(&self.pending[..n], LEVEL);
        self.seq += 1;
        let head = encode_entry(self.seq, self.written, 0, n as u32, &block);
        self.out.write_all(&head)?;
        self.out.write_all(&block)?;
        self.written += n as u64;
        self.pending.drain(..n);
        Ok(())
    }
}

impl<W: Write + Send> RecordSink for BlockFileSink<W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.write_parts(&[records])
    }

    /// Fills the pending block a piece at a time, so no more than one
    /// block's records are ever copied, however large the epoch.
    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> io::Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let room = BLOCK_RECORDS - self.pending.len();
                let (now, later) = rest.split_at(room.min(rest.len()));
                self.pending.extend_from_slice(now);
                rest = later;
                if self.pending.len() >= BLOCK_RECORDS {
                    self.emit(BLOCK_RECORDS)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit(self.pending.len())?;
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: not a vmflow record file or spool segment (it starts with neither a \
         VMSG header nor a VMSP entry)",
        path.display()
    )]
    NotBlocks { path: PathBuf },
    /// Writing the records out failed (a closed pipe ends `cat` quietly).
    #[error("output: {0}")]
    Output(#[source] io::Error),
}

/// What reading one or more files found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub entries: u64,
    pub records: u64,
    /// Bytes no intact entry covers (skipped; the scan went on after them).
    pub damaged_bytes: u64,
    /// Entries whose CRC held but whose block did not decode, and the
    /// records they said they held.
    pub bad_blocks: u64,
    pub bad_block_records: u64,
}

/// Reads every intact entry of the file at `path` in order, handing each
/// block's records to `each`. Damaged stretches are skipped (counted in the
/// stats); the scan goes on at the next intact entry, as the spool's does.
pub fn read_file(
    path: &Path,
    stats: &mut ReadStats,
    mut each: impl FnMut(&[FlowRecord]) -> io::Result<()>,
) -> Result<(), BlockFileError> {
    let mut r = BlockReader::open(path)?;
    let read = (|| {
        while let Some(recs) = r.next_block()? {
            each(&recs).map_err(BlockFileError::Output)?;
        }
        Ok(())
    })();
    stats.add(&r.stats);
    read
}

impl ReadStats {
    pub fn add(&mut self, o: &ReadStats) {
        self.entries += o.entries;
        self.records += o.records;
        self.damaged_bytes += o.damaged_bytes;
        self.bad_blocks += o.bad_blocks;
        self.bad_block_records += o.bad_block_records;
    }

    /// Whether anything was skipped.
    pub fn damaged(&self) -> bool {
        self.damaged_bytes > 0 || self.bad_blocks > 0
    }

    /// Says what was skipped in `name`, if anything (`cat`, `query`).
    pub fn warn_if_damaged(&self, name: &str) {
        if self.damaged() {
            tracing::warn!(
                "{name}: skipped {} damaged bytes and {} undecodable blocks ({} records); \
                 every intact entry was read",
                self.damaged_bytes,
                self.bad_blocks,
                self.bad_block_records
            );
        }
    }
}

/// The records of a record file or spool segment, a block at a time (in
/// file order; within a block, by `first_ns`).
pub struct BlockReader<R> {
    r: R,
    path: PathBuf,
    pos: u64,
    len: u64,
    last_seq: u64,
    entry: Vec<u8>,
    /// What the reading has found so far.
    pub stats: ReadStats,
}

impl BlockReader<File> {
    pub fn open(path: &Path) -> Result<Self, BlockFileError> {
        let f = File::open(path).map_err(io_at(path))?;
        let len = f.metadata().map_err(io_at(path))?.len();
        BlockReader::new(f, len, path)
    }
}

impl<R: Read + Seek> BlockReader<R> {
    /// A reader of `len` bytes of `r` (`path` names it in errors).
    pub fn new(mut r: R, len: u64, path: &Path) -> Result<Self, BlockFileError> {
        let mut head = vec![0u8; SEG_HEADER.min(len as usize)];
        r.read_exact(&mut head).map_err(io_at(path))?;
        let pos = if len == 0 {
            // Created and nothing written yet (a collector's hour file
            // after a crash): no records, not damage.
            0
        } else if parse_header(&head).is_some() {
            SEG_HEADER as u64
        } else if head.starts_with(ENTRY_MAGIC) {
            // A spool segment from before segments had headers.
            0
        } else {
            return Err(BlockFileError::NotBlocks {
                path: path.to_path_buf(),
            });
        };
        Ok(BlockReader {
            r,
            path: path.to_path_buf(),
            pos,
            len,
            last_seq: 0,
            entry: Vec::new(),
            stats: ReadStats::default(),
        })
    }

    /// The next intact block's records; `None` at the end of the file.
    pub fn next_block(&mut self) -> Result<Option<Vec<FlowRecord>>, BlockFileError> {
        while let Some(e) = self.next_entry()? {
            match decode_records(&self.entry[ENTRY_HEADER..]) {
                Ok(recs) => {
                    self.stats.records += recs.len() as u64;
                    return Ok(Some(recs));
                }
                Err(_) => {
                    self.stats.bad_blocks += 1;
                    self.stats.bad_block_records += u64::from(e.records);
                }
            }
        }
        Ok(None)
    }

    /// The record count of the next intact entry, its block not decoded.
    pub fn next_count(&mut self) -> Result<Option<u32>, BlockFileError> {
        let e = self.next_entry()?;
        if let Some(e) = e {
            self.stats.records += u64::from(e.records);
        }
        Ok(e.map(|e| e.records))
    }

    /// The next intact entry (read into `self.entry`), skipping damage.
    fn next_entry(&mut self) -> Result<Option<Entry>, BlockFileError> {
        let io_err = io_at(&self.path);
        while self.pos < self.len {
            let found = match read_entry(&mut self.r, self.pos, self.len, &mut self.entry)
                .map_err(&io_err)?
            {
                Some(e) if e.seq > self.last_seq => Some(e),
                _ => None,
            };
            let Some(e) = found else {
                let next = resync(
                    &mut self.r,
                    self.pos + 1,
                    self.len,
                    self.last_seq,
                    &mut self.entry,
                )
                .map_err(&io_err)?;
                self.stats.damaged_bytes += next - self.pos;
                self.pos = next;
                continue;
            };
            self.last_seq = e.seq;
            self.pos += e.size();
            self.stats.entries += 1;
            return Ok(Some(e));
        }
        Ok(None)
    }
}

/// Whether `head`, a file's first bytes, starts a record file or spool
/// segment.
pub fn looks_like_blocks(head: &[u8]) -> bool {
    head.starts_with(SEG_MAGIC) || head.starts_with(ENTRY_MAGIC)
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> BlockFileError + '_ {
    move |source| BlockFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The header a record file starts with: a segment header of epoch 0 (a
/// file of its own, not a spool's record stream).
pub fn file_header() -> [u8; SEG_HEADER] {
    encode_header(0)
}

/// Appends `records` to `out` as one entry with sequence number 0, for a
/// writer that numbers entries once it knows where they land
/// ([`number_entries`]).
pub fn push_entry(out: &mut Vec<u8>, records: &[FlowRecord]) {
    let block = encode_records(records, LEVEL);
    out.extend_from_slice(&encode_entry(0, 0, 0, records.len() as u32, &block));
    out.extend_from_slice(&block);
}

/// Numbers the entries of `bytes`, which will be written at offset `at` of
/// a file: each gets its own offset plus one, so numbers rise through the
/// file as readers require, with no count kept anywhere.
pub fn number_entries(bytes: &mut [u8], at: u64) {
    let mut pos = 0;
    while pos < bytes.len() {
        match renumber_entry(&mut bytes[pos..], at + pos as u64 + 1) {
            Some(size) => pos += size,
            None => break,
        }
    }
}

/// The intact entry at `pos`, read into `buf` (header and block), if any.
fn read_entry<R: Read + Seek>(
    f: &mut R,
    pos: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Entry>> {
    if len - pos < ENTRY_HEADER as u64 {
        return Ok(None);
    }
    buf.resize(ENTRY_HEADER, 0);
    f.seek(SeekFrom::Start(pos))?;
    f.read_exact(buf)?;
    if !buf.starts_with(ENTRY_MAGIC) {
        return Ok(None);
    }
    let mut l = [0u8; 4];
    l.copy_from_slice(&buf[32..36]);
    let block = u32::from_le_bytes(l);
    if block > MAX_BLOCK || u64::from(block) > len - pos - ENTRY_HEADER as u64 {
        return Ok(None);
    }
    buf.resize(ENTRY_HEADER + block as usize, 0);
    f.read_exact(&mut buf[ENTRY_HEADER..])?;
    Ok(parse_entry(buf, pos))
}

/// The offset of the next intact entry at or after `from` that follows
/// `last_seq`, or `len` if there is none.
fn resync<R: Read + Seek>(
    f: &mut R,
    from: u64,
    len: u64,
    last_seq: u64,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    let mut chunk = vec![0u8; CHUNK];
    let mut at = from;
    while at + ENTRY_HEADER as u64 <= len {
        let n = CHUNK.min((len - at) as usize);
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut chunk[..n])?;
        let hits: Vec<u64> = chunk[..n]
            .windows(ENTRY_MAGIC.len())
            .enumerate()
            .filter(|(_, w)| *w == ENTRY_MAGIC)
            .map(|(i, _)| at + i as u64)
            .collect();
        for hit in hits {
            if read_entry(f, hit, len, buf)?.is_some_and(|e| e.seq > last_seq) {
                return Ok(hit);
            }
        }
        // Overlap by the magic's length less one: a magic across the cut.
        at += (n - (ENTRY_MAGIC.len() - 1)).max(1) as u64;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use vmflow_proto::flow_id;

    fn rec(i: u64) -> FlowRecord {
        let first = 1_700_000_000_000_000_000 + i * 1_000_000;
        let mut r = crate::testkit::record(0, first);
        r.src_addr = IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8));
        r.flow_id = flow_id(
            None, r.proto, r.src_addr, r.src_port, r.dst_addr, r.dst_port, first,
        );
        r.last_ns = first + 5_000_000;
        r.fwd_packets = 3 + i % 5;
        r.fwd_bytes = 180 + i;
        r
    }

    fn write(n: u64) -> (Vec<FlowRecord>, Vec<u8>) {
        let recs: Vec<FlowRecord> = (0..n).map(rec).collect();
        let mut out = Vec::new();
        let mut s = BlockFileSink::new(&mut out);
        for c in recs.chunks(1000) {
            s.write(c).unwrap();
        }
        s.finish().unwrap();
        drop(s);
        (recs, out)
    }

    fn read(bytes: &[u8]) -> (Vec<FlowRecord>, ReadStats) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.blocks");
        std::fs::write(&p, bytes).unwrap();
        let mut got = Vec::new();
        let mut st = ReadStats::default();
        read_file(&p, &mut st, |r| {
            got.extend_from_slice(r);
            Ok(())
        })
        .unwrap();
        (got, st)
    }

    fn sorted(mut v: Vec<FlowRecord>) -> Vec<FlowRecord> {
        v.sort_by_key(|r| (r.first_ns, r.flow_id));
        v
    }

    #[test]
    fn records_come_back_whole() {
        let (recs, bytes) = write(10_000);
        let (got, st) = read(&bytes);
        assert_eq!(st.entries, 3, "4096 + 4096 + 1808");
        assert_eq!(st.records, 10_000);
        assert_eq!(st.damaged_bytes, 0);
        assert_eq!(sorted(got), sorted(recs));
        // An empty run is still a file of this format.
        let (none, empty) = write(0);
        assert!(none.is_empty());
        assert_eq!(read(&empty).1, ReadStats::default());
    }

    #[test]
    fn damage_costs_only_the_entry_it_hits() {
        let (recs, mut bytes) = write(10_000);
        // A byte in the middle of the second entry's block.
        let second = SEG_HEADER + ENTRY_HEADER + {
            let e = parse_entry(&bytes[SEG_HEADER..], 0).unwrap();
            e.len as usize
        };
        bytes[second + ENTRY_HEADER + 10] ^= 0xff;
        let (got, st) = read(&bytes);
        assert_eq!(st.entries, 2);
        assert_eq!(st.records, 4096 + 1808);
        assert!(st.damaged_bytes > 0);
        let want: Vec<FlowRecord> = sorted(recs)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !(4096..8192).contains(i))
            .map(|(_, r)| r)
            .collect();
        assert_eq!(sorted(got), want);
        // A cut file keeps every whole entry before the cut.
        let (got, st) = read(&bytes[..bytes.len() - 7]);
        assert_eq!((st.entries, st.records), (1, 4096));
        assert_eq!(got.len(), 4096);
    }

    /// Any damage (a cut, flipped bits, a run of garbage) reads without a
    /// panic, and only records that were written come back.
    #[test]
    fn damaged_files_give_only_written_records() {
        let (recs, bytes) = write(5_000);
        let written: std::collections::HashSet<u64> = recs.iter().map(|r| r.flow_id).collect();
        let mut rng = crate::rng::Rng::new(7);
        for _ in 0..300 {
            let mut b = bytes.clone();
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b.truncate(at),
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                _ => {
                    for x in b.iter_mut().skip(at).take(64) {
                        *x = rng.below(256) as u8;
                    }
                }
            }
            let len = b.len() as u64;
            let Ok(mut r) = BlockReader::new(std::io::Cursor::new(&b), len, Path::new("x")) else {
                continue;
            };
            while let Some(got) = r.next_block().unwrap() {
                assert!(got.iter().all(|g| written.contains(&g.flow_id)));
            }
            assert!(r.stats.records <= 5_000);
        }
    }

    #[test]
    fn spool_segments_read_like_record_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool =
            crate::export::spool::Spool::open(crate::disk::real(), dir.path(), 1 << 30).unwrap();
        let recs: Vec<FlowRecord> = (0..3000).map(rec).collect();
        for c in recs.chunks(1024) {
            spool
                .append(c.len() as u32, 0, &encode_records(c, LEVEL))
                .unwrap();
        }
        spool.sync_now().unwrap();
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "spool"))
            .unwrap();
        let (mut got, mut st) = (Vec::new(), ReadStats::default());
        read_file(&seg, &mut st, |r| {
            got.extend_from_slice(r);
            Ok(())
        })
        .unwrap();
        assert_eq!((st.entries, st.records, st.damaged_bytes), (3, 3000, 0));
        assert_eq!(sorted(got), recs);
    }

    #[test]
    fn other_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ndjson");
        std::fs::write(&p, b"{\"flow_id\":1}\n").unwrap();
        let e = read_file(&p, &mut ReadStats::default(), |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("x.ndjson") && e.to_string().contains("not a vmflow"));
    }
}
