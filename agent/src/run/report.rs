//! What a run did, for the summary lines and the exit code.

use crate::capture::live::IfaceStats;
use crate::error::Error;
use crate::export::ipfix_sender::IpfixStats;
use crate::export::ship::ShipStats;
use crate::export::spool::SpoolStats;
use crate::follow::blob::BlobStats;
use crate::follow::sequence::{Gap, SequenceStats};
use crate::pipeline::{Report, Summary};

/// A run that could not start is an `Err` from `run_agent`; a run that
/// started reports here, and `error` says why it ended early (every record
/// produced before that is counted and was spooled).
#[derive(Default)]
pub struct RunReport {
    pub summary: Summary,
    pub ship: ShipStats,
    pub spool: SpoolStats,
    /// Records an earlier run of this agent had already spooled (skipped now).
    pub resumed_after: u64,
    pub error: Option<Error>,
    /// Live capture: packets and kernel drops per interface.
    pub ifaces: Vec<IfaceStats>,
    /// Followed sources: the coverage counters and the latest gaps.
    pub coverage: Option<(SequenceStats, Vec<Gap>)>,
    pub blob: Option<BlobStats>,
    /// Several followed sources: each one's own report, by stream name.
    pub streams: Vec<(String, RunReport)>,
    /// Followed sources: packet time covered by capture files (merged spans).
    pub covered: Vec<(u64, u64)>,
    /// Each `[[export.ipfix]]` collector's counts, in configuration order.
    pub ipfix: Vec<IpfixStats>,
}

impl RunReport {
    /// What one lane did: the engine's report (its error, whatever the
    /// source's type, becoming the run's) and its spool's and shipper's
    /// counts; the caller adds what its kind of source has besides.
    pub fn lane<E: Into<Error>>(
        report: Report<E>,
        (ship, spool): (ShipStats, SpoolStats),
        resumed_after: u64,
    ) -> RunReport {
        RunReport {
            summary: report.summary,
            ship,
            spool,
            resumed_after,
            error: report.error.map(Into::into),
            ..RunReport::default()
        }
    }

    /// Adds one stream's counters to a total over several streams.
    pub fn absorb(&mut self, r: &RunReport) {
        let s = &mut self.summary;
        s.packets += r.summary.packets;
        s.filtered += r.summary.filtered;
        s.flow_packets += r.summary.flow_packets;
        s.ip_bytes += r.summary.ip_bytes;
        s.records += r.summary.records;
        s.flows += r.summary.flows;
        s.record_packets += r.summary.record_packets;
        s.record_bytes += r.summary.record_bytes;
        s.elapsed = s.elapsed.max(r.summary.elapsed);
        self.resumed_after += r.resumed_after;
        let ship = &mut self.ship;
        ship.batches_sent += r.ship.batches_sent;
        ship.batches_acked += r.ship.batches_acked;
        ship.connections += r.ship.connections;
        ship.connect_failures += r.ship.connect_failures;
        let sp = &mut self.spool;
        sp.batches += r.spool.batches;
        sp.records += r.spool.records;
        sp.dropped_batches += r.spool.dropped_batches;
        sp.dropped_records += r.spool.dropped_records;
        sp.failed_batches += r.spool.failed_batches;
        sp.failed_records += r.spool.failed_records;
        sp.corrupt_batches += r.spool.corrupt_batches;
        sp.corrupt_records += r.spool.corrupt_records;
    }
}
