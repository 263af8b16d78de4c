//! The threaded engine: each shard owns a fixed set of flow-table
//! partitions and runs its batches; the output stage collects every batch's
//! records from all shards, in partition order. [`Shards`] is the engine's
//! dispatch to them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use vmflow_engine::{
    process, sum_stats, write_epoch, Dispatch, EngineError, Routed, TablesNow, Written,
};
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

/// Per-table record vectors, in the shard's table order; the output sends
/// them back empty (capacity kept) for the shard's next batches.
pub(super) type TableRecords = Vec<Vec<FlowRecord>>;

/// Record vectors up to this capacity are sent back to their shard.
const RECYCLE_MAX: usize = 1024;

pub(super) struct FromShard {
    pub(super) records: TableRecords,
    pub(super) stats: Option<TableStats>,
}

/// The engine's side of the shard threads: a closed batch per shard goes
/// down its channel, and an empty one the shard has finished with comes back.
pub(super) struct Shards {
    pub(super) batch: usize,
    pub(super) to_shard: Vec<Sender<ToShard>>,
    pub(super) recycle: Vec<Receiver<Vec<Routed>>>,
    /// What each shard's tables held after its last batch.
    pub(super) seen: Vec<Arc<TablesSeen>>,
}

/// A shard's tables at a glance, published after each batch (for metrics:
/// the feeding thread cannot look at tables on other threads).
#[derive(Debug, Default)]
pub(super) struct TablesSeen {
    open_flows: AtomicU64,
    evicted: AtomicU64,
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

    fn tables_now(&self) -> Option<TablesNow> {
        let mut t = TablesNow::default();
        for s in &self.seen {
            t.open_flows += s.open_flows.load(Relaxed);
            t.evicted += s.evicted.load(Relaxed);
        }
        Some(t)
    }
}

pub(super) fn shard(
    mut tables: Vec<FlowTable>,
    rx: Receiver<ToShard>,
    out: Sender<FromShard>,
    recycle: Sender<Vec<Routed>>,
    spare: Receiver<TableRecords>,
    seen: Arc<TablesSeen>,
) {
    let mut records: TableRecords = vec![Vec::new(); tables.len()];
    while let Ok(ToShard::Batch {
        mut pkts,
        now,
        last,
        end,
    }) = rx.recv()
    {
        process(&mut tables, &pkts, now, last, end, &mut records);
        pkts.clear();
        let _ = recycle.send(pkts);
        seen.open_flows
            .store(tables.iter().map(|t| t.len() as u64).sum(), Relaxed);
        seen.evicted
            .store(tables.iter().map(|t| t.stats().evicted).sum(), Relaxed);
        let stats = last.then(|| sum_stats(tables.iter().map(|t| t.stats())));
        let next = spare
            .try_recv()
            .unwrap_or_else(|_| vec![Vec::new(); tables.len()]);
        let msg = FromShard {
            records: std::mem::replace(&mut records, next),
            stats,
        };
        if out.send(msg).is_err() || last {
            return;
        }
    }
}

pub(super) fn output<S: RecordSink>(
    mut sink: S,
    from: Vec<(Receiver<FromShard>, Sender<TableRecords>)>,
) -> Result<Written, EngineError> {
    let mut epoch: Vec<TableRecords> = Vec::with_capacity(from.len());
    let mut w = Written::default();
    let mut stats: Vec<TableStats> = Vec::new();
    'epochs: loop {
        for (rx, _) in &from {
            match rx.recv() {
                Ok(m) => {
                    epoch.push(m.records);
                    if let Some(s) = m.stats {
                        stats.push(s);
                    }
                }
                Err(_) => break 'epochs,
            }
        }
        write_epoch(&mut epoch, &mut w, &mut sink).map_err(EngineError::Output)?;
        for (mut tables, (_, back)) in epoch.drain(..).zip(&from) {
            // Only everyday sizes go back: a burst (a tick ending thousands
            // of flows, the finish) would otherwise stay allocated in every
            // set of vectors in flight.
            for v in tables.iter_mut().filter(|v| v.capacity() > RECYCLE_MAX) {
                *v = Vec::new();
            }
            // A shard that has ended no longer takes them: nothing to do.
            let _ = back.send(tables);
        }
        if stats.len() == from.len() {
            break;
        }
    }
    sink.finish().map_err(EngineError::Output)?;
    w.table = sum_stats(stats.into_iter());
    Ok(w)
}
