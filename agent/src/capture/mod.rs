//! Where packets come from: capture files read once (libpcap, pcapng, NetMon
//! 2.x; plain, gzip or zstd; from standard input too) and the live AF_PACKET ring (Linux only). The format is detected from the first
//! bytes, never from the file name: Network Watcher writes `.cap` files whose
//! format is not documented, so all three have to work. Sources that are
//! followed over time (folders, Blob containers) are in `follow/`, above.

mod buf;
mod error;
mod files;
pub mod filter;
#[cfg(test)]
pub(crate) mod fuzz;
mod input;
// The platform seam for live capture: the AF_PACKET ring on Linux, a
// stand-in with the same items that refuses elsewhere.
#[cfg(target_os = "linux")]
pub mod live;
#[cfg(not(target_os = "linux"))]
#[path = "live_unsupported.rs"]
pub mod live;
mod live_common;
pub mod live_loop;
mod netmon;
mod pcap;
mod pcapng;
pub mod progress;

pub use crate::pipeline::FileWarning;
pub use error::SourceError;
pub use files::{check_readable, replay, replay_watched, replay_with_progress, CaptureFiles};
pub use progress::ReadProgress;

use std::io::{self, Read, Seek};

use buf::ChunkReader;

pub use crate::packet::RawPacket;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt {format} data at offset {offset}: {what}")]
    Corrupt {
        format: &'static str,
        offset: u64,
        what: String,
    },
    #[error("not a capture file we can read (first bytes {magic})")]
    UnknownFormat { magic: String },
    #[error("unsupported {format} file: {what}")]
    Unsupported { format: &'static str, what: String },
    /// A compressed capture whose stream is cut short or damaged: every
    /// complete record before `offset` was read.
    #[error(
        "{compression} stream truncated or damaged after {offset} bytes of capture data: {source}"
    )]
    Damaged {
        compression: &'static str,
        offset: u64,
        source: io::Error,
    },
    /// A whole file too short to hold a capture header (a file being written
    /// may be; a followed source waits for it instead).
    #[error("not a capture: {0}")]
    TooShort(String),
}

/// The input stopped in the middle of a record: everything before it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub offset: u64,
    pub what: String,
}

pub enum CaptureReader<R> {
    Pcap(pcap::PcapReader<R>),
    PcapNg(pcapng::PcapNgReader<R>),
    NetMon(netmon::NetMonReader<R>),
    /// Too short to hold a file header (an empty file, or one just created).
    Empty(Truncation),
}

impl<R: Read + Seek> CaptureReader<R> {
    pub fn open(inner: R) -> Result<Self, CaptureError> {
        let mut r = ChunkReader::new(inner);
        if !r.fill(4)? {
            let n = r.available();
            return Ok(CaptureReader::Empty(Truncation {
                offset: 0,
                what: format!("file holds {n} bytes, too short for a capture header"),
            }));
        }
        let m = r.peek(4);
        let magic = [m[0], m[1], m[2], m[3]];
        match magic {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => Ok(pcap::PcapReader::open(r)?
                .map(CaptureReader::Pcap)
                .unwrap_or_else(CaptureReader::Empty)),
            [0x0a, 0x0d, 0x0d, 0x0a] => Ok(CaptureReader::PcapNg(pcapng::PcapNgReader::new(r))),
            [b'G', b'M', b'B', b'U'] => Ok(netmon::NetMonReader::open(r)?
                .map(CaptureReader::NetMon)
                .unwrap_or_else(CaptureReader::Empty)),
            [b'R', b'T', b'S', b'S'] => Err(CaptureError::Unsupported {
                format: "netmon",
                what: "Network Monitor 1.x (RTSS) files are not supported; convert with editcap"
                    .into(),
            }),
            _ => Err(CaptureError::UnknownFormat {
                magic: magic
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
        }
    }

    /// Every packet to the end of the input (see [`Self::truncation`]) or the
    /// first error. One dispatch on the format for the whole file instead of
    /// one per packet: the read loop is the reader thread's, which the flow
    /// shard waits on.
    pub fn for_each_packet(
        &mut self,
        mut f: impl FnMut(RawPacket<'_>),
    ) -> Result<(), CaptureError> {
        match self {
            CaptureReader::Pcap(r) => {
                while let Some(p) = r.next_packet()? {
                    f(p);
                }
            }
            CaptureReader::PcapNg(r) => {
                while let Some(p) = r.next_packet()? {
                    f(p);
                }
            }
            CaptureReader::NetMon(r) => {
                while let Some(p) = r.next_packet()? {
                    f(p);
                }
            }
            CaptureReader::Empty(_) => {}
        }
        Ok(())
    }

    /// The next packet, or `None` at the end of the input (see [`Self::truncation`]).
    #[inline]
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        match self {
            CaptureReader::Pcap(r) => r.next_packet(),
            CaptureReader::PcapNg(r) => r.next_packet(),
            CaptureReader::NetMon(r) => r.next_packet(),
            CaptureReader::Empty(_) => Ok(None),
        }
    }

    /// Clears a truncation so the next call retries the cut record (a file
    /// still being written). An `Empty` reader must be opened again instead.
    pub fn resume(&mut self) {
        match self {
            CaptureReader::Pcap(r) => r.resume(),
            CaptureReader::PcapNg(r) => r.resume(),
            CaptureReader::NetMon(r) => r.resume(),
            CaptureReader::Empty(_) => {}
        }
    }

    /// Set once the input has ended inside a record.
    pub fn truncation(&self) -> Option<&Truncation> {
        match self {
            CaptureReader::Pcap(r) => r.truncation.as_ref(),
            CaptureReader::PcapNg(r) => r.truncation.as_ref(),
            CaptureReader::NetMon(r) => r.truncation.as_ref(),
            CaptureReader::Empty(t) => Some(t),
        }
    }

    /// A NetMon file still being written: its frame table, which the
    /// writer appends last, is missing.
    pub fn is_unfinished_netmon(&self) -> bool {
        matches!(self, CaptureReader::NetMon(r) if !r.has_table())
    }

    pub fn format(&self) -> &'static str {
        match self {
            CaptureReader::Pcap(_) => "pcap",
            CaptureReader::PcapNg(_) => "pcapng",
            CaptureReader::NetMon(_) => "netmon",
            CaptureReader::Empty(_) => "empty",
        }
    }
}

/// Reads a u16/u32/u64 in a file's byte order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endian {
    pub big: bool,
}

impl Endian {
    #[inline]
    pub fn u16(self, b: &[u8], at: usize) -> u16 {
        let a = [b[at], b[at + 1]];
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    #[inline]
    pub fn u32(self, b: &[u8], at: usize) -> u32 {
        let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    #[inline]
    pub fn u64(self, b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
}
