//! The threaded engine: each shard owns a fixed set of flow-table
//! partitions and runs its batches; the output stage collects every batch's
//! records from all shards, in partition order, a piece at a time (a burst
//! never travels whole). [`Shards`] is the engine's dispatch to them.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use vmflow_engine::{
    process, sum_stats, write_piece, Dispatch, EngineError, Pieces, Routed, TablesNow, Written,
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

/// Record vectors of consecutive tables; the output sends them back empty
/// (capacity kept) for the shard's next batches.
pub(super) type TableRecords = Vec<Vec<FlowRecord>>;

/// Record vectors up to this capacity are sent back to their shard.
const RECYCLE_MAX: usize = 1024;

/// A piece of a shard's epoch: its tables `first..first + records.len()`,
/// complete for the epoch. A shard sends one piece an epoch, or several
/// when its tables end many flows at once
/// ([`PIECE_RECORDS`](vmflow_engine::PIECE_RECORDS)).
pub(super) struct FromShard {
    pub(super) first: usize,
    pub(super) records: TableRecords,
    /// The epoch's last piece from this shard.
    pub(super) end: bool,
    /// With the run's last piece: the shard's table counts.
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
    let n = tables.len();
    let mut records: TableRecords = vec![Vec::new(); n];
    // Empty vectors and containers the output has sent back.
    let mut vectors: Vec<Vec<FlowRecord>> = Vec::new();
    let mut containers: Vec<TableRecords> = Vec::new();
    while let Ok(ToShard::Batch {
        mut pkts,
        now,
        last,
        end,
    }) = rx.recv()
    {
        while let Ok(mut c) = spare.try_recv() {
            vectors.append(&mut c);
            containers.push(c);
        }
        let mut sent = true;
        let mut send = |tables: Range<usize>,
                        recs: &mut [Vec<FlowRecord>],
                        end: bool,
                        stats: Option<TableStats>| {
            let mut c = containers.pop().unwrap_or_default();
            let first = tables.start;
            for v in &mut recs[tables] {
                c.push(std::mem::replace(v, vectors.pop().unwrap_or_default()));
            }
            let piece = FromShard {
                first,
                records: c,
                end,
                stats,
            };
            sent &= out.send(piece).is_ok();
        };
        let mut pieces = Pieces::default();
        process(
            &mut tables,
            &pkts,
            now,
            last,
            end,
            &mut records,
            |at, recs| {
                if let Some(r) = pieces.table(at, recs[at].len()) {
                    send(r, recs, false, None);
                }
            },
        );
        pkts.clear();
        let _ = recycle.send(pkts);
        seen.open_flows
            .store(tables.iter().map(|t| t.len() as u64).sum(), Relaxed);
        seen.evicted
            .store(tables.iter().map(|t| t.stats().evicted).sum(), Relaxed);
        let stats = last.then(|| sum_stats(tables.iter().map(|t| t.stats())));
        send(pieces.rest(n), &mut records, true, stats);
        if !sent || last {
            return;
        }
    }
}

/// What the output has of one shard: its channel, and the piece it is
/// taking tables from.
struct Inbox {
    rx: Receiver<FromShard>,
    back: Sender<TableRecords>,
    piece: Option<FromShard>,
}

impl Inbox {
    /// Table `local`'s records, if the current piece has them.
    fn take(&mut self, local: usize) -> Option<Vec<FlowRecord>> {
        let p = self.piece.as_mut()?;
        let v = p.records.get_mut(local.checked_sub(p.first)?)?;
        Some(std::mem::take(v))
    }

    /// Done with the current piece (its container is kept for sending
    /// vectors back); waits for the next. False once the shard is gone.
    fn advance(&mut self, containers: &mut Vec<TableRecords>, stats: &mut Vec<TableStats>) -> bool {
        self.release(containers);
        match self.rx.recv() {
            Ok(piece) => {
                stats.extend(piece.stats);
                self.piece = Some(piece);
                true
            }
            Err(_) => false,
        }
    }

    fn release(&mut self, containers: &mut Vec<TableRecords>) {
        if let Some(mut piece) = self.piece.take() {
            piece.records.clear();
            containers.push(piece.records);
        }
    }

    fn at_epoch_end(&self) -> bool {
        self.piece.as_ref().is_some_and(|p| p.end)
    }
}

/// Writes the records of every epoch in partition order (partition `local
/// * shards + s` is table `local` of shard `s`), cut into writes where
/// [`Pieces`] says, whatever the thread count.
pub(super) fn output<S: RecordSink>(
    mut sink: S,
    from: Vec<(Receiver<FromShard>, Sender<TableRecords>)>,
    tables: Vec<usize>,
) -> Result<Written, EngineError> {
    let shards = from.len();
    let most = tables.iter().copied().max().unwrap_or(0);
    let mut w = Written::default();
    let mut stats: Vec<TableStats> = Vec::new();
    let mut inbox: Vec<Inbox> = from
        .into_iter()
        .map(|(rx, back)| Inbox {
            rx,
            back,
            piece: None,
        })
        .collect();
    // The piece being gathered: (shard, its table's records), partition order.
    let mut held: Vec<(usize, Vec<FlowRecord>)> = Vec::new();
    // Emptied vectors going back to each shard, and spare containers.
    let mut back: Vec<TableRecords> = vec![Vec::new(); shards];
    let mut containers: Vec<TableRecords> = Vec::new();
    let mut write = |held: &mut Vec<(usize, Vec<FlowRecord>)>,
                     back: &mut [TableRecords],
                     w: &mut Written|
     -> Result<(), EngineError> {
        let parts: Vec<&[FlowRecord]> = held.iter().map(|(_, v)| v.as_slice()).collect();
        write_piece(&parts, w, &mut sink).map_err(EngineError::Output)?;
        for (s, mut v) in held.drain(..) {
            // Only everyday sizes go back: a burst would otherwise stay
            // allocated in every set of vectors in flight.
            if v.capacity() > RECYCLE_MAX {
                v = Vec::new();
            }
            v.clear();
            back[s].push(v);
        }
        Ok(())
    };
    'epochs: loop {
        let mut pieces = Pieces::default();
        let mut at = 0;
        for local in 0..most {
            for s in (0..shards).filter(|&s| local < tables[s]) {
                let v = loop {
                    if let Some(v) = inbox[s].take(local) {
                        break v;
                    }
                    if !inbox[s].advance(&mut containers, &mut stats) {
                        break 'epochs;
                    }
                };
                let n = v.len();
                held.push((s, v));
                if pieces.table(at, n).is_some() {
                    write(&mut held, &mut back, &mut w)?;
                }
                at += 1;
            }
        }
        pieces.rest(at);
        write(&mut held, &mut back, &mut w)?;
        // Every shard's epoch ends with its last piece (also a shard with
        // no table, or whose last piece has none).
        for (s, inbox) in inbox.iter_mut().enumerate() {
            while !inbox.at_epoch_end() {
                if !inbox.advance(&mut containers, &mut stats) {
                    break 'epochs;
                }
            }
            inbox.release(&mut containers);
            let mut c = containers.pop().unwrap_or_default();
            std::mem::swap(&mut c, &mut back[s]);
            // A shard that has ended no longer takes them: nothing to do.
            let _ = inbox.back.send(c);
        }
        if stats.len() == shards {
            break;
        }
    }
    sink.finish().map_err(EngineError::Output)?;
    w.table = sum_stats(stats.into_iter());
    Ok(w)
}
