//! What a running engine has done so far, for whoever watches it (the
//! metrics endpoint, the periodic stats line). The feeding thread publishes
//! the engine's own counts a few times a second; records are counted per
//! batch the sink receives. Nothing here is touched per packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use vmflow_engine::Progress;
use vmflow_proto::{EndReason, FlowRecord};

use super::Summary;
use crate::sink::RecordSink;

/// One capture interface, as last looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceNow {
    pub iface: String,
    pub packets: u64,
    pub kernel_drops: u64,
}

/// An engine's counts while it runs; shared between the feeding thread, the
/// sink and the watchers.
#[derive(Debug, Default)]
pub struct EngineLive {
    progress: Mutex<Progress>,
    ifaces: Mutex<Vec<IfaceNow>>,
    records: AtomicU64,
    flows: AtomicU64,
    gap_records: AtomicU64,
    record_packets: AtomicU64,
    record_bytes: AtomicU64,
    by_end: [AtomicU64; 7],
    /// Coverage gaps the source has reported (kernel drops, files missing).
    gaps: AtomicU64,
    /// Unix seconds of the last checkpoint written (0: none yet).
    checkpoint_unix: AtomicU64,
}

/// A copy of [`EngineLive`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineNow {
    pub progress: Progress,
    pub ifaces: Vec<IfaceNow>,
    pub records: u64,
    pub flows: u64,
    pub gap_records: u64,
    pub record_packets: u64,
    pub record_bytes: u64,
    /// Records by end reason, in [`EndReason::ALL`] order.
    pub by_end: [u64; 7],
    pub gaps: u64,
    pub checkpoint_unix: Option<u64>,
}

impl EngineLive {
    pub fn new() -> Arc<EngineLive> {
        Arc::default()
    }

    /// The engine's counts (from `Feed::progress`).
    pub fn publish(&self, p: Progress) {
        if let Ok(mut g) = self.progress.lock() {
            *g = p;
        }
    }

    /// The engine's final counts, once it has finished: what the run's
    /// summary says, so a last look agrees with it.
    pub fn publish_summary(&self, s: &Summary) {
        if let Ok(mut g) = self.progress.lock() {
            g.packets = s.packets;
            g.flow_packets = s.flow_packets;
            g.ip_bytes = s.ip_bytes;
            g.skipped = s.skipped.clone();
            // The tables are gone (or hold only flows kept for a
            // checkpoint); their last look stays.
        }
    }

    pub fn set_ifaces(&self, ifaces: Vec<IfaceNow>) {
        if let Ok(mut g) = self.ifaces.lock() {
            *g = ifaces;
        }
    }

    pub fn add_gap(&self) {
        self.gaps.fetch_add(1, Relaxed);
    }

    pub fn set_gaps(&self, n: u64) {
        self.gaps.store(n, Relaxed);
    }

    pub fn checkpointed(&self, unix_secs: u64) {
        self.checkpoint_unix.store(unix_secs, Relaxed);
    }

    /// Counts one batch of records, as the sink receives them.
    pub fn count_records(&self, records: &[FlowRecord]) {
        let (mut flows, mut gap, mut packets, mut bytes) = (0, 0, 0, 0);
        let mut by_end = [0u64; 7];
        for r in records {
            flows += u64::from(r.is_final);
            gap += u64::from(r.gap);
            packets += r.fwd_packets + r.rev_packets;
            bytes += r.fwd_bytes + r.rev_bytes;
            by_end[end_index(r.end_reason)] += 1;
        }
        self.records.fetch_add(records.len() as u64, Relaxed);
        self.flows.fetch_add(flows, Relaxed);
        self.gap_records.fetch_add(gap, Relaxed);
        self.record_packets.fetch_add(packets, Relaxed);
        self.record_bytes.fetch_add(bytes, Relaxed);
        for (a, n) in self.by_end.iter().zip(by_end) {
            if n > 0 {
                a.fetch_add(n, Relaxed);
            }
        }
    }

    pub fn now(&self) -> EngineNow {
        let mut by_end = [0u64; 7];
        for (v, a) in by_end.iter_mut().zip(&self.by_end) {
            *v = a.load(Relaxed);
        }
        let ck = self.checkpoint_unix.load(Relaxed);
        EngineNow {
            progress: self.progress.lock().map(|g| g.clone()).unwrap_or_default(),
            ifaces: self.ifaces.lock().map(|g| g.clone()).unwrap_or_default(),
            records: self.records.load(Relaxed),
            flows: self.flows.load(Relaxed),
            gap_records: self.gap_records.load(Relaxed),
            record_packets: self.record_packets.load(Relaxed),
            record_bytes: self.record_bytes.load(Relaxed),
            by_end,
            gaps: self.gaps.load(Relaxed),
            checkpoint_unix: (ck > 0).then_some(ck),
        }
    }
}

fn end_index(e: EndReason) -> usize {
    EndReason::ALL.iter().position(|x| *x == e).unwrap_or(0)
}

/// The name an end reason has in records (`end_of_input`, …).
pub fn end_reason_name(e: EndReason) -> &'static str {
    match e {
        EndReason::Idle => "idle",
        EndReason::Active => "active",
        EndReason::Fin => "fin",
        EndReason::Rst => "rst",
        EndReason::Evicted => "evicted",
        EndReason::EndOfInput => "end_of_input",
        EndReason::Shutdown => "shutdown",
    }
}

/// A sink that counts what passes through it into an [`EngineLive`].
pub struct CountingSink<S> {
    pub inner: S,
    live: Option<Arc<EngineLive>>,
}

impl<S: RecordSink> CountingSink<S> {
    pub fn new(inner: S, live: Option<Arc<EngineLive>>) -> Self {
        CountingSink { inner, live }
    }
}

impl<S: RecordSink> RecordSink for CountingSink<S> {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        let r = self.inner.write(records);
        if r.is_ok() {
            if let Some(l) = &self.live {
                l.count_records(records);
            }
        }
        r
    }
    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        let r = self.inner.write_parts(parts);
        if r.is_ok() {
            if let Some(l) = &self.live {
                parts.iter().for_each(|p| l.count_records(p));
            }
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl RecordSink for Nothing {
        fn write(&mut self, _: &[FlowRecord]) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn counts_records_by_end_reason_and_flows() {
        let live = EngineLive::new();
        let mut sink = CountingSink::new(Nothing, Some(live.clone()));
        let mut a = crate::testkit::record(1, 10);
        a.end_reason = EndReason::Fin;
        a.is_final = true;
        let mut b = crate::testkit::record(2, 20);
        b.end_reason = EndReason::Active;
        b.is_final = false;
        b.gap = true;
        sink.write(&[a.clone(), b.clone()]).unwrap();
        let now = live.now();
        assert_eq!(now.records, 2);
        assert_eq!(now.flows, 1);
        assert_eq!(now.gap_records, 1);
        assert_eq!(now.by_end[2], 1);
        assert_eq!(now.by_end[1], 1);
        assert_eq!(
            now.record_packets,
            a.fwd_packets + a.rev_packets + b.fwd_packets + b.rev_packets
        );
    }
}
