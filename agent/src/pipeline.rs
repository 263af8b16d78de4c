//! Reader → N flow shards → output, joined by bounded crossbeam channels that
//! carry batches. Each shard owns a fixed set of flow-table partitions (chosen by
//! a symmetric hash of the flow key), so the packet path takes no lock.
//!
//! Determinism: batch boundaries are counted in packets and every partition is
//! ticked at each boundary with the same packet time, whichever thread owns
//! it. The output stage collects each batch's records from all shards and
//! orders them by partition, so the output is identical for any thread count.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use vmflow_proto::{EndReason, FlowRecord};

use crate::config::{Config, ConfigError};
use crate::decode::{decode, Decoded, Skip};
use crate::flow::{
    Event, FlowTable, FragSnapshot, FragStats, FragTable, Packet, TableSnapshot, TableStats,
};
use crate::packet::RawPacket;
use crate::sink::RecordSink;

/// Only `run_inline` hands out an `InlineFeed`, whose engine is inline.
const NOT_INLINE: PipelineError = PipelineError::Stage("an inline operation on a threaded run");

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

#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Routed {
    part: u16,
    /// The partition's index among its shard's tables (`part / threads`),
    /// looked up when routing: a division per packet in the shard is measurable.
    local: u16,
    pkt: Packet,
}

/// A coverage gap travelling in the packet stream, to every partition, at
/// its place between packets (`ts_ns` = start, `hash` = end). In band, so
/// batch boundaries (and with them the records) stay what they would be.
const GAP_PART: u16 = u16::MAX;

enum ToShard {
    Batch {
        pkts: Vec<Routed>,
        now: u64,
        last: bool,
        /// With `last`: how the remaining flows end.
        end: EndReason,
    },
}

struct FromShard {
    records: Vec<(u16, FlowRecord)>,
    stats: Option<TableStats>,
}

/// What a packet source hands packets (and, for live sources, time) to.
pub trait Feed {
    fn packet(&mut self, p: RawPacket<'_>);
    /// Packet time has reached `now_ns` without a packet (live sources):
    /// close the current batch and run every timeout due by then.
    fn tick(&mut self, now_ns: u64);
    /// The source saw nothing between these packet times although traffic
    /// may have flowed: flows open then are marked `gap`. Travels in the
    /// packet stream, so it changes no batch boundary.
    fn gap(&mut self, start_ns: u64, end_ns: u64);
}

/// An engine running on the caller's thread ([`run_inline`]): besides
/// packets it can be reconfigured, checkpointed and ended at will, which a
/// threaded run cannot do between two packets.
pub trait InlineFeed: Feed {
    /// Applies new flow settings (timeouts, bound, local networks) without
    /// losing a flow.
    fn reconfigure(&mut self, cfg: &Config) -> Result<(), PipelineError>;
    /// Hands every record produced so far to durable storage and returns the
    /// engine's whole state, to resume from later as if never stopped.
    fn checkpoint(&mut self) -> Result<EngineState, PipelineError>;
    /// Ends every open flow now, e.g. before a last checkpoint.
    fn end_flows(&mut self, reason: EndReason);
    /// The run ends without ending its open flows: they live on in the last
    /// checkpoint.
    fn keep_open(&mut self);
}

/// The engine between two packets: flow tables, fragments, the batch being
/// filled and the output position. A run restored from it gives the records
/// the original run would have given from that point, in the same order.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct EngineState {
    tables: Vec<TableSnapshot>,
    frag: FragSnapshot,
    pending: Vec<Routed>,
    in_batch: usize,
    now: u64,
    packets: u64,
    flow_packets: u64,
    ip_bytes: u64,
    /// Records handed to the sink before this point: the position in the
    /// record stream a resumed run continues from.
    pub records: u64,
    flows: u64,
    record_packets: u64,
    record_bytes: u64,
}

