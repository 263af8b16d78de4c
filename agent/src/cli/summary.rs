//! The summary lines a command ends with, on stderr so they never mix with
//! records on stdout (the Windows service: its log file, see
//! `logging::summary_out`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use crate::error::Error;
use crate::pipeline::{Report, Summary};

/// The summary comes first even when the run failed: it says how far the
/// run got before the error. A run that failed before it read a packet (an
/// empty standard input, say) has nothing to report but the error.
pub(super) fn finish<E: Into<Error>>(what: &str, report: Report<E>) -> Result<ExitCode, Error> {
    let read = report.summary.packets + report.summary.filtered;
    if report.error.is_none() || read > 0 {
        print_summary(what, &report.summary);
    }
    match report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
    }
}

/// One `key=value` line, then one line per skip reason: easy for people and scripts.
pub fn print_summary(what: &str, s: &Summary) {
    let mut text = String::new();
    summary_lines(&mut text, what, s);
    emit(&text);
}

/// Writes `text` whole, in one write: a service's log file is shared with
/// the log lines.
fn emit(text: &str) {
    let _ = super::logging::summary_out().write_all(text.as_bytes());
}

fn summary_lines(err: &mut String, what: &str, s: &Summary) {
    let _ = writeln!(
        err,
        "{what}: packets={} filtered={} flow_packets={} ip_bytes={} skipped={} flows={} records={} \
         record_packets={} record_bytes={} evicted={} emergency_expired={} frag_first={} \
         frag_later={} frag_orphaned={} \
         warnings={} threads={} elapsed_s={:.3} mpps={:.2}",
        s.packets,
        s.filtered,
        s.flow_packets,
        s.ip_bytes,
        s.skipped_total(),
        s.flows,
        s.records,
        s.record_packets,
        s.record_bytes,
        s.table.evicted,
        s.table.emergency_expired,
        s.frag.first,
        s.frag.later,
        s.frag.orphaned,
        s.warnings.len(),
        s.threads,
        s.elapsed.as_secs_f64(),
        s.mpps(),
    );
    for (reason, n) in &s.skipped {
        let _ = writeln!(err, "{what}: skipped.{reason}={n}");
    }
}

pub(super) fn print_run(what: &str, r: &crate::run::RunReport) {
    let mut text = String::new();
    run_lines(&mut text, what, r);
    emit(&text);
}

fn run_lines(err: &mut String, what: &str, r: &crate::run::RunReport) {
    summary_lines(err, what, &r.summary);
    let _ = writeln!(
        err,
        "{what}: resumed_after={} spooled_batches={} spooled_records={} batches_sent={} batches_acked={} \
         connections={} connect_failures={} dropped_batches={} dropped_records={} append_errors={} \
         corrupt_batches={} corrupt_records={} lost_records={}",
        r.resumed_after,
        r.spool.batches,
        r.spool.records,
        r.ship.batches_sent,
        r.ship.batches_acked,
        r.ship.connections,
        r.ship.connect_failures,
        r.spool.dropped_batches,
        r.spool.dropped_records,
        r.spool.failed_records,
        r.spool.corrupt_batches,
        r.spool.corrupt_records,
        r.spool.lost_records(),
    );
    for s in &r.ifaces {
        let _ = writeln!(
            err,
            "{what}: iface.{}.packets={} iface.{}.kernel_drops={}",
            s.iface, s.packets, s.iface, s.kernel_drops
        );
    }
    if let Some(b) = &r.blob {
        let _ = writeln!(
            err,
            "{what}: blob.listings={} blob.downloaded={} blob.bytes={} blob.deleted={} blob.vanished={} blob.errors={} blob.late={} blob.late_packets={}",
            b.listings, b.downloaded, b.bytes, b.deleted, b.vanished, b.errors, b.late, b.late_packets
        );
    }
    if let Some((c, gaps)) = &r.coverage {
        let _ = writeln!(
            err,
            "{what}: coverage.files={} coverage.packets={} coverage.duplicates={} coverage.gaps={} coverage.gap_ns={}",
            c.files, c.packets, c.duplicates, c.gaps, c.gap_ns
        );
        for g in gaps {
            let _ = writeln!(
                err,
                "{what}: gap start_ns={} end_ns={} reason={:?}",
                g.start_ns, g.end_ns, g.reason
            );
        }
    }
    for (start, end) in &r.covered {
        let _ = writeln!(err, "{what}: covered start_ns={start} end_ns={end}");
    }
    for (i, x) in r.ipfix.iter().enumerate() {
        let _ = writeln!(
            err,
            "{what}: ipfix.{i}.collector={} ipfix.{i}.messages={} ipfix.{i}.records={} \
             ipfix.{i}.template_sends={} ipfix.{i}.send_errors={} ipfix.{i}.dropped_records={} \
             ipfix.{i}.connections={}",
            x.collector,
            x.messages,
            x.records,
            x.template_sends,
            x.send_errors,
            x.dropped_records,
            x.connections
        );
    }
}
