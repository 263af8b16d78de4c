//! Records out of the tables: each batch's in partition order (each
//! partition keeps its own order), counted and written, in pieces when
//! there are many.

use std::ops::Range;

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

/// Records a write waits for before it goes out mid-epoch. An epoch's
/// records are written at its end; a larger epoch (a tick or the finish
/// ending many flows at once) is written in pieces, each at the first table
/// boundary (in partition order) past this many records, so a burst is never
/// held whole: memory for it is bounded by this plus one table's share.
/// Where an epoch is cut depends only on its records, never on threads or
/// timing, so sinks that frame their output by writes (IPFIX messages) stay
/// deterministic. Everyday epochs (fewer records than a batch has packets)
/// are one write, as before.
pub const PIECE_RECORDS: usize = 4096;

/// Where an epoch's records are cut into writes ([`PIECE_RECORDS`]): fed
/// each table's record count in order, it says when the tables since the
/// last cut go out.
#[derive(Debug, Default)]
pub struct Pieces {
    from: usize,
    waiting: usize,
}

impl Pieces {
    /// Table `at` (the next in order) is complete with `n` records: the
    /// tables to write now, if a piece is full.
    pub fn table(&mut self, at: usize, n: usize) -> Option<Range<usize>> {
        self.waiting += n;
        (self.waiting >= PIECE_RECORDS).then(|| self.cut(at + 1))
    }

    /// The epoch's last piece (tables `..end`), possibly empty; the next
    /// epoch starts afresh.
    pub fn rest(&mut self, end: usize) -> Range<usize> {
        let r = self.cut(end);
        self.from = 0;
        r
    }

    fn cut(&mut self, end: usize) -> Range<usize> {
        let r = self.from..end;
        self.from = end;
        self.waiting = 0;
        r
    }
}

/// Writes one piece of an epoch (tables' records in partition order),
/// counted, as one write: an empty one too (a sink closes aged batches on
/// it).
pub fn write_piece<S: RecordSink + ?Sized>(
    parts: &[&[FlowRecord]],
    w: &mut Written,
    sink: &mut S,
) -> std::io::Result<()> {
    for p in parts {
        count(w, p);
    }
    sink.write_parts(parts)
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
    fn an_epoch_is_cut_after_the_table_that_fills_a_piece() {
        let mut p = Pieces::default();
        // An everyday epoch: one write at its end.
        assert_eq!(p.table(0, 10), None);
        assert_eq!(p.table(1, PIECE_RECORDS - 11), None);
        assert_eq!(p.rest(2), 0..2);
        // A burst: cut after each table that fills a piece, then the rest.
        assert_eq!(p.table(0, 1), None);
        assert_eq!(p.table(1, PIECE_RECORDS), Some(0..2));
        assert_eq!(p.table(2, 3 * PIECE_RECORDS), Some(2..3));
        assert_eq!(p.table(3, 5), None);
        assert_eq!(p.rest(4), 3..4);
        // An epoch ending on a full piece still ends with a (empty) write.
        assert_eq!(p.table(0, PIECE_RECORDS), Some(0..1));
        assert_eq!(p.rest(1), 1..1);
    }

    #[test]
    fn a_piece_is_one_counted_write() {
        let (a, b) = (recs(&[0, 1]), recs(&[10]));
        let (mut w, mut sink) = (Written::default(), Writes::default());
        write_piece(&[&a, &b], &mut w, &mut sink).unwrap();
        assert_eq!(sink.0, vec![vec![0, 1, 10]]);
        assert_eq!((w.records, w.flows, w.packets, w.bytes), (3, 3, 3, 150));
        write_piece(&[], &mut w, &mut sink).unwrap();
        assert_eq!(sink.0.last(), Some(&vec![]));
    }
}