impl EngineState {
    /// Flows the state holds open.
    pub fn open_flows(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
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
    run_engine(cfg, sink, opts, None, |ingest| source(ingest))
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
    let restore = Some(opts.restore);
    run_engine(cfg, sink, opts.run, restore, |ingest| source(ingest))
}

/// `inline`: `None` for a threaded run, `Some(restore)` for an inline one.
fn run_engine<S, F, E>(
    cfg: &Config,
    sink: S,
    opts: RunOptions,
    inline: Option<Option<Box<EngineState>>>,
    source: F,
) -> Report<E>
where
    S: RecordSink,
    F: FnOnce(&mut Ingest<'_>) -> Result<(), E>,
    E: From<PipelineError>,
{
    let start = Instant::now();
    let is_inline = inline.is_some();
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
    let mut restore = inline.flatten();
    if let Some(r) = &restore {
        if r.pending
            .iter()
            .any(|p| p.part != GAP_PART && (usize::from(p.part) >= parts || p.local != p.part))
        {
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

/// The reader stage: decode, fragments, routing into per-shard batches.
struct Ingest<'s> {
    reader: Router<'s>,
    frag: FragTable,
    skips: HashMap<Skip, u64>,
    packets: u64,
    in_batch: usize,
    batch: usize,
    /// The export connection's address, port and IP version, in key form.
    exclude: Option<([u8; 16], u16, u8)>,
    own_export: u64,
    keep_open: bool,
}

impl Ingest<'_> {
    /// Either end of the key (oriented or canonical) is the export address.
    #[inline]
    fn is_own_export(&self, key: &crate::flow::FlowKey) -> bool {
        let Some((ip, port, version)) = self.exclude else {
            return false;
        };
        key.ip_version == version
            && ((key.src == ip && key.src_port == port) || (key.dst == ip && key.dst_port == port))
    }

    /// Every frame the one-pass decoder does not take: pnet views, skips
    /// counted by reason, fragments through the fragment table.
    #[inline(never)]
    fn general(&mut self, raw: RawPacket<'_>) {
        match decode(raw.linktype, raw.data, raw.orig_len) {
            Ok(d) if self.is_own_export(&d.key) => self.own_export += 1,
            Ok(d) => {
                let reader = &mut self.reader;
                self.frag
                    .resolve(raw.ts_ns, d, &mut |ts, d| reader.push(ts, &d));
            }
            Err(s) => *self.skips.entry(s).or_default() += 1,
        }
    }

    fn close_batch(&mut self) {
        self.in_batch = 0;
        let now = self.reader.now;
        let reader = &mut self.reader;
        self.frag.expire(now, &mut |ts, d| reader.push(ts, &d));
        reader.send(false, EndReason::EndOfInput);
    }
}

impl Feed for Ingest<'_> {
    #[inline]
    fn packet(&mut self, raw: RawPacket<'_>) {
        if self.reader.failed {
            return;
        }
        self.packets += 1;
        self.reader.now = self.reader.now.max(raw.ts_ns);
        if let Some(p) =
            crate::decode::fast::packet(raw.ts_ns, raw.linktype, raw.data, raw.orig_len)
        {
            if self.is_own_export(&p.key) {
                self.own_export += 1;
            } else {
                self.reader.push_packet(p);
            }
        } else {
            self.general(raw);
        }
        self.in_batch += 1;
        if self.in_batch == self.batch {
            self.close_batch();
        }
    }

    fn tick(&mut self, now_ns: u64) {
        if self.reader.failed {
            return;
        }
        self.reader.now = self.reader.now.max(now_ns);
        self.close_batch();
    }

    fn gap(&mut self, start_ns: u64, end_ns: u64) {
        if self.reader.failed {
            return;
        }
        self.reader.push_gap(start_ns, end_ns);
    }
}

impl InlineFeed for Ingest<'_> {
    fn reconfigure(&mut self, cfg: &Config) -> Result<(), PipelineError> {
        let Some(inl) = self.reader.inline.as_mut() else {
            return Err(NOT_INLINE);
        };
        cfg.validate()?;
        if cfg.pipeline.partitions != inl.tables.len() {
            return Err(PipelineError::PartitionsFixed);
        }
        // Close the current batch first: packets so far are judged by the
        // settings they arrived under.
        self.close_batch();
        let local = Arc::new(cfg.local_nets()?);
        for t in self
            .reader
            .inline
            .iter_mut()
            .flat_map(|i| i.tables.iter_mut())
        {
            t.reconfigure(cfg.table(), local.clone());
        }
        self.frag.set_timeout(cfg.flow.fragment_timeout.ns());
        Ok(())
    }

    fn end_flows(&mut self, reason: EndReason) {
        if self.reader.failed || self.reader.inline.is_none() {
            return;
        }
        self.in_batch = 0;
        let reader = &mut self.reader;
        self.frag.drain(&mut |ts, d| reader.push(ts, &d));
        reader.send(true, reason);
    }

    fn keep_open(&mut self) {
        self.keep_open = true;
    }

    fn checkpoint(&mut self) -> Result<EngineState, PipelineError> {
        let Some(inl) = self.reader.inline.as_mut() else {
            return Err(NOT_INLINE);
        };
        if let Some(e) = &inl.error {
            // The first failure stays with the run's report; the checkpoint
            // gets a copy of what it said.
            return Err(PipelineError::OutputFailedEarlier(std::io::Error::new(
                e.kind(),
                e.to_string(),
            )));
        }
        inl.sink.flush().map_err(PipelineError::Output)?;
        Ok(EngineState {
            tables: inl.tables.iter().map(|t| t.snapshot()).collect(),
            frag: self.frag.snapshot(),
            pending: self.reader.batches[0].clone(),
            in_batch: self.in_batch,
            now: self.reader.now,
            packets: self.packets,
            flow_packets: self.reader.flow_packets,
            ip_bytes: self.reader.ip_bytes,
            records: inl.written.records,
            flows: inl.written.flows,
            record_packets: inl.written.packets,
            record_bytes: inl.written.bytes,
        })
    }
}

/// Routes packets into per-shard batches (or hands them to the inline tables)
/// and sends each batch at its boundary.
struct Router<'s> {
    inline: Option<Inline<'s>>,
    threads: usize,
    batch: usize,
    parts: usize,
    /// Per partition: the shard that owns it and its index there.
    shard_of: Vec<(u16, u16)>,
    batches: Vec<Vec<Routed>>,
    to_shard: Vec<Sender<ToShard>>,
    recycle: Vec<Receiver<Vec<Routed>>>,
    now: u64,
    failed: bool,
    flow_packets: u64,
    ip_bytes: u64,
}

