//! libpcap savefiles: µs and ns timestamps, either byte order.

use std::io::Read;

use super::{buf::ChunkReader, CaptureError, Endian, RawPacket, Truncation};

/// Larger records than this are corruption, whatever the snap length says.
const MAX_RECORD: u32 = 16 << 20;

pub struct PcapReader<R> {
    r: ChunkReader<R>,
    e: Endian,
    nanos: bool,
    linktype: u32,
    max_incl: u32,
    pub truncation: Option<Truncation>,
}

impl<R: Read> PcapReader<R> {
    /// `Ok(Err(t))`-like: returns `None`-wrapped truncation when the header is cut.
    pub fn open(mut r: ChunkReader<R>) -> Result<Result<Self, Truncation>, CaptureError> {
        if !r.fill(24)? {
            return Ok(Err(Truncation {
                offset: 0,
                what: format!("pcap header cut after {} of 24 bytes", r.available()),
            }));
        }
        let h = r.take(24);
        let (big, nanos) = match [h[0], h[1], h[2], h[3]] {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            _ => (true, true),
        };
        let e = Endian { big };
        let major = e.u16(h, 4);
        if major != 2 {
            return Err(CaptureError::Corrupt {
                format: "pcap",
                offset: 4,
                what: format!("version {major}.{} (expected 2.x)", e.u16(h, 6)),
            });
        }
        let snaplen = e.u32(h, 16);
        let linktype = e.u32(h, 20) & 0xffff;
        Ok(Ok(PcapReader {
            r,
            e,
            nanos,
            linktype,
            max_incl: snaplen.clamp(262_144, MAX_RECORD),
            truncation: None,
        }))
    }

    #[inline]
    /// After a truncation at the end of a growing file: try again from the
    /// same record when more bytes may have arrived.
    pub fn resume(&mut self) {
        self.truncation = None;
        self.r.resume();
    }

    /// The next record. The common case (header and record both buffered)
    /// is a few loads and compares inlined into the read loop; refills,
    /// truncation and corruption take [`Self::next_slow`].
    // Always inlined into the read loop: left to the heuristics it stayed a
    // call returning its result through memory, ~90 instructions a packet.
    #[inline(always)]
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        let Some(h) = self.r.unread().first_chunk::<16>() else {
            return self.next_slow();
        };
        // The record header's four fields, with one byte-order test for all.
        let mut f = [0u32; 4];
        for (x, b) in f.iter_mut().zip(h.chunks_exact(4)) {
            *x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if self.e.big {
            f = f.map(u32::swap_bytes);
        }
        let [sec, frac, incl, orig] = f;
        let need = 16 + incl as usize;
        if self.truncation.is_some() || incl > self.max_incl || self.r.available() < need {
            return self.next_slow();
        }
        Ok(Some(self.record(sec, frac, incl, orig, need)))
    }

    /// Takes the record at the front of the buffer (`need` bytes buffered).
    #[inline(always)]
    fn record(&mut self, sec: u32, frac: u32, incl: u32, orig: u32, need: usize) -> RawPacket<'_> {
        let ts_ns = u64::from(sec) * 1_000_000_000
            + if self.nanos {
                u64::from(frac)
            } else {
                u64::from(frac) * 1_000
            };
        let linktype = self.linktype;
        let rec = self.r.take(need);
        RawPacket {
            ts_ns,
            linktype,
            orig_len: orig.max(incl),
            data: &rec[16..],
        }
    }

    #[cold]
    #[inline(never)]
    fn next_slow(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if self.truncation.is_some() {
            return Ok(None);
        }
        let at = self.r.offset();
        if !self.r.fill(16)? {
            let have = self.r.available();
            if have > 0 {
                self.truncation = Some(Truncation {
                    offset: at,
                    what: format!("record header cut after {have} of 16 bytes"),
                });
            }
            return Ok(None);
        }
        let h = self.r.peek(16);
        let e = self.e;
        let (sec, frac, incl, orig) = (e.u32(h, 0), e.u32(h, 4), e.u32(h, 8), e.u32(h, 12));
        if incl > self.max_incl {
            return Err(CaptureError::Corrupt {
                format: "pcap",
                offset: at,
                what: format!("record length {incl} exceeds the limit {}", self.max_incl),
            });
        }
        let need = 16 + incl as usize;
        if !self.r.fill(need)? {
            self.truncation = Some(Truncation {
                offset: at,
                what: format!("record cut after {} of {need} bytes", self.r.available()),
            });
            return Ok(None);
        }
        Ok(Some(self.record(sec, frac, incl, orig, need)))
    }
}
