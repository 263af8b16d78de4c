//! Capture files taken apart and written the way a capture tool does
//! (in pieces, while the agent follows), and read back frame by frame.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::Frame;

/// A libpcap file's header and its records, each as its own byte string.
pub fn split_records(pcap: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let header = pcap[..24].to_vec();
    let mut recs = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        recs.push(pcap[at..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    (header, recs)
}

pub fn file_of(header: &[u8], recs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = header.to_vec();
    for r in recs {
        v.extend_from_slice(r);
    }
    v
}

/// Writes `bytes` to `path` in pieces of 1..=max bytes (records and headers
/// end up split across writes), pausing `pause` between pieces.
pub fn write_in_pieces(path: &Path, bytes: &[u8], seed: u64, max: usize, pause: Duration) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut x = seed | 1;
    let mut at = 0;
    while at < bytes.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (1 + (x as usize) % max).min(bytes.len() - at);
        f.write_all(&bytes[at..at + n]).unwrap();
        f.flush().unwrap();
        at += n;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

/// The frames of a capture, read back with the library's reader.
pub fn frames_of(path: &Path) -> Vec<Frame> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = vmflow::capture::CaptureReader::open(std::io::BufReader::new(f)).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        v.push(Frame {
            ts_ns: p.ts_ns,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
            linktype: p.linktype,
        });
    }
    v
}
