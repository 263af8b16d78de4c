//! Reader → N flow shards → output, joined by bounded crossbeam channels that
//! carry batches. Each shard owns a fixed set of flow-table partitions (chosen by
//! a symmetric hash of the flow key), so the packet path takes no lock.
//!
//! Determinism: batch boundaries are counted in packets and every partition is
//! ticked at each boundary with the same packet time, whichever thread owns
//! it. The output stage collects each batch's records from all shards and
//! orders them by partition, so the output is identical for any thread count.

mod feed;
mod inline;
mod records;
mod router;
mod shards;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use vmflow_proto::EndReason;

pub use feed::{Feed, InlineFeed};
pub use state::EngineState;

use crate::config::{Config, ConfigError};
use crate::flow::{FlowTable, FragStats, FragTable, TableStats};
use crate::sink::RecordSink;
use feed::Ingest;
use inline::Inline;
use records::Written;
use router::{FromShard, Routed, Router, ToShard};
use shards::{output, shard};

/// What stops the engine: the output failing, a stage dying, or settings or a
/// checkpoint that do not fit this run. A source's own errors travel beside
/// these in [`Report`] (its `E`).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("writing records: {0}")]
    Output(#[source] std::io::Error),
    #[error("pipeline stage failed: output failed earlier: writing records: {0}")]
    OutputFailedEarlier(#[source] std::io::Error),
    #[error("pipeline stage failed: {0}")]
    Stage(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config: pipeline.partitions cannot change without a restart; nothing was reloaded")]
    PartitionsFixed,
    #[error(
        "config: the checkpoint holds {held} flow-table partitions, this configuration {configured}; \
         keep pipeline.partitions or delete the checkpoint"
    )]
    PartitionsChanged { held: usize, configured: usize },
    #[error("checkpoint: the checkpoint names a partition that does not exist")]
    UnknownPartition,
}

/// A capture file that ended inside a record: everything before was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWarning {
    pub path: PathBuf,
    pub offset: u64,
    pub what: String,
}

/// What a replay did, for the summary line and for tests.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Packets read from the input.
    pub packets: u64,
    /// Packets that reached the flow table.
    pub flow_packets: u64,
    /// IP-layer bytes that reached the flow table.
    pub ip_bytes: u64,
    pub skipped: BTreeMap<String, u64>,
    pub frag: FragStats,
    pub table: TableStats,
    pub records: u64,
    /// Distinct flows (records with `final` set).
    pub flows: u64,
    /// Packets and bytes summed over every record written: equal to
    /// `flow_packets` and `ip_bytes` when nothing was lost or doubled.
    pub record_packets: u64,
    pub record_bytes: u64,
    pub warnings: Vec<FileWarning>,
    pub elapsed: Duration,
    pub threads: usize,
}

impl Summary {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

pub struct Report<E = PipelineError> {
    pub summary: Summary,
    /// Set when input stopped early (corrupt file) or a stage failed; every
    /// record produced before that point was still written.
    pub error: Option<E>,
}

/// How a run ends and what it leaves out.
pub struct RunOptions {
    /// `end_of_input` for files, `shutdown` for a stopped live capture.
    pub end: EndReason,
    /// Packets to or from this address and port (the agent's own export
    /// connection) are not flows; they are counted as `own_export`.
    pub exclude: Option<std::net::SocketAddr>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            end: EndReason::EndOfInput,
            exclude: None,
        }
    }
}

/// An inline run: how it ends, what it leaves out, where it starts.
#[derive(Default)]
pub struct InlineOptions {
    pub run: RunOptions,
    /// Start from a checkpoint instead of empty tables (the same partition
    /// count).
    pub restore: Option<Box<EngineState>>,
}

/// Runs the engine over any packet source, ending with `end_of_input`.
pub fn run<S, F, E>(cfg: &Config, sink: S, source: F) -> Report<E>
where
    S: RecordSink,
    F: FnOnce(&mut dyn Feed) -> Result<(), E>,
    E: From<PipelineError>,
{
    run_with(cfg, sink, RunOptions::default(), source)
}

