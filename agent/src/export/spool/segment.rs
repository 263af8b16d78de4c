//! Segment files: a header naming the record stream (epoch), then entries.
//!
//! ```text
//! header  magic "VMSG" | version u32 = 2 | epoch u64 | crc32 u32 (of version and epoch) | 0 u32     (24 bytes)
//! entry   magic "VMSP" | seq u64 | first_record u64 | source_drops u64 | records u32 | len u32
//!         | crc32 u32 (of everything after the magic up to the CRC, and the block) | block[len]  (40 + len)
//! ```
//!
//! Little-endian. Segments written before epochs existed have no header and
//! start with an entry; they belong to the legacy epoch 0.
//!
//! A damaged entry is skipped, not the rest of its segment: the scan resyncs
//! on the next offset where a whole entry passes its CRC (a false match needs
//! a 32-bit CRC collision inside compressed data).

pub const SEG_MAGIC: &[u8; 4] = b"VMSG";
pub const SEG_VERSION: u32 = 2;
pub const SEG_HEADER: usize = 24;
pub const ENTRY_MAGIC: &[u8; 4] = b"VMSP";
pub const ENTRY_HEADER: usize = 40;
pub const MAX_BLOCK: u32 = 64 << 20;

// Entry header offsets.
const E_SEQ: usize = 4;
const E_FIRST: usize = 12;
const E_DROPS: usize = 20;
const E_RECORDS: usize = 28;
const E_LEN: usize = 32;
const E_CRC: usize = 36;

/// Where a batch lives in its segment and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// Position of the batch's first record in the agent's record stream.
    pub first_record: u64,
    pub source_drops: u64,
    pub records: u32,
    /// Offset of the entry header in the file.
    pub offset: u64,
    pub len: u32,
}

impl Entry {
    /// Record position after this batch.
    pub fn end_record(&self) -> u64 {
        self.first_record + u64::from(self.records)
    }

