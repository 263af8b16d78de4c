//! Records out of the tables: each batch's in partition order (each
//! partition keeps its own order), counted and written.

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

/// Writes one epoch: every shard's records, one vector per table (see
/// [`crate::process`]), in partition order — partition `local * shards + me`
/// is table `local` of shard `me` — counted, as one write (an empty one too:
/// a sink closes aged batches on it). The vectors are left empty.
pub fn write_epoch<S: RecordSink + ?Sized>(
    shards: &mut [Vec<Vec<FlowRecord>>],
    w: &mut Written,
    sink: &mut S,
) -> std::io::Result<()> {
    let tables = shards.iter().map(Vec::len).max().unwrap_or(0);
    let mut parts: Vec<&[FlowRecord]> = Vec::new();
    for local in 0..tables {
        for shard in shards.iter() {
            if let Some(v) = shard.get(local).filter(|v| !v.is_empty()) {
                count(w, v);
                parts.push(v);
            }
        }
    }
    let res = sink.write_parts(&parts);
    shards.iter_mut().flatten().for_each(Vec::clear);
    res
}

fn count(w: &mut Written, records: &[FlowRecord]) {
    for r in records {
        w.records += 1;
        w.flows += u64::from(r.is_final);
        w.packets += r.fwd_packets + r.rev_packets;
        w.bytes += r.fwd_bytes + r.rev_bytes;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers each write: how many records, and the records.
    #[derive(Default)]
    struct Writes(Vec<Vec<u64>>);

    impl RecordSink for Writes {
        fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
            self.0.push(records.iter().map(|r| r.flow_id).collect());
            Ok(())
        }
    }

    fn recs(ids: &[u64]) -> Vec<FlowRecord> {
        ids.iter()
            .map(|&flow_id| FlowRecord {
                flow_id,
                segment: 0,
                is_final: true,
                ip_version: 4,
                proto: 17,
                vlan: None,
                src_addr: [10, 0, 0, 1].into(),
                src_port: 1,
                dst_addr: [10, 0, 0, 2].into(),
                dst_port: 2,
                direction: vmflow_proto::Direction::Internal,
                first_ns: 0,
                last_ns: 0,
                fwd_packets: 1,
                fwd_bytes: 50,
                rev_packets: 0,
                rev_bytes: 0,
                fwd_tcp_flags: 0,
                rev_tcp_flags: 0,
                icmp_type: None,
                icmp_code: None,
                end_reason: vmflow_proto::EndReason::Idle,
                gap: false,
                rule: None,
                decision: None,
                remote: None,
            })
            .collect()
    }

    #[test]
    fn an_epoch_is_one_write_in_partition_order() {
        // Two shards; shard 0 owns partitions 0, 2, 4 and shard 1 owns 1, 3.
        // Flow ids name the partition (tens) and the order within it.
        let mut shards = vec![
            vec![recs(&[0, 1]), recs(&[]), recs(&[40])],
            vec![recs(&[10]), recs(&[30, 31])],
        ];
        let (mut w, mut sink) = (Written::default(), Writes::default());
        write_epoch(&mut shards, &mut w, &mut sink).unwrap();
        assert_eq!(sink.0, vec![vec![0, 1, 10, 30, 31, 40]]);
        assert_eq!(w.records, 6);
        assert!(shards.iter().flatten().all(Vec::is_empty));
        // An empty epoch is still one (empty) write.
        write_epoch(&mut shards, &mut w, &mut sink).unwrap();
        assert_eq!(sink.0.last(), Some(&vec![]));
        assert_eq!(sink.0.len(), 2);
    }
}
