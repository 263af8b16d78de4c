//! pcapng: sections in either byte order, several interfaces with their own
//! link type and timestamp resolution, EPB, SPB and the obsolete PB.

use std::io::Read;

use super::{buf::ChunkReader, CaptureError, Endian, RawPacket, Truncation};

const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BOM: u32 = 0x1a2b_3c4d;
const MAX_BLOCK: u32 = 64 << 20;

#[derive(Clone, Copy, Debug)]
struct Iface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp unit: 10^-n (`pow2` false) or 2^-n seconds.
    res: u8,
    pow2: bool,
    offset_s: i64,
}

impl Iface {
    fn ts_ns(self, ts: u64) -> u64 {
        let ns: u128 = if self.pow2 {
            (u128::from(ts) * 1_000_000_000) >> self.res.min(127)
        } else if self.res <= 9 {
            u128::from(ts) * 10u128.pow(u32::from(9 - self.res))
        } else {
            u128::from(ts) / 10u128.pow(u32::from(self.res.min(38) - 9))
        };
        let ns = ns as i128 + i128::from(self.offset_s) * 1_000_000_000;
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
}

pub struct PcapNgReader<R> {
    r: ChunkReader<R>,
    e: Endian,
    ifaces: Vec<Iface>,
    /// SPBs carry no timestamp: they take the last one seen.
    last_ts: u64,
    pub truncation: Option<Truncation>,
}

impl<R: Read> PcapNgReader<R> {
    pub fn new(r: ChunkReader<R>) -> Self {
        PcapNgReader {
            r,
            e: Endian { big: false },
            ifaces: Vec::new(),
            last_ts: 0,
            truncation: None,
        }
    }

    fn corrupt(at: u64, what: String) -> CaptureError {
        CaptureError::Corrupt {
            format: "pcapng",
            offset: at,
            what,
        }
    }

