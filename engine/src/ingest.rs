//! The engine's one entry point for packets and time: decode (the one-pass
//! fast path, else the general decoder), fragments, the agent's own export
//! traffic left out, routing into batches, and batch boundaries set by packet
//! count and packet time (never a clock), so the output never depends on timing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use vmflow_proto::EndReason;

use crate::batch::{Dispatch, Routed};
use crate::decode::{decode, fast, Skip};
use crate::error::EngineError;
use crate::feed::{Feed, InlineFeed, Progress};
use crate::flow::{from_ip, FlowKey, FragStats, FragTable};
use crate::inline::Inline;
use crate::packet::RawPacket;
use crate::records::Written;
use crate::router::Router;
use crate::settings::Settings;
use crate::sink::RecordSink;
use crate::state::EngineState;

/// An engine: the reader stage, feeding its batches to `D` (the inline
/// tables, or shard threads).
pub struct Ingest<D> {
    reader: Router<D>,
    frag: FragTable,
    skips: HashMap<Skip, u64>,
    packets: u64,
    in_batch: usize,
    batch: usize,
    batch_ns: u64,
    /// Packet time when the batch being filled began.
    batch_start: u64,
    /// When it closes by time: `batch_start + batch_ns` (never, by count
    /// only), so a packet costs one compare.
    batch_due: u64,
    parts: usize,
    /// The export connection's address, port and IP version, in key form.
    exclude: Option<([u8; 16], u16, u8)>,
    own_export: u64,
}

/// What the reader stage counted over a run.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Packets fed.
    pub packets: u64,
    /// Packets that reached the flow tables.
    pub flow_packets: u64,
    /// IP-layer bytes that reached the flow tables.
    pub ip_bytes: u64,
    /// Packets left out, by reason (`own_export` among them).
    pub skipped: BTreeMap<String, u64>,
    pub frag: FragStats,
    /// The dispatch refused a batch: records after that point are missing.
    pub failed: bool,
}

impl<D: Dispatch> Ingest<D> {
    /// A fresh engine. Packets to or from `exclude` (the agent's own export
    /// connection) are not flows; they are counted as `own_export`.
    pub fn new(settings: &Settings, exclude: Option<SocketAddr>, dispatch: D) -> Self {
        let batch = settings.batch_packets;
        Ingest {
            reader: Router::new(dispatch, settings.partitions, batch),
            frag: FragTable::new(settings.flow.fragment_ns()),
            skips: HashMap::new(),
            packets: 0,
            in_batch: 0,
            batch,
            batch_ns: settings.batch_ns,
            batch_start: 0,
            batch_due: u64::MAX,
            parts: settings.partitions,
            exclude: exclude.map(|ex| {
                let version = if ex.is_ipv4() { 4 } else { 6 };
                (from_ip(ex.ip()), ex.port(), version)
            }),
            own_export: 0,
        }
    }

    /// Ends the run: open flows and pending fragments end with `end` (unless
    /// [`InlineFeed::keep_open`] was asked for) and the last batch goes out.
    /// Returns the counts and the dispatch, which holds what was written.
    pub fn finish(mut self, end: EndReason) -> (Counts, D) {
        if self.reader.dispatch.keeps_open() {
            self.reader.dispatch.end_kept_open();
        } else {
            let reader = &mut self.reader;
            self.frag.drain(&mut |ts, d| reader.push(ts, &d));
            reader.send(true, end);
        }
        let skipped = self.skipped();
        let counts = Counts {
            packets: self.packets,
            flow_packets: self.reader.flow_packets,
            ip_bytes: self.reader.ip_bytes,
            skipped,
            frag: self.frag.stats(),
            failed: self.reader.failed,
        };
        (counts, self.reader.dispatch)
    }

    /// Packets left out so far, by reason (`own_export` among them).
    fn skipped(&self) -> BTreeMap<String, u64> {
        let mut skipped: BTreeMap<String, u64> =
            self.skips.iter().map(|(k, v)| (k.reason(), *v)).collect();
        if self.own_export > 0 {
            skipped.insert("own_export".into(), self.own_export);
        }
        skipped
    }

