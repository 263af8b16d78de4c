//! What a packet source feeds: [`Feed`] for any run, [`InlineFeed`] for an
//! inline one; [`Ingest`] is the engine's side of both (decode, fragments,
//! batching, the agent's own export traffic left out).

use std::collections::HashMap;
use std::sync::Arc;

use vmflow_proto::EndReason;

use super::router::Router;
use super::state::EngineState;
use super::PipelineError;
use crate::config::Config;
use crate::decode::{decode, Skip};
use crate::flow::FragTable;
use crate::packet::RawPacket;

/// Only `run_inline` hands out an `InlineFeed`, whose engine is inline.
pub(super) const NOT_INLINE: PipelineError =
    PipelineError::Stage("an inline operation on a threaded run");

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

/// The reader stage: decode, fragments, routing into per-shard batches.
pub(super) struct Ingest<'s> {
    pub(super) reader: Router<'s>,
    pub(super) frag: FragTable,
    pub(super) skips: HashMap<Skip, u64>,
    pub(super) packets: u64,
    pub(super) in_batch: usize,
    pub(super) batch: usize,
    /// The export connection's address, port and IP version, in key form.
    pub(super) exclude: Option<([u8; 16], u16, u8)>,
    pub(super) own_export: u64,
    pub(super) keep_open: bool,
}

impl Ingest<'_> {
    /// Either end of the key (oriented or canonical) is the export address.
    #[inline]
    pub(super) fn is_own_export(&self, key: &crate::flow::FlowKey) -> bool {
        let Some((ip, port, version)) = self.exclude else {
            return false;
        };
        key.ip_version == version
            && ((key.src == ip && key.src_port == port) || (key.dst == ip && key.dst_port == port))
    }

    /// Every frame the one-pass decoder does not take: pnet views, skips
    /// counted by reason, fragments through the fragment table.
    #[inline(never)]
    pub(super) fn general(&mut self, raw: RawPacket<'_>) {
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

    pub(super) fn close_batch(&mut self) {
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