    /// After a truncation at the end of a growing file: try again from the
    /// same record when more bytes may have arrived.
    pub fn resume(&mut self) {
        self.truncation = None;
        self.r.resume();
    }

    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        loop {
            if self.truncation.is_some() {
                return Ok(None);
            }
            let at = self.r.offset();
            if !self.r.fill(12)? {
                let have = self.r.available();
                if have > 0 {
                    self.truncation = Some(Truncation {
                        offset: at,
                        what: format!("block header cut after {have} bytes"),
                    });
                }
                return Ok(None);
            }
            let head = self.r.peek(12);
            let raw_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if raw_type == SHB {
                let bom = [head[8], head[9], head[10], head[11]];
                self.e = match (u32::from_le_bytes(bom), u32::from_be_bytes(bom)) {
                    (BOM, _) => Endian { big: false },
                    (_, BOM) => Endian { big: true },
                    _ => return Err(Self::corrupt(at + 8, "bad byte-order magic".into())),
                };
                self.ifaces.clear();
            } else if at == 0 {
                return Err(Self::corrupt(
                    0,
                    "does not start with a section header".into(),
                ));
            }
            let e = self.e;
            let btype = e.u32(head, 0);
            let len = e.u32(head, 4);
            if len < 12 || !len.is_multiple_of(4) || len > MAX_BLOCK {
                return Err(Self::corrupt(at, format!("block length {len}")));
            }
            if !self.r.fill(len as usize)? {
                self.truncation = Some(Truncation {
                    offset: at,
                    what: format!("block cut after {} of {len} bytes", self.r.available()),
                });
                return Ok(None);
            }
            let block = self.r.peek(len as usize);
            let trailer = e.u32(block, len as usize - 4);
            if trailer != len {
                return Err(Self::corrupt(
                    at,
                    format!("block length {len} but trailing length {trailer}"),
                ));
            }
            let body_len = len as usize - 12;
            match btype {
                SHB => {
                    if body_len < 16 {
                        return Err(Self::corrupt(at, "section header too short".into()));
                    }
                    let major = e.u16(block, 12);
                    if major != 1 {
                        return Err(Self::corrupt(at, format!("section version {major}")));
                    }
                }
                IDB => {
                    if body_len < 8 {
                        return Err(Self::corrupt(at, "interface block too short".into()));
                    }
                    let mut iface = Iface {
                        linktype: u32::from(e.u16(block, 8)),
                        snaplen: e.u32(block, 12),
                        res: 6,
                        pow2: false,
                        offset_s: 0,
                    };
                    parse_idb_options(e, &block[16..len as usize - 4], &mut iface);
                    self.ifaces.push(iface);
                }
                EPB | PB => {
                    if body_len < 20 {
                        return Err(Self::corrupt(at, "packet block too short".into()));
                    }
                    // The obsolete PB has a 16-bit interface id and a drop count.
                    let iface_id = if btype == EPB {
                        e.u32(block, 8) as usize
                    } else {
                        usize::from(e.u16(block, 8))
                    };
                    let ts = u64::from(e.u32(block, 12)) << 32 | u64::from(e.u32(block, 16));
                    let cap = e.u32(block, 20) as usize;
                    let orig = e.u32(block, 24);
                    if cap > body_len - 20 {
                        return Err(Self::corrupt(
                            at,
                            format!("captured length {cap} exceeds the block"),
                        ));
                    }
                    let iface = *self.ifaces.get(iface_id).ok_or_else(|| {
                        Self::corrupt(at, format!("packet names undefined interface {iface_id}"))
                    })?;
                    let ts_ns = iface.ts_ns(ts);
                    self.last_ts = ts_ns;
                    let block = self.r.take(len as usize);
                    return Ok(Some(RawPacket {
                        ts_ns,
                        linktype: iface.linktype,
                        orig_len: orig.max(cap as u32),
                        data: &block[28..28 + cap],
                    }));
                }
                SPB => {
                    if body_len < 4 {
                        return Err(Self::corrupt(at, "simple packet block too short".into()));
                    }
                    let iface = *self.ifaces.first().ok_or_else(|| {
                        Self::corrupt(at, "simple packet before any interface".into())
                    })?;
                    let orig = e.u32(block, 8);
                    let mut cap = (orig as usize).min(body_len - 4);
                    if iface.snaplen > 0 {
                        cap = cap.min(iface.snaplen as usize);
                    }
                    let ts_ns = self.last_ts;
                    let block = self.r.take(len as usize);
                    return Ok(Some(RawPacket {
                        ts_ns,
                        linktype: iface.linktype,
                        orig_len: orig.max(cap as u32),
                        data: &block[12..12 + cap],
                    }));
                }
                _ => {}
            }
            self.r.consume(len as usize);
        }
    }
}

fn parse_idb_options(e: Endian, mut opts: &[u8], iface: &mut Iface) {
    while opts.len() >= 4 {
        let code = e.u16(opts, 0);
        let len = usize::from(e.u16(opts, 2));
        let padded = (len + 3) & !3;
        let Some(val) = opts.get(4..4 + len) else {
            return;
        };
        match (code, len) {
            (0, _) => return,
            (9, 1) => {
                iface.pow2 = val[0] & 0x80 != 0;
                iface.res = val[0] & 0x7f;
            }
            (14, 8) => iface.offset_s = e.u64(val, 0) as i64,
            _ => {}
        }
        opts = opts.get(4 + padded..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_resolutions() {
        let mut i = Iface {
            linktype: 1,
            snaplen: 0,
            res: 6,
            pow2: false,
            offset_s: 0,
        };
        assert_eq!(i.ts_ns(1_500_000), 1_500_000_000);
        i.res = 9;
        assert_eq!(i.ts_ns(7), 7);
        i.res = 12;
        assert_eq!(i.ts_ns(7_000), 7);
        i.pow2 = true;
        i.res = 10;
        assert_eq!(i.ts_ns(1024), 1_000_000_000);
        i.pow2 = false;
        i.res = 6;
        i.offset_s = 10;
        assert_eq!(i.ts_ns(1), 10_000_001_000);
    }
}
