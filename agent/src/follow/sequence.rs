//! One capture stream cut into files (rolling files of a continuous capture,
//! renewed captures that overlap): packets an earlier file already held are
//! dropped, and packet time no file covers is reported as a coverage gap.
//!
//! Overlap: a file that starts before the previous one ended holds the same
//! packets for the overlap. Packets older than the previous file's last packet
//! by more than `window_ns` are covered by it; within the window each packet
//! is compared (timestamp and a digest of its bytes) with the previous file's
//! last packets, so a packet that only the new file saw is kept.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::capture::RawPacket;
use crate::pipeline::Feed;

/// Packet time that no capture covered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub start_ns: u64,
    pub end_ns: u64,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceStats {
    pub files: u64,
    /// Packets handed to the engine.
    pub packets: u64,
    /// Packets dropped because an earlier file held them (overlap).
    pub duplicates: u64,
    pub gaps: u64,
    pub gap_ns: u64,
}

/// Covered spans kept for the timeline; older ones are merged away.
const SPANS_KEPT: usize = 64;
const GAPS_KEPT: usize = 256;
/// Bound on the digests kept for the overlap window.
const TAIL_MAX: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
pub struct Sequence {
    window_ns: u64,
    max_silence_ns: u64,
    /// Last packet time of all earlier files.
    floor: Option<u64>,
    /// (time, digest) of earlier files' packets within the window of `floor`, sorted.
    prev_tail: Vec<(u64, u64)>,
    cur_first: Option<u64>,
    cur_max: Option<u64>,
    cur_tail: VecDeque<(u64, u64)>,
    /// Set when the previous file lost data (cut, corrupt, removed): the next
    /// file's start closes a gap whatever its length.
    lost: Option<String>,
    pub stats: SequenceStats,
    /// Covered packet time, merged across files (most recent last).
    pub covered: VecDeque<(u64, u64)>,
    pub gaps: VecDeque<Gap>,
}

impl Sequence {
    pub fn new(window_ns: u64, max_silence_ns: u64) -> Self {
        Sequence {
            window_ns,
            max_silence_ns,
            floor: None,
            prev_tail: Vec::new(),
            cur_first: None,
            cur_max: None,
            cur_tail: VecDeque::new(),
            lost: None,
            stats: SequenceStats::default(),
            covered: VecDeque::new(),
            gaps: VecDeque::new(),
        }
    }

    /// New settings (a restart with a changed configuration keeps the state).
    pub fn set_limits(&mut self, window_ns: u64, max_silence_ns: u64) {
        self.window_ns = window_ns;
        self.max_silence_ns = max_silence_ns;
    }

    /// One packet of the current file.
    #[inline]
    pub fn packet(&mut self, p: RawPacket<'_>, feed: &mut dyn Feed) {
        let d = digest(&p);
        if let Some(floor) = self.floor {
            if p.ts_ns.saturating_add(self.window_ns) < floor
                || (p.ts_ns <= floor && self.prev_tail.binary_search(&(p.ts_ns, d)).is_ok())
            {
                self.stats.duplicates += 1;
                return;
            }
        }
        if self.cur_first.is_none() {
            self.cur_first = Some(p.ts_ns);
            if let Some(floor) = self.floor {
                let lost = self.lost.take();
                let silent = p.ts_ns > floor.saturating_add(self.max_silence_ns);
                if silent || lost.is_some() {
                    let reason = lost.unwrap_or_else(|| {
                        "no capture file covers this time (between two files)".into()
                    });
                    self.gap(floor, p.ts_ns.max(floor), reason, feed);
                }
            }
        }
        let max = self.cur_max.map_or(p.ts_ns, |m| m.max(p.ts_ns));
        self.cur_max = Some(max);
        self.cur_tail.push_back((p.ts_ns, d));
        while self.cur_tail.len() > TAIL_MAX
            || self
                .cur_tail
                .front()
                .is_some_and(|&(t, _)| t.saturating_add(self.window_ns) < max)
        {
            self.cur_tail.pop_front();
        }
        self.stats.packets += 1;
        feed.packet(p);
    }

    /// The current file is over; `lost` says why its end may be missing.
    pub fn end_file(&mut self, lost: Option<String>) {
        self.stats.files += 1;
        if let (Some(first), Some(last)) = (self.cur_first, self.cur_max) {
            match self.covered.back_mut() {
                Some(s) if first <= s.1.saturating_add(self.max_silence_ns) => {
                    s.0 = s.0.min(first);
                    s.1 = s.1.max(last);
                }
                _ => self.covered.push_back((first, last)),
            }
            while self.covered.len() > SPANS_KEPT {
                self.covered.pop_front();
            }
            let floor = self.floor.map_or(last, |f| f.max(last));
            self.floor = Some(floor);
            let keep_from = floor.saturating_sub(self.window_ns);
            let mut tail: Vec<(u64, u64)> = self
                .prev_tail
                .drain(..)
                .chain(self.cur_tail.drain(..))
                .filter(|&(t, _)| t >= keep_from)
                .collect();
            tail.sort_unstable();
            tail.dedup();
            if tail.len() > TAIL_MAX {
                tail.drain(..tail.len() - TAIL_MAX);
            }
            self.prev_tail = tail;
        }
        self.cur_first = None;
        self.cur_max = None;
        self.cur_tail.clear();
        if lost.is_some() {
            self.lost = lost;
        }
    }