impl Router<'_> {
    #[inline]
    fn push(&mut self, ts: u64, d: &Decoded) {
        self.push_packet(Packet::new(ts, d));
    }

    #[inline]
    fn push_packet(&mut self, pkt: Packet) {
        // Bits 32..48 of the hash: the table's buckets use the low bits and
        // its control bytes the top seven, so partitions stay independent.
        // Multiply-shift instead of `%`: a division per packet is measurable.
        let part = (((pkt.hash >> 32) & 0xffff) as usize * self.parts) >> 16;
        self.flow_packets += 1;
        self.ip_bytes += u64::from(pkt.ip_bytes);
        let (shard, local) = self.shard_of[part];
        self.batches[shard as usize].push(Routed {
            part: part as u16,
            local,
            pkt,
        });
    }

    fn push_gap(&mut self, start: u64, end: u64) {
        let pkt = Packet {
            ts_ns: start,
            key: crate::flow::FlowKey::default(),
            hash: end,
            from_src: true,
            ip_bytes: 0,
            tcp_flags: 0,
            icmp: None,
        };
        for b in &mut self.batches {
            b.push(Routed {
                part: GAP_PART,
                local: 0,
                pkt,
            });
        }
    }

    fn send(&mut self, last: bool, end: EndReason) {
        if let Some(inl) = self.inline.as_mut() {
            inl.submit(&self.batches[0], self.now, last, end);
            self.batches[0].clear();
            self.failed |= inl.error.is_some();
            return;
        }
        for i in 0..self.threads {
            // Reuse a batch the shard has finished with; a new one only while
            // the pipeline fills up, so steady state allocates nothing.
            let fresh = self.recycle[i]
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.batch));
            let pkts = std::mem::replace(&mut self.batches[i], fresh);
            let msg = ToShard::Batch {
                pkts,
                now: self.now,
                last,
                end,
            };
            if self.to_shard[i].send(msg).is_err() {
                self.failed = true;
            }
        }
    }
}

fn shard(
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
fn process(
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
        if let Some(a) = pkts.get(i + 16).filter(|a| a.part != GAP_PART) {
            tables[usize::from(a.local)].prefetch(a.pkt.hash, false);
        }
        if let Some(b) = pkts.get(i + 8).filter(|b| b.part != GAP_PART) {
            tables[usize::from(b.local)].prefetch(b.pkt.hash, true);
        }
        if r.part == GAP_PART {
            let gap = Event::Gap {
                start: r.pkt.ts_ns,
                end: r.pkt.hash,
            };
            for (local, t) in tables.iter_mut().enumerate() {
                t.handle(gap, recs);
                let part = (local * threads + me) as u16;
                tagged.extend(recs.drain(..).map(|x| (part, x)));
            }
            continue;
        }
        let local = usize::from(r.local);
        tables[local].handle(Event::Packet(&r.pkt), recs);
        if !recs.is_empty() {
            tagged.extend(recs.drain(..).map(|x| (r.part, x)));
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

/// Everything on the reader's thread, for live capture at moderate rates:
/// no hand-off between threads, no wake-ups, the same records in the same order.
struct Inline<'s> {
    tables: Vec<FlowTable>,
    sink: Box<dyn RecordSink + 's>,
    recs: Vec<FlowRecord>,
    tagged: Vec<(u16, FlowRecord)>,
    plain: Vec<FlowRecord>,
    written: Written,
    /// The output's first failure; nothing is written after it.
    error: Option<std::io::Error>,
}

impl Inline<'_> {
    fn submit(&mut self, pkts: &[Routed], now: u64, last: bool, end: EndReason) {
        process(
            0,
            1,
            &mut self.tables,
            pkts,
            now,
            last,
            end,
            &mut self.recs,
            &mut self.tagged,
        );
        if self.error.is_none() {
            if let Err(e) = write_epoch(
                &mut self.tagged,
                &mut self.plain,
                &mut self.written,
                &mut self.sink,
            ) {
                self.error = Some(e);
            }
        }
        self.tagged.clear();
        if last {
            self.written.table = sum_stats(self.tables.iter().map(|t| t.stats()));
            if let Err(e) = self.sink.finish() {
                self.error.get_or_insert(e);
            }
        }
    }
}

impl Inline<'_> {
    /// The end of a run whose open flows stay in its checkpoint.
    fn close_kept_open(&mut self) {
        self.written.table = sum_stats(self.tables.iter().map(|t| t.stats()));
        if let Err(e) = self.sink.finish() {
            self.error.get_or_insert(e);
        }
    }
}