    pub fn size(&self) -> u64 {
        (ENTRY_HEADER + self.len as usize) as u64
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub fn encode_header(epoch: u64) -> [u8; SEG_HEADER] {
    let mut h = [0u8; SEG_HEADER];
    h[..4].copy_from_slice(SEG_MAGIC);
    h[4..8].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&h[4..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The epoch of a segment header; `None` if `b` does not start with one.
pub fn parse_header(b: &[u8]) -> Option<u64> {
    let h = b.get(..SEG_HEADER)?;
    if &h[..4] != SEG_MAGIC || u32_at(h, 4) != SEG_VERSION {
        return None;
    }
    (crc32fast::hash(&h[4..16]) == u32_at(h, 16)).then(|| u64_at(h, 8))
}

/// The header of an entry holding `block`.
pub fn encode_entry(
    seq: u64,
    first_record: u64,
    source_drops: u64,
    records: u32,
    block: &[u8],
) -> [u8; ENTRY_HEADER] {
    let mut h = [0u8; ENTRY_HEADER];
    h[..4].copy_from_slice(ENTRY_MAGIC);
    h[E_SEQ..E_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    h[E_FIRST..E_FIRST + 8].copy_from_slice(&first_record.to_le_bytes());
    h[E_DROPS..E_DROPS + 8].copy_from_slice(&source_drops.to_le_bytes());
    h[E_RECORDS..E_RECORDS + 4].copy_from_slice(&records.to_le_bytes());
    h[E_LEN..E_LEN + 4].copy_from_slice(&(block.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[4..E_CRC]);
    crc.update(block);
    h[E_CRC..E_CRC + 4].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Gives the entry at the start of `b` the sequence number `seq` (its CRC
/// follows) and returns the entry's size; `None` if `b` does not start
/// with a whole entry header and block. For writers that learn where an
/// entry lands only after encoding it (the collector's hour files).
pub fn renumber_entry(b: &mut [u8], seq: u64) -> Option<usize> {
    let h = b.get(..ENTRY_HEADER)?;
    if &h[..4] != ENTRY_MAGIC {
        return None;
    }
    let size = ENTRY_HEADER + u32_at(h, E_LEN) as usize;
    let e = b.get_mut(..size)?;
    e[E_SEQ..E_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&e[4..E_CRC]);
    crc.update(&e[ENTRY_HEADER..]);
    e[E_CRC..E_CRC + 4].copy_from_slice(&crc.finalize().to_le_bytes());
    Some(size)
}

/// A whole, intact entry at the start of `b` (found at file `offset`).
pub fn parse_entry(b: &[u8], offset: u64) -> Option<Entry> {
    let h = b.get(..ENTRY_HEADER)?;
    if &h[..4] != ENTRY_MAGIC {
        return None;
    }
    let len = u32_at(h, E_LEN);
    if len > MAX_BLOCK {
        return None;
    }
    let body = b.get(ENTRY_HEADER..ENTRY_HEADER + len as usize)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[4..E_CRC]);
    crc.update(body);
    (crc.finalize() == u32_at(h, E_CRC)).then(|| Entry {
        seq: u64_at(h, E_SEQ),
        first_record: u64_at(h, E_FIRST),
        source_drops: u64_at(h, E_DROPS),
        records: u32_at(h, E_RECORDS),
        offset,
        len,
    })
}

/// What a segment file holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// `None`: no header (a segment of the legacy format, or a damaged header).
    pub epoch: Option<u64>,
    pub header: bool,
    /// Intact entries in file order, sequence numbers increasing.
    pub entries: Vec<Entry>,
    /// Byte ranges that hold no intact entry, in file order.
    pub damaged: Vec<(u64, u64)>,
    /// The end of the last intact entry (or of the header).
    pub valid_end: u64,
}

pub fn scan(b: &[u8]) -> Scan {
    let mut s = Scan {
        epoch: parse_header(b),
        ..Scan::default()
    };
    s.header = s.epoch.is_some();
    let mut at = if s.header { SEG_HEADER } else { 0 };
    s.valid_end = at as u64;
    while at < b.len() {
        let intact = parse_entry(&b[at..], at as u64)
            .filter(|e| s.entries.last().is_none_or(|p| e.seq > p.seq));
        if let Some(e) = intact {
            at += e.size() as usize;
            s.valid_end = at as u64;
            s.entries.push(e);
            continue;
        }
        // Resync: the next offset where an intact entry starts.
        let next = (at + 1..b.len().saturating_sub(ENTRY_HEADER - 1)).find(|&i| {
            &b[i..i + 4] == ENTRY_MAGIC
                && parse_entry(&b[i..], i as u64)
                    .is_some_and(|e| s.entries.last().is_none_or(|p| e.seq > p.seq))
        });
        let end = next.unwrap_or(b.len());
        s.damaged.push((at as u64, end as u64));
        at = end;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(epoch: u64, n: u64) -> (Vec<u8>, Vec<Entry>) {
        let mut b = encode_header(epoch).to_vec();
        let mut v = Vec::new();
        for i in 1..=n {
            let block: Vec<u8> = (0..(50 + i * 7)).map(|k| (k * i) as u8).collect();
            let off = b.len() as u64;
            b.extend_from_slice(&encode_entry(i, i * 10, 0, 10, &block));
            b.extend_from_slice(&block);
            v.push(parse_entry(&b[off as usize..], off).unwrap());
        }
        (b, v)
    }

    #[test]
    fn intact_segments_scan_whole() {
        let (b, v) = seg(7, 20);
        let s = scan(&b);
        assert_eq!(s.epoch, Some(7));
        assert_eq!(s.entries, v);
        assert!(s.damaged.is_empty());
        assert_eq!(s.valid_end, b.len() as u64);
    }

    /// A flipped byte anywhere in entry k loses entry k only.
    #[test]
    fn damage_loses_one_entry_not_the_rest() {
        let (good, v) = seg(1, 12);
        for k in [0usize, 5, 11] {
            let e = v[k];
            for at in [
                e.offset,
                e.offset + 9,
                e.offset + 39,
                e.offset + e.size() - 1,
            ] {
                let mut b = good.clone();
                b[at as usize] ^= 0x10;
                let s = scan(&b);
                let want: Vec<Entry> = v.iter().copied().filter(|x| x.seq != e.seq).collect();
                assert_eq!(s.entries, want, "entry {k}, byte {at}");
                assert_eq!(s.damaged, vec![(e.offset, e.offset + e.size())]);
            }
        }
    }

    #[test]
    fn a_torn_tail_is_damage_at_the_end() {
        let (good, v) = seg(1, 5);
        let b = &good[..good.len() - 3];
        let s = scan(b);
        assert_eq!(s.entries, v[..4]);
        assert_eq!(s.valid_end, v[4].offset);
        assert_eq!(s.damaged, vec![(v[4].offset, b.len() as u64)]);
    }

    /// A bounded fuzz in the suite (the cargo-fuzz target `storage` goes
    /// further): any damage, cut or garbage scans without a panic, and every
    /// entry found is intact where the scan says it is.
    #[test]
    fn any_bytes_scan_cleanly() {
        let (good, _) = seg(3, 30);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3_000 {
            let mut b = good.clone();
            match i % 3 {
                0 => b.truncate(next() as usize % good.len()),
                1 => {
                    for _ in 0..1 + i % 5 {
                        let at = next() as usize % b.len();
                        b[at] = next() as u8;
                    }
                }
                _ => {
                    let at = next() as usize % b.len();
                    let n = (next() % 64) as usize;
                    b.splice(at..at, (0..n).map(|_| next() as u8));
                }
            }
            let s = scan(&b);
            for e in &s.entries {
                let at = e.offset as usize;
                assert_eq!(parse_entry(&b[at..], e.offset), Some(*e));
            }
            assert!(s.entries.windows(2).all(|w| w[0].seq < w[1].seq));
        }
    }

    #[test]
    fn legacy_segments_have_no_header() {
        let (good, v) = seg(1, 3);
        let s = scan(&good[SEG_HEADER..]);
        assert_eq!(s.epoch, None);
        assert_eq!(s.entries.len(), 3);
        assert_eq!(s.entries[2].seq, v[2].seq);
    }
}
