//! Packets into per-shard batches: each packet goes to its flow's partition
//! (a symmetric hash of the key), each batch to the shard that owns the
//! partition, or straight to the inline tables; a coverage gap travels in
//! band to every partition.

use crossbeam_channel::{Receiver, Sender};
use vmflow_proto::{EndReason, FlowRecord};

use super::inline::Inline;
use crate::decode::Decoded;
use crate::flow::{Packet, TableStats};

/// One item of a batch, in stream order.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(from = "RoutedWire", into = "RoutedWire")]
pub(super) enum Routed {
    Packet {
        part: u16,
        /// The partition's index among its shard's tables (`part / threads`),
        /// looked up when routing: a division per packet in the shard is
        /// measurable.
        local: u16,
        pkt: Packet,
    },
    /// A coverage gap, to every partition, at its place between packets: in
    /// band, so batch boundaries (and with them the records) stay what they
    /// would be.
    Gap { start: u64, end: u64 },
}

/// How a batch item is kept in a checkpoint, as it always was: a gap is a
/// packet of partition `GAP_PART` whose `ts_ns` is the start and `hash` the
/// end. Checkpoints written before gaps had a type of their own read as
/// they did.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) struct RoutedWire {
    part: u16,
    local: u16,
    pkt: Packet,
}

const GAP_PART: u16 = u16::MAX;

impl From<RoutedWire> for Routed {
    fn from(w: RoutedWire) -> Routed {
        if w.part == GAP_PART {
            Routed::Gap {
                start: w.pkt.ts_ns,
                end: w.pkt.hash,
            }
        } else {
            Routed::Packet {
                part: w.part,
                local: w.local,
                pkt: w.pkt,
            }
        }
    }
}

impl From<Routed> for RoutedWire {
    fn from(r: Routed) -> RoutedWire {
        match r {
            Routed::Packet { part, local, pkt } => RoutedWire { part, local, pkt },
            Routed::Gap { start, end } => RoutedWire {
                part: GAP_PART,
                local: 0,
                pkt: Packet {
                    ts_ns: start,
                    key: crate::flow::FlowKey::default(),
                    hash: end,
                    from_src: true,
                    ip_bytes: 0,
                    tcp_flags: 0,
                    icmp: None,
                },
            },
        }
    }
}

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

/// Routes packets into per-shard batches (or hands them to the inline tables)
/// and sends each batch at its boundary.
pub(super) struct Router<'s> {
    pub(super) inline: Option<Inline<'s>>,
    pub(super) threads: usize,
    pub(super) batch: usize,
    pub(super) parts: usize,
    /// Per partition: the shard that owns it and its index there.
    pub(super) shard_of: Vec<(u16, u16)>,
    pub(super) batches: Vec<Vec<Routed>>,
    pub(super) to_shard: Vec<Sender<ToShard>>,
    pub(super) recycle: Vec<Receiver<Vec<Routed>>>,
    pub(super) now: u64,
    pub(super) failed: bool,
    pub(super) flow_packets: u64,
    pub(super) ip_bytes: u64,
}

impl Router<'_> {
    #[inline]
    pub(super) fn push(&mut self, ts: u64, d: &Decoded) {
        self.push_packet(Packet::new(ts, d));
    }

    #[inline]
    pub(super) fn push_packet(&mut self, pkt: Packet) {
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

    pub(super) fn push_gap(&mut self, start: u64, end: u64) {
        for b in &mut self.batches {
            b.push(Routed::Gap { start, end });
        }
    }

    pub(super) fn send(&mut self, last: bool, end: EndReason) {
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