/// Runs the engine over any packet source on `pipeline.threads` shards.
/// `source` is handed a [`Feed`] and gives it every packet, in order.
pub fn run_with<S, F, E>(cfg: &Config, sink: S, opts: RunOptions, source: F) -> Report<E>
where
    S: RecordSink,
    F: FnOnce(&mut dyn Feed) -> Result<(), E>,
    E: From<PipelineError>,
{
    run_engine(cfg, sink, opts, Mode::Threaded, |ingest| source(ingest))
}

/// Runs the flow tables and the output on the caller's thread: cheaper per
/// packet when packets arrive at a modest rate (live capture, followed
/// sources), and the engine can be checkpointed, restored and reconfigured.
/// The records are the same as with threads.
pub fn run_inline<S, F, E>(cfg: &Config, sink: S, opts: InlineOptions, source: F) -> Report<E>
where
    S: RecordSink,
    F: FnOnce(&mut dyn InlineFeed) -> Result<(), E>,
    E: From<PipelineError>,
{
    let mode = Mode::Inline(opts.restore);
    run_engine(cfg, sink, opts.run, mode, |ingest| source(ingest))
}

/// Where the flow tables run.
enum Mode {
    /// On `pipeline.threads` shard threads.
    Threaded,
    /// On the caller's thread, from empty tables or a checkpoint.
    Inline(Option<Box<EngineState>>),
}

