//! The threaded engine: each shard owns a fixed set of flow-table
//! partitions and runs its batches; the output stage collects every batch's
//! records from all shards, in partition order.

use crossbeam_channel::{Receiver, Sender};
use vmflow_proto::{EndReason, FlowRecord};

use super::records::{sum_stats, write_epoch, Written};
use super::router::{FromShard, Routed, ToShard};
use super::PipelineError;
use crate::flow::{Event, FlowTable, TableStats};
use crate::sink::RecordSink;

pub(super) fn shard(
    me: usize,
    threads: usize,
    mut tables: Vec<FlowTable>,
    rx: Receiver<ToShard>,
    out: Sender<FromShard>,
    recycle: Sender<Vec<Routed>>,
) {
    let mut recs = Vec::new();
    let mut tagged: Vec<(u16, FlowRecord)> = Vec::new();
    while let Ok(ToShard::Batch {
        mut pkts,
        now,
        last,
        end,
    }) = rx.recv()
    {
        process(
            me,
            threads,
            &mut tables,
            &pkts,
            now,
            last,
            end,
            &mut recs,
            &mut tagged,
        );
        pkts.clear();
        let _ = recycle.send(pkts);
        let stats = last.then(|| sum_stats(tables.iter().map(|t| t.stats())));
        let msg = FromShard {
            records: std::mem::take(&mut tagged),
            stats,
        };
        if out.send(msg).is_err() || last {
            return;
        }
    }
}

/// One batch through the tables a shard owns, then the batch-boundary tick
/// (and, at the end, the finish); records are tagged with their partition.
#[allow(clippy::too_many_arguments)]
pub(super) fn process(
    me: usize,
    threads: usize,
    tables: &mut [FlowTable],
    pkts: &[Routed],
    now: u64,
    last: bool,
    end: EndReason,
    recs: &mut Vec<FlowRecord>,
    tagged: &mut Vec<(u16, FlowRecord)>,
) {
    // Two-stage prefetch: the bucket of packet i+16, then (once that is
    // cached) the flow slot of packet i+8. Pure hints; output is unchanged.
    for (i, r) in pkts.iter().enumerate() {
        if let Some(Routed::Packet { local, pkt, .. }) = pkts.get(i + 16) {
            tables[usize::from(*local)].prefetch(pkt.hash, false);
        }
        if let Some(Routed::Packet { local, pkt, .. }) = pkts.get(i + 8) {
            tables[usize::from(*local)].prefetch(pkt.hash, true);
        }
        match r {
            Routed::Packet { part, local, pkt } => {
                tables[usize::from(*local)].handle(Event::Packet(pkt), recs);
                if !recs.is_empty() {
                    tagged.extend(recs.drain(..).map(|x| (*part, x)));
                }
            }
            &Routed::Gap { start, end } => {
                let gap = Event::Gap { start, end };
                for (local, t) in tables.iter_mut().enumerate() {
                    t.handle(gap, recs);
                    let part = (local * threads + me) as u16;
                    tagged.extend(recs.drain(..).map(|x| (part, x)));
                }
            }
        }
    }
    for (local, t) in tables.iter_mut().enumerate() {
        let part = (local * threads + me) as u16;
        t.handle(Event::Tick(now), recs);
        if last {
            t.handle(Event::Finish(end), recs);
        }
        tagged.extend(recs.drain(..).map(|x| (part, x)));
    }
}

pub(super) fn output<S: RecordSink>(
    mut sink: S,
    from: Vec<Receiver<FromShard>>,
) -> Result<Written, PipelineError> {
    let mut batch: Vec<(u16, FlowRecord)> = Vec::new();
    let mut plain: Vec<FlowRecord> = Vec::new();
    let mut w = Written::default();
    let mut stats: Vec<TableStats> = Vec::new();
    'epochs: loop {
        for rx in &from {
            match rx.recv() {
                Ok(m) => {
                    batch.extend(m.records);
                    if let Some(s) = m.stats {
                        stats.push(s);
                    }
                }
                Err(_) => break 'epochs,
            }
        }
        write_epoch(&mut batch, &mut plain, &mut w, &mut sink).map_err(PipelineError::Output)?;
        if stats.len() == from.len() {
            break;
        }
    }
    sink.finish().map_err(PipelineError::Output)?;
    w.table = sum_stats(stats.into_iter());
    Ok(w)
}
