//! Records out of the tables: each batch's ordered by partition (stable, so
//! each partition keeps its own order), counted and written.

use vmflow_proto::FlowRecord;

use crate::flow::TableStats;
use crate::sink::RecordSink;

#[derive(Default)]
pub(super) struct Written {
    pub(super) records: u64,
    pub(super) flows: u64,
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) table: TableStats,
}

/// Orders one batch's records by partition (stable, so each partition keeps
/// its own order), counts them and writes them.
pub(super) fn write_epoch<S: RecordSink + ?Sized>(
    batch: &mut Vec<(u16, FlowRecord)>,
    plain: &mut Vec<FlowRecord>,
    w: &mut Written,
    sink: &mut S,
) -> std::io::Result<()> {
    batch.sort_by_key(|(p, _)| *p);
    plain.extend(batch.drain(..).map(|(_, r)| r));
    for r in plain.iter() {
        w.records += 1;
        w.flows += u64::from(r.is_final);
        w.packets += r.fwd_packets + r.rev_packets;
        w.bytes += r.fwd_bytes + r.rev_bytes;
    }
    let res = sink.write(plain);
    plain.clear();
    res
}

pub(super) fn sum_stats(it: impl Iterator<Item = TableStats>) -> TableStats {
    it.fold(TableStats::default(), |a, b| TableStats {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        flows: a.flows + b.flows,
        records: a.records + b.records,
        evicted: a.evicted + b.evicted,
        emergency_expired: a.emergency_expired + b.emergency_expired,
        peak_flows: a.peak_flows + b.peak_flows,
    })
}