    /// Data was lost between files (a blob deleted before it was read): the
    /// next file's start closes a gap.
    pub fn note_loss(&mut self, reason: String) {
        self.lost = Some(reason);
    }

    /// Packet time no read file covers, logged, counted and kept (also for
    /// data that was there but came too late to be read in order).
    pub fn gap(&mut self, start_ns: u64, end_ns: u64, reason: String, feed: &mut dyn Feed) {
        tracing::warn!(
            "coverage gap: {} ns of packet time ({} → {}): {}",
            end_ns - start_ns,
            start_ns,
            end_ns,
            reason
        );
        self.stats.gaps += 1;
        self.stats.gap_ns += end_ns - start_ns;
        feed.gap(start_ns, end_ns);
        self.gaps.push_back(Gap {
            start_ns,
            end_ns,
            reason,
        });
        while self.gaps.len() > GAPS_KEPT {
            self.gaps.pop_front();
        }
    }
}

/// Identity of a packet for overlap matching: time, length and the captured
/// bytes (the same packet in two captures of one host has all three equal).
#[inline]
fn digest(p: &RawPacket<'_>) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(p.orig_len) ^ (p.data.len() as u64) << 32;
    let mut chunks = p.data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x2545_f491_4f6c_dd1d);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    h ^ h >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        packets: Vec<u64>,
        gaps: Vec<(u64, u64)>,
    }

    impl Feed for Seen {
        fn packet(&mut self, p: RawPacket<'_>) {
            self.packets.push(p.ts_ns);
        }
        fn tick(&mut self, _: u64) {}
        fn gap(&mut self, s: u64, e: u64) {
            self.gaps.push((s, e));
        }
    }

    fn pkt(ts: u64, tag: u8) -> (u64, [u8; 20]) {
        let mut d = [0u8; 20];
        d[0] = tag;
        d[8..16].copy_from_slice(&ts.to_le_bytes());
        (ts, d)
    }

    fn feed_file(s: &mut Sequence, f: &mut Seen, pkts: &[(u64, [u8; 20])]) {
        for (ts, d) in pkts {
            let p = RawPacket {
                ts_ns: *ts,
                linktype: 1,
                orig_len: 60,
                data: d,
            };
            s.packet(p, f);
        }
        s.end_file(None);
    }

    #[test]
    fn overlapping_files_count_each_packet_once() {
        let mut s = Sequence::new(1_000, 10_000);
        let mut f = Seen::default();
        // File A: 0..=5000 every 100 ns. File B starts at 3000 (overlap),
        // holds the same packets, plus one inside the window that A missed.
        let a: Vec<_> = (0..=50).map(|i| pkt(i * 100, 1)).collect();
        let mut b: Vec<_> = (30..=90).map(|i| pkt(i * 100, 1)).collect();
        b.insert(18, pkt(4_750, 2));
        feed_file(&mut s, &mut f, &a);
        feed_file(&mut s, &mut f, &b);
        let mut want: Vec<u64> = (0..=90).map(|i| i * 100).collect();
        want.push(4_750);
        let mut got = f.packets.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(s.stats.duplicates, 21);
        assert!(f.gaps.is_empty());
        assert_eq!(s.covered.iter().copied().collect::<Vec<_>>(), [(0, 9_000)]);
    }

    #[test]
    fn silence_between_files_and_a_cut_file_are_gaps() {
        let mut s = Sequence::new(1_000, 10_000);
        let mut f = Seen::default();
        feed_file(&mut s, &mut f, &[pkt(0, 1), pkt(5_000, 1)]);
        // 5 µs later: within max_silence, no gap.
        feed_file(&mut s, &mut f, &[pkt(10_000, 1), pkt(20_000, 1)]);
        assert!(f.gaps.is_empty());
        // 50 µs of nothing: a gap.
        feed_file(&mut s, &mut f, &[pkt(70_000, 1)]);
        assert_eq!(f.gaps, [(20_000, 70_000)]);
        // A file that lost its end: the next file closes a gap however near.
        let (ts, d) = pkt(71_000, 1);
        let p = RawPacket {
            ts_ns: ts,
            linktype: 1,
            orig_len: 60,
            data: &d,
        };
        s.packet(p, &mut f);
        s.end_file(Some("cut".into()));
        feed_file(&mut s, &mut f, &[pkt(72_000, 1)]);
        assert_eq!(f.gaps, [(20_000, 70_000), (71_000, 72_000)]);
        assert_eq!(s.gaps.back().map(|g| g.reason.as_str()), Some("cut"));
        assert_eq!(s.stats.gaps, 2);
        assert_eq!(s.stats.gap_ns, 51_000);
    }
}
