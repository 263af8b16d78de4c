//! Packets into per-shard batches: each packet goes to its flow's partition
//! (a symmetric hash of the key), into the batch of the shard that owns the
//! partition; a coverage gap goes in band to every shard. At a boundary the
//! batches go to the [`Dispatch`].

use vmflow_proto::EndReason;

use crate::batch::{Dispatch, Routed};
use crate::decode::Decoded;
use crate::flow::Packet;

pub(crate) struct Router<D> {
    pub(crate) dispatch: D,
    parts: usize,
    /// Per partition: the shard that owns it and its index there.
    shard_of: Vec<(u16, u16)>,
    pub(crate) batches: Vec<Vec<Routed>>,
    pub(crate) now: u64,
    /// The dispatch refused a batch: nothing more is routed.
    pub(crate) failed: bool,
    pub(crate) flow_packets: u64,
    pub(crate) ip_bytes: u64,
}

impl<D: Dispatch> Router<D> {
    pub(crate) fn new(dispatch: D, parts: usize, batch: usize) -> Self {
        let shards = dispatch.shards();
        Router {
            dispatch,
            parts,
            shard_of: (0..parts)
                .map(|p| ((p % shards) as u16, (p / shards) as u16))
                .collect(),
            batches: (0..shards).map(|_| Vec::with_capacity(batch)).collect(),
            now: 0,
            failed: false,
            flow_packets: 0,
            ip_bytes: 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, ts: u64, d: &Decoded) {
        self.push_packet(Packet::new(ts, d));
    }

    #[inline]
    pub(crate) fn push_packet(&mut self, pkt: Packet) {
        // Bits 32..48 of the hash: the table's buckets use the low bits and
        // its control bytes the top seven, so partitions stay independent.
        // Multiply-shift instead of `%`: a division per packet is measurable.
        let part = (((pkt.hash >> 32) & 0xffff) as usize * self.parts) >> 16;
        self.flow_packets += 1;
        self.ip_bytes += u64::from(pkt.ip_bytes);
        let (shard, local) = self.shard_of[part];
        self.batches[shard as usize].push(Routed::Packet {
            part: part as u16,
            local,
            pkt,
        });
    }

    pub(crate) fn push_gap(&mut self, start: u64, end: u64) {
        for b in &mut self.batches {
            b.push(Routed::Gap { start, end });
        }
    }

    pub(crate) fn send(&mut self, last: bool, end: EndReason) {
        if !self
            .dispatch
            .dispatch(&mut self.batches, self.now, last, end)
        {
            self.failed = true;
        }
    }
}
