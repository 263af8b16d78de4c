//! Records out of the tables: each batch's ordered by partition (stable, so
//! each partition keeps its own order), counted and written.

use vmflow_proto::FlowRecord;

use crate::flow::TableStats;
use crate::sink::RecordSink;

/// What reached the sink: records, distinct flows (records with `final`),
/// packets and bytes summed over the records, and at the end the tables'
/// own counts.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pub records: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub table: TableStats,
}

/// Orders one batch's records by partition (stable, so each partition keeps
/// its own order), counts them and writes them.
pub fn write_epoch<S: RecordSink + ?Sized>(
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

/// The counts of several tables as one.
pub fn sum_stats(it: impl Iterator<Item = TableStats>) -> TableStats {
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
