//! Reader → N flow shards → output, joined by bounded crossbeam channels that
//! carry batches. Each shard owns a fixed set of flow-table partitions (chosen by
//! a symmetric hash of the flow key), so the packet path takes no lock.
//!
//! Determinism: batch boundaries are counted in packets and every partition is
//! ticked at each boundary with the same packet time, whichever thread owns
//! it. The output stage collects each batch's records from all shards and
//! orders them by partition, so the output is identical for any thread count.
//!
//! The engine itself (decode, routing, batches, the inline tables,
//! checkpoints) is the engine crate's; this room runs it: on shard threads
//! ([`run_with`]) or on the caller's thread ([`run_inline`]), and sums up
//! what it did.

pub mod live;
mod shards;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use vmflow_engine::{Counts, EngineError, Ingest, Routed, Written};
use vmflow_proto::EndReason;

pub use vmflow_engine::{EngineState, Feed, InlineFeed};

use crate::config::{Config, ConfigError};
use crate::flow::{FlowTable, FragStats, TableStats};
use crate::sink::RecordSink;
use shards::{output, shard, FromShard, Shards, TableRecords, TablesSeen, ToShard};

/// What stops a run: the engine's own errors, a stage dying, or settings
/// that do not make an engine. A source's own errors travel beside these in
/// [`Report`] (its `E`).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("pipeline stage failed: {0}")]
    Stage(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// Packets read from the input (that a capture filter passed).
    pub packets: u64,
    /// Packets a capture filter left out before the engine saw them (files
    /// and followed sources; live capture filters in the kernel, which
    /// does not count them).
    pub filtered: u64,
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
    let start = Instant::now();
    let settings = match cfg.engine_settings() {
        Ok(s) => s,
        Err(e) => return Report::refused(e.into()),
    };
    let threads = cfg.threads();
    let parts = settings.partitions;
    let local = Arc::new(settings.local_nets.clone());
    let table = settings.flow.table(parts);

    let mut to_shard = Vec::new();
    let mut from_shard = Vec::new();
    let mut recycle = Vec::new();
    let mut shard_ends = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = bounded::<ToShard>(4);
        let (otx, orx) = bounded::<FromShard>(4);
        let (rtx, rrx) = unbounded::<Vec<Routed>>();
        let (stx, srx) = unbounded::<TableRecords>();
        to_shard.push(tx);
        from_shard.push((orx, stx));
        recycle.push(rrx);
        shard_ends.push((rx, otx, rtx, srx));
    }

    let mut summary = Summary {
        threads,
        ..Summary::default()
    };
    let mut error = None;
    let seen: Vec<Arc<TablesSeen>> = (0..threads).map(|_| Arc::default()).collect();
    std::thread::scope(|scope| {
        let mut counts = Vec::new();
        for (i, (rx, otx, rtx, srx)) in shard_ends.into_iter().enumerate() {
            let tables: Vec<FlowTable> = (i..parts)
                .step_by(threads)
                .map(|_| FlowTable::new(table.clone(), local.clone()))
                .collect();
            counts.push(tables.len());
            let seen = seen[i].clone();
            scope.spawn(move || shard(tables, rx, otx, rtx, srx, seen));
        }
        let output = scope.spawn(move || output(sink, from_shard, counts));
        let dispatch = Shards {
            batch: settings.batch_packets,
            to_shard,
            recycle,
            seen,
        };
        let mut ingest = Ingest::new(&settings, opts.exclude, dispatch);
        if let Err(e) = source(&mut ingest) {
            error = Some(e);
        }
        let (counts, dispatch) = ingest.finish(opts.end);
        // Closing the channels lets the shards (and with them the output)
        // stop, also after a failure.
        drop(dispatch);
        let written = match output.join() {
            Ok(w) => w.map_err(PipelineError::from),
            Err(_) => Err(PipelineError::Stage("output stage panicked")),
        };
        conclude(&mut summary, &mut error, counts, written);
    });
    summary.elapsed = start.elapsed();
    Report { summary, error }
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
    let start = Instant::now();
    let settings = match cfg.engine_settings() {
        Ok(s) => s,
        Err(e) => return Report::refused(e.into()),
    };
    let restore = opts.restore.map(|r| *r);
    let mut ingest = match Ingest::inline(&settings, opts.run.exclude, Box::new(sink), restore) {
        Ok(i) => i,
        Err(e) => return Report::refused(e.into()),
    };
    let mut summary = Summary {
        threads: 1,
        ..Summary::default()
    };
    let mut error = None;
    if let Err(e) = source(&mut ingest) {
        error = Some(e);
    }
    let (counts, inline) = ingest.finish(opts.run.end);
    let written = inline.into_written().map_err(PipelineError::from);
    conclude(&mut summary, &mut error, counts, written);
    summary.elapsed = start.elapsed();
    Report { summary, error }
}

impl<E: From<PipelineError>> Report<E> {
    /// A run that never started: the settings or the checkpoint do not make
    /// an engine.
    fn refused(e: PipelineError) -> Self {
        Report {
            summary: Summary::default(),
            error: Some(e.into()),
        }
    }
}

/// The summary of a finished engine. The output's failure replaces the
/// source's error (it is why the source's records went missing); a shard
/// that stopped is reported only when nothing else was.
fn conclude<E: From<PipelineError>>(
    summary: &mut Summary,
    error: &mut Option<E>,
    counts: Counts,
    written: Result<Written, PipelineError>,
) {
    summary.packets = counts.packets;
    summary.flow_packets = counts.flow_packets;
    summary.ip_bytes = counts.ip_bytes;
    summary.skipped = counts.skipped;
    summary.frag = counts.frag;
    match written {
        Ok(w) => {
            summary.records = w.records;
            summary.flows = w.flows;
            summary.record_packets = w.packets;
            summary.record_bytes = w.bytes;
            summary.table = w.table;
        }
        Err(e) => *error = Some(e.into()),
    }
    if counts.failed && error.is_none() {
        *error = Some(PipelineError::Stage("a flow shard stopped").into());
    }
}
