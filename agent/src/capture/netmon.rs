//! Microsoft Network Monitor 2.x (`GMBU`). Records are found through the frame
//! table at the end of the file; a file still being written has none yet, and
//! is then scanned record by record from the end of the 128-byte header.

use std::io::{Read, Seek};

use super::{buf::ChunkReader, CaptureError, Endian, RawPacket, Truncation};

const HEADER: usize = 128;
const MAX_RECORD: u32 = 16 << 20;
const LE: Endian = Endian { big: false };
/// 100 ns ticks between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX: u64 = 116_444_736_000_000_000;

pub struct NetMonReader<R> {
    r: ChunkReader<R>,
    minor: u8,
    network: u16,
    start_ns: u64,
    table: Option<Vec<u32>>,
    next: usize,
    pub truncation: Option<Truncation>,
}

impl<R: Read + Seek> NetMonReader<R> {
    pub fn open(mut r: ChunkReader<R>) -> Result<Result<Self, Truncation>, CaptureError> {
        if !r.fill(HEADER)? {
            return Ok(Err(Truncation {
                offset: 0,
                what: format!(
                    "NetMon header cut after {} of {HEADER} bytes",
                    r.available()
                ),
            }));
        }
        let h = r.peek(HEADER);
        let (minor, major) = (h[4], h[5]);
        if major != 2 {
            return Err(CaptureError::Unsupported {
                format: "netmon",
                what: format!("version {major}.{minor}"),
            });
        }
        let network = LE.u16(h, 6);
        let st: Vec<u16> = (0..8).map(|i| LE.u16(h, 8 + 2 * i)).collect();
        // SYSTEMTIME: year, month, day-of-week, day, hour, minute, second, ms.
        // Taken as UTC: the file does not say which zone it was written in,
        // and 2.3 files carry exact UTC per packet anyway.
        let start_ns = systemtime_ns(st[0], st[1], st[3], st[4], st[5], st[6], st[7]);
        let table_off = LE.u32(h, 24);
        let table_len = LE.u32(h, 28);
        let file_len = r.len()?;
        let table = if table_off as usize >= HEADER
            && table_len > 0
            && table_len.is_multiple_of(4)
            && u64::from(table_off) + u64::from(table_len) <= file_len
        {
            r.seek_to(u64::from(table_off))?;
            if !r.fill(table_len as usize)? {
                None
            } else {
                let t = r.peek(table_len as usize);
                Some((0..t.len() / 4).map(|i| LE.u32(t, 4 * i)).collect())
            }
        } else {
            None
        };
        r.seek_to(HEADER as u64)?;
        Ok(Ok(NetMonReader {
            r,
            minor,
            network,
            start_ns,
            table,
            next: 0,
            truncation: None,
        }))
    }

    fn trailer_len(&self) -> usize {
        match self.minor {
            0 => 0,
            1 => 2,
            2 => 6,
            _ => 15,
        }
    }

    /// After a truncation at the end of a growing file: try again from the
    /// same record when more bytes may have arrived.
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    pub fn resume(&mut self) {
        self.truncation = None;
        self.r.resume();
    }

    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if self.truncation.is_some() {
            return Ok(None);
        }
        let at = match &self.table {
            Some(t) => match t.get(self.next) {
                Some(&off) => {
                    self.r.seek_to(u64::from(off))?;
                    u64::from(off)
                }
                None => return Ok(None),
            },
            None => self.r.offset(),
        };
        if !self.r.fill(16)? {
            let have = self.r.available();
            if have > 0 || self.table.is_some() {
                self.truncation = Some(Truncation {
                    offset: at,
                    what: format!("frame header cut after {have} of 16 bytes"),
                });
            }
            return Ok(None);
        }
        let h = self.r.peek(16);
        let delta_us = LE.u64(h, 0);
        let orig = LE.u32(h, 8);
        let incl = LE.u32(h, 12);
        if incl > MAX_RECORD {
            return Err(CaptureError::Corrupt {
                format: "netmon",
                offset: at,
                what: format!("frame length {incl}"),
            });
        }
        let tl = self.trailer_len();
        let need = 16 + incl as usize + tl;
        if !self.r.fill(need)? {
            self.truncation = Some(Truncation {
                offset: at,
                what: format!("frame cut after {} of {need} bytes", self.r.available()),
            });
            return Ok(None);
        }
        self.next += 1;
        let rec = self.r.take(need);
        let data = &rec[16..16 + incl as usize];
        let trailer = &rec[16 + incl as usize..];
        let network = if tl >= 2 {
            LE.u16(trailer, 0)
        } else {
            self.network
        };
        let mut ts_ns = self
            .start_ns
            .saturating_add(((delta_us as i64).max(0) as u64).saturating_mul(1_000));
        if tl >= 14 {
            let ft = LE.u64(trailer, 6);
            if ft > FILETIME_UNIX {
                ts_ns = (ft - FILETIME_UNIX).saturating_mul(100);
            }
        }
        Ok(Some(RawPacket {
            ts_ns,
            linktype: linktype_of(network),
            orig_len: orig.max(incl),
            data,
        }))
    }
}

/// NetMon network types → LINKTYPE_*. NetMon 3 stores pcap link types as
/// 0xE000 + type; its metadata records (0xFFE0 and up) map outside the
/// LINKTYPE range so they are skipped and counted by type.
fn linktype_of(network: u16) -> u32 {
    match network {
        0 | 1 => 1,
        7..=9 => 101,
        n if (0xe000..0xffe0).contains(&n) => u32::from(n - 0xe000),
        n => 0x1_0000 + u32::from(n),
    }
}

fn systemtime_ns(y: u16, mo: u16, d: u16, h: u16, mi: u16, s: u16, ms: u16) -> u64 {
    let days = crate::calendar::days_from_civil(
        i64::from(y),
        i64::from(mo.clamp(1, 12)),
        i64::from(d.clamp(1, 31)),
    );
    let secs = days * 86_400 + i64::from(h) * 3_600 + i64::from(mi) * 60 + i64::from(s);
    // Any 16-bit year fits in i64 seconds; nanoseconds saturate past 2554.
    (secs.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(ms) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_types() {
        assert_eq!(linktype_of(1), 1);
        assert_eq!(linktype_of(0xe000 + 113), 113);
        assert_eq!(linktype_of(9), 101);
        assert_eq!(linktype_of(0xfffe), 0x1_fffe);
    }
}
