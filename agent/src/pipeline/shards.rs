//! The threaded engine: each shard owns a fixed set of flow-table
//! partitions and runs its batches; the output stage collects every batch's
//! records from all shards, in partition order. [`Shards`] is the engine's
//! dispatch to them.

use crossbeam_channel::{Receiver, Sender};
use vmflow_engine::{process, sum_stats, write_epoch, Dispatch, EngineError, Routed, Written};
use vmflow_proto::{EndReason, FlowRecord};

use crate::flow::{FlowTable, TableStats};
use crate::sink::RecordSink;

pub(super) enum ToShard {
    Batch {
        pkts: Vec<Routed>,
        now: u64,
        last: bool,
        /// With `last`: how the remaining flows end.
        end: EndReason,
    },
}

pub(super) struct FromShard {
    pub(super) records: Vec<(u16, FlowRecord)>,
    pub(super) stats: Option<TableStats>,
}

/// The engine's side of the shard threads: a closed batch per shard goes
/// down its channel, and an empty one the shard has finished with comes back.
pub(super) struct Shards {
    pub(super) batch: usize,
    pub(super) to_shard: Vec<Sender<ToShard>>,
    pub(super) recycle: Vec<Receiver<Vec<Routed>>>,
}

impl Dispatch for Shards {
    fn shards(&self) -> usize {
        self.to_shard.len()
    }

    fn dispatch(
        &mut self,
        batches: &mut [Vec<Routed>],
        now: u64,
        last: bool,
        end: EndReason,
    ) -> bool {
        let mut ok = true;
        for (i, slot) in batches.iter_mut().enumerate() {
            // Reuse a batch the shard has finished with; a new one only while
            // the pipeline fills up, so steady state allocates nothing.
            let fresh = self.recycle[i]
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.batch));
            let pkts = std::mem::replace(slot, fresh);
            let msg = ToShard::Batch {
                pkts,
                now,
                last,
                end,
            };
            if self.to_shard[i].send(msg).is_err() {
                ok = false;
            }
        }
        ok
    }
}

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

pub(super) fn output<S: RecordSink>(
    mut sink: S,
    from: Vec<Receiver<FromShard>>,
) -> Result<Written, EngineError> {
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
        write_epoch(&mut batch, &mut plain, &mut w, &mut sink).map_err(EngineError::Output)?;
        if stats.len() == from.len() {
            break;
        }
    }
    sink.finish().map_err(EngineError::Output)?;
    w.table = sum_stats(stats.into_iter());
    Ok(w)
}