fn run_engine<S, F, E>(cfg: &Config, sink: S, opts: RunOptions, mode: Mode, source: F) -> Report<E>
where
    S: RecordSink,
    F: FnOnce(&mut Ingest<'_>) -> Result<(), E>,
    E: From<PipelineError>,
{
    let start = Instant::now();
    let is_inline = matches!(mode, Mode::Inline(_));
    let threads = if is_inline { 1 } else { cfg.threads() };
    let parts = cfg.pipeline.partitions;
    let batch = cfg.pipeline.batch_packets;
    let local = match cfg.local_nets() {
        Ok(l) => Arc::new(l),
        Err(e) => {
            return Report {
                summary: Summary::default(),
                error: Some(PipelineError::from(e).into()),
            }
        }
    };
    let table_cfg = cfg.table();
    let frag_timeout = cfg.flow.fragment_timeout.ns();
    let mut restore = match mode {
        Mode::Inline(r) => r,
        Mode::Threaded => None,
    };
    if let Some(r) = &restore {
        if r.pending.iter().any(|p| match *p {
            Routed::Packet { part, local, .. } => usize::from(part) >= parts || local != part,
            Routed::Gap { .. } => false,
        }) {
            return Report {
                summary: Summary::default(),
                error: Some(PipelineError::UnknownPartition.into()),
            };
        }
        if r.tables.len() != parts {
            return Report {
                summary: Summary::default(),
                error: Some(
                    PipelineError::PartitionsChanged {
                        held: r.tables.len(),
                        configured: parts,
                    }
                    .into(),
                ),
            };
        }
    }

    let mut to_shard = Vec::new();
    let mut from_shard = Vec::new();
    let mut recycle = Vec::new();
    let mut shard_ends = Vec::new();
    for _ in 0..if is_inline { 0 } else { threads } {
        let (tx, rx) = bounded::<ToShard>(4);
        let (otx, orx) = bounded::<FromShard>(4);
        let (rtx, rrx) = unbounded::<Vec<Routed>>();
        to_shard.push(tx);
        from_shard.push(orx);
        recycle.push(rrx);
        shard_ends.push((rx, otx, rtx));
    }

    let mut summary = Summary {
        threads,
        ..Summary::default()
    };
    let mut error = None;

    let (sink, inline) = if is_inline {
        let (tables, written) = match restore.as_mut() {
            Some(r) => (
                std::mem::take(&mut r.tables)
                    .into_iter()
                    .map(|t| FlowTable::restore(table_cfg.clone(), local.clone(), t))
                    .collect(),
                Written {
                    records: r.records,
                    flows: r.flows,
                    packets: r.record_packets,
                    bytes: r.record_bytes,
                    table: TableStats::default(),
                },
            ),
            None => (
                (0..parts)
                    .map(|_| FlowTable::new(table_cfg.clone(), local.clone()))
                    .collect(),
                Written::default(),
            ),
        };
        let inline = Inline {
            tables,
            sink: Box::new(sink),
            recs: Vec::new(),
            tagged: Vec::new(),
            plain: Vec::new(),
            written,
            error: None,
        };
        (None, Some(inline))
    } else {
        (Some(sink), None)
    };

    std::thread::scope(|scope| {
        for (i, (rx, otx, rtx)) in shard_ends.into_iter().enumerate() {
            let owned: Vec<usize> = (i..parts).step_by(threads).collect();
            let tables: Vec<FlowTable> = owned
                .iter()
                .map(|_| FlowTable::new(table_cfg.clone(), local.clone()))
                .collect();
            scope.spawn(move || shard(i, threads, tables, rx, otx, rtx));
        }
        let output = sink.map(|sink| scope.spawn(move || output(sink, from_shard)));

        let mut reader = Router {
            inline,
            threads,
            batch,
            parts,
            shard_of: (0..parts)
                .map(|p| ((p % threads) as u16, (p / threads) as u16))
                .collect(),
            batches: (0..threads).map(|_| Vec::with_capacity(batch)).collect(),
            to_shard,
            recycle,
            now: 0,
            failed: false,
            flow_packets: 0,
            ip_bytes: 0,
        };
        let mut frag = FragTable::new(frag_timeout);
        let (mut packets, mut in_batch) = (0, 0);
        if let Some(r) = restore.take() {
            let r = *r;
            frag = FragTable::restore(frag_timeout, r.frag);
            reader.batches[0] = r.pending;
            reader.now = r.now;
            reader.flow_packets = r.flow_packets;
            reader.ip_bytes = r.ip_bytes;
            packets = r.packets;
            in_batch = r.in_batch;
        }
        let mut ingest = Ingest {
            reader,
            frag,
            skips: HashMap::new(),
            packets,
            in_batch,
            batch,
            exclude: opts.exclude.map(|ex| {
                let version = if ex.is_ipv4() { 4 } else { 6 };
                (crate::flow::from_ip(ex.ip()), ex.port(), version)
            }),
            own_export: 0,
            keep_open: false,
        };
        if let Err(e) = source(&mut ingest) {
            error = Some(e);
        }
        let Ingest {
            mut reader,
            mut frag,
            skips,
            packets,
            own_export,
            keep_open,
            ..
        } = ingest;
        match reader.inline.as_mut() {
            Some(inl) if keep_open => inl.close_kept_open(),
            _ => {
                frag.drain(&mut |ts, d| reader.push(ts, &d));
                reader.send(true, opts.end);
            }
        }
        let failed = reader.failed;
        summary.flow_packets = reader.flow_packets;
        summary.ip_bytes = reader.ip_bytes;
        let inline = reader.inline.take();
        drop(reader);
        summary.packets = packets;
        summary.frag = frag.stats();
        summary.skipped = skips.into_iter().map(|(k, v)| (k.reason(), v)).collect();
        if own_export > 0 {
            summary.skipped.insert("own_export".into(), own_export);
        }
        let written = match (output, inline) {
            (Some(h), _) => h.join(),
            (None, Some(i)) => Ok(match i.error {
                Some(e) => Err(PipelineError::Output(e)),
                None => Ok(i.written),
            }),
            (None, None) => Ok(Err(PipelineError::Stage("no output stage"))),
        };
        match written {
            Ok(Ok(o)) => {
                summary.records = o.records;
                summary.flows = o.flows;
                summary.record_packets = o.packets;
                summary.record_bytes = o.bytes;
                summary.table = o.table;
            }
            Ok(Err(e)) => error = Some(e.into()),
            Err(_) => error = Some(PipelineError::Stage("output stage panicked").into()),
        }
        if failed && error.is_none() {
            error = Some(PipelineError::Stage("a flow shard stopped").into());
        }
    });
    summary.elapsed = start.elapsed();
    Report { summary, error }
}