#[derive(Default)]
struct Written {
    records: u64,
    flows: u64,
    packets: u64,
    bytes: u64,
    table: TableStats,
}

fn output<S: RecordSink>(
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

/// Orders one batch's records by partition (stable, so each partition keeps
/// its own order), counts them and writes them.
fn write_epoch<S: RecordSink + ?Sized>(
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

fn sum_stats(it: impl Iterator<Item = TableStats>) -> TableStats {
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
    use crate::capture::CaptureReader;
    use crate::export::VecSink;

    fn records(cfg: &Config, pcap: &[u8], inline: bool) -> Vec<FlowRecord> {
        let mut sink = VecSink::default();
        let all = |feed: &mut dyn Feed| {
            let mut r = CaptureReader::open(std::io::Cursor::new(pcap)).expect("valid");
            while let Some(p) = r.next_packet().expect("valid") {
                feed.packet(p);
            }
            Ok::<_, PipelineError>(())
        };
        let report = if inline {
            run_inline(cfg, &mut sink, InlineOptions::default(), |feed| all(feed))
        } else {
            run_with(cfg, &mut sink, RunOptions::default(), all)
        };
        assert!(report.error.is_none());
        sink.0
    }

    #[test]
    fn a_restored_checkpoint_continues_exactly_where_the_run_stopped() {
        let mut pcap = Vec::new();
        let p = crate::synth::SynthParams {
            packets: 60_000,
            concurrent: 1_500,
            snaplen: 128,
            seed: 5,
        };
        let mut cfg = Config::default();
        crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
        cfg.flow.max_flows = 700;
        cfg.flow.tcp_linger = crate::config::Seconds(0.001);
        cfg.flow.idle_timeout = crate::config::Seconds(0.05);
        cfg.pipeline.batch_packets = 1000;
        let whole = records(&cfg, &pcap, true);
        // Cut mid-batch and at a batch boundary.
        for cut in [23_456usize, 30_000] {
            let mut first = VecSink::default();
            let mut state = None;
            let report = run_inline(&cfg, &mut first, InlineOptions::default(), |feed| {
                let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
                for _ in 0..cut {
                    let p = r.next_packet().unwrap().unwrap();
                    feed.packet(p);
                }
                state = Some(feed.checkpoint().unwrap());
                Ok::<_, PipelineError>(())
            });
            assert!(report.error.is_none());
            let state = state.expect("inline runs checkpoint");
            let bytes = rmp_serde::to_vec(&state).unwrap();
            let state: EngineState = rmp_serde::from_slice(&bytes).unwrap();
            let at = state.records as usize;
            assert!(at > 1_000, "records before the checkpoint: {at}");
            assert_eq!(&first.0[..at], &whole[..at]);
            let mut rest = VecSink::default();
            let opts = InlineOptions {
                restore: Some(Box::new(state)),
                ..InlineOptions::default()
            };
            let report = run_inline(&cfg, &mut rest, opts, |feed| {
                let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
                for _ in 0..cut {
                    r.next_packet().unwrap().unwrap();
                }
                while let Some(p) = r.next_packet().unwrap() {
                    feed.packet(p);
                }
                Ok::<_, PipelineError>(())
            });
            assert!(report.error.is_none());
            assert!(whole.len() > at + 1_000, "cut {cut}");
            assert!(rest.0 == whole[at..], "cut {cut}");
        }
    }

    #[test]
    fn inline_mode_gives_the_same_records_in_the_same_order() {
        let mut pcap = Vec::new();
        let p = crate::synth::SynthParams {
            packets: 100_000,
            concurrent: 2_000,
            snaplen: 128,
            seed: 21,
        };
        let mut cfg = Config::default();
        crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
        cfg.flow.max_flows = 500;
        for threads in [1, 3] {
            cfg.pipeline.threads = threads;
            let threaded = records(&cfg, &pcap, false);
            let inline = records(&cfg, &pcap, true);
            assert!(threaded.len() > 1_000);
            assert!(threaded == inline, "threads {threads}");
        }
    }
}