    /// Either end of the key (oriented or canonical) is the export address.
    #[inline]
    fn is_own_export(&self, key: &FlowKey) -> bool {
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

    /// A batch's first packet came at `at`: from then it may close by time.
    fn start_batch(&mut self, at: u64) {
        self.batch_start = at;
        self.batch_due = match self.batch_ns {
            0 => u64::MAX,
            ns => self.batch_start.saturating_add(ns),
        };
    }

    fn close_batch(&mut self) {
        self.in_batch = 0;
        let now = self.reader.now;
        let reader = &mut self.reader;
        self.frag.expire(now, &mut |ts, d| reader.push(ts, &d));
        reader.send(false, EndReason::EndOfInput);
    }
}

impl<D: Dispatch> Feed for Ingest<D> {
    #[inline]
    fn packet(&mut self, raw: RawPacket<'_>) {
        if self.reader.failed {
            return;
        }
        self.packets += 1;
        self.reader.now = self.reader.now.max(raw.ts_ns);
        if self.in_batch == 0 {
            self.start_batch(self.reader.now);
        }
        if let Some(p) = fast::packet(raw.ts_ns, raw.linktype, raw.data, raw.orig_len) {
            if self.is_own_export(&p.key) {
                self.own_export += 1;
            } else {
                self.reader.push_packet(p);
            }
        } else {
            self.general(raw);
        }
        self.in_batch += 1;
        if self.in_batch == self.batch || self.reader.now >= self.batch_due {
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

    fn progress(&self) -> Progress {
        Progress {
            packets: self.packets,
            flow_packets: self.reader.flow_packets,
            ip_bytes: self.reader.ip_bytes,
            skipped: self.skipped(),
            tables: self.reader.dispatch.tables_now(),
        }
    }
}

impl<'s> Ingest<Inline<'s>> {
    /// An engine on the caller's thread, from empty tables or from a
    /// checkpoint taken with the same partition count.
    pub fn inline(
        settings: &Settings,
        exclude: Option<SocketAddr>,
        sink: Box<dyn RecordSink + 's>,
        restore: Option<EngineState>,
    ) -> Result<Self, EngineError> {
        let parts = settings.partitions;
        let local = Arc::new(settings.local_nets.clone());
        let Some(r) = restore else {
            let inline = Inline::new(settings, local, sink, None);
            return Ok(Ingest::new(settings, exclude, inline));
        };
        if r.pending.iter().any(|p| match *p {
            Routed::Packet { part, local, .. } => usize::from(part) >= parts || local != part,
            Routed::Gap { .. } => false,
        }) {
            return Err(EngineError::UnknownPartition);
        }
        if r.tables.len() != parts {
            return Err(EngineError::PartitionsChanged {
                held: r.tables.len(),
                configured: parts,
            });
        }
        let written = Written {
            records: r.records,
            flows: r.flows,
            packets: r.record_packets,
            bytes: r.record_bytes,
            table: Default::default(),
        };
        let inline = Inline::new(settings, local, sink, Some((r.tables, written)));
        let mut ingest = Ingest::new(settings, exclude, inline);
        ingest.frag = FragTable::restore(settings.flow.fragment_ns(), r.frag);
        ingest.reader.batches[0] = r.pending;
        ingest.reader.now = r.now;
        ingest.reader.flow_packets = r.flow_packets;
        ingest.reader.ip_bytes = r.ip_bytes;
        ingest.packets = r.packets;
        ingest.in_batch = r.in_batch;
        if ingest.in_batch > 0 {
            ingest.start_batch(r.batch_start);
        }
        Ok(ingest)
    }
}

impl InlineFeed for Ingest<Inline<'_>> {
    fn reconfigure(&mut self, settings: &Settings) -> Result<(), EngineError> {
        if settings.partitions != self.parts {
            return Err(EngineError::PartitionsFixed);
        }
        // Close the current batch first: packets so far are judged by the
        // settings they arrived under.
        self.close_batch();
        let local = Arc::new(settings.local_nets.clone());
        let table = settings.flow.table(settings.partitions);
        for t in &mut self.reader.dispatch.tables {
            t.reconfigure(table.clone(), local.clone());
        }
        self.frag.set_timeout(settings.flow.fragment_ns());
        self.batch_ns = settings.batch_ns;
        Ok(())
    }

    fn end_flows(&mut self, reason: EndReason) {
        if self.reader.failed {
            return;
        }
        self.in_batch = 0;
        let reader = &mut self.reader;
        self.frag.drain(&mut |ts, d| reader.push(ts, &d));
        reader.send(true, reason);
    }

    fn keep_open(&mut self) {
        self.reader.dispatch.keep_open = true;
    }

    fn checkpoint(&mut self) -> Result<EngineState, EngineError> {
        let inl = &mut self.reader.dispatch;
        if let Some(e) = &inl.error {
            // The first failure stays with the run's report; the checkpoint
            // gets a copy of what it said.
            return Err(EngineError::OutputFailedEarlier(std::io::Error::new(
                e.kind(),
                e.to_string(),
            )));
        }
        inl.sink.flush().map_err(EngineError::Output)?;
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
            batch_start: self.batch_start,
        })
    }
}
