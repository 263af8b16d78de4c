//! A batch: packets in stream order, each tagged with its flow's partition,
//! and coverage gaps in band. Where a closed batch goes ([`Dispatch`]) and
//! what a batch does to the tables that own its partitions ([`process`]).

use vmflow_proto::{EndReason, FlowRecord};

use crate::flow::{Event, FlowKey, FlowTable, Packet};

/// One item of a batch, in stream order.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(from = "RoutedWire", into = "RoutedWire")]
pub enum Routed {
    Packet {
        part: u16,
        /// The partition's index among its shard's tables (`part / shards`),
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
struct RoutedWire {
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
                    key: FlowKey::default(),
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

/// Where closed batches go: the tables on the caller's thread
/// ([`crate::inline::Inline`]) or shard threads that own the partitions (the
/// agent's threaded runner). Shard `i` owns partitions `i, i + shards, …`.
pub trait Dispatch {
    /// How many shards the partitions are spread over.
    fn shards(&self) -> usize;
    /// Takes one batch per shard (leaving each vector empty, capacity kept
    /// or replaced), the packet time reached, and with `last` how the
    /// remaining flows end. False once the batches can no longer be
    /// processed (the output or a shard failed): the engine stops feeding.
    fn dispatch(
        &mut self,
        batches: &mut [Vec<Routed>],
        now: u64,
        last: bool,
        end: EndReason,
    ) -> bool;
    /// Whether the run is to end without ending its open flows (they live
    /// on in a checkpoint); only an inline engine can be asked to.
    fn keeps_open(&self) -> bool {
        false
    }
    /// Ends such a run: the output is finished, the flows stay open.
    fn end_kept_open(&mut self) {}
    /// The tables at a glance (an engine with tables on other threads
    /// shows what they published after their last batch).
    fn tables_now(&self) -> Option<TablesNow> {
        None
    }
}

/// The flow tables of an inline engine, at a glance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TablesNow {
    pub open_flows: u64,
    pub evicted: u64,
}

/// One batch through the tables a shard owns, then the batch-boundary tick
/// (and, at the end, the finish). Each table's records go to its own vector
/// (`out[local]`), in the order the table produced them: a shard's tables are
/// its partitions in ascending order, so the epoch's records ordered by
/// partition are these vectors one after another, interleaved across shards
/// (partition `local * shards + me`), with no sort and no tag per record.
///
/// `table_done(local, out)` runs once table `local` has had its tick: its
/// vector is complete for the epoch and may go (a tick that ends many flows
/// at once then leaves table by table instead of as one burst).
pub fn process(
    tables: &mut [FlowTable],
    pkts: &[Routed],
    now: u64,
    last: bool,
    end: EndReason,
    out: &mut [Vec<FlowRecord>],
    mut table_done: impl FnMut(usize, &mut [Vec<FlowRecord>]),
) {
    // Two-stage prefetch: the bucket of packet i+16, then (once that is
    // cached) the flow slot of packet i+8. Pure hints; output is unchanged.
    for (i, r) in pkts.iter().enumerate() {
        if let Some(Routed::Packet { local, pkt, .. }) = pkts.get(i + 16) {
            tables[usize::from(*local)].prefetch(pkt.hash, false);
        }
        if let Some(Routed::Packet { local, pkt, .. }) = pkts.get(i + 8) {
            tables[usize::from(*local)].prefetch(pkt.hash, true);
        }
        match r {
            Routed::Packet { local, pkt, .. } => {
                let local = usize::from(*local);
                tables[local].handle(Event::Packet(pkt), &mut out[local]);
            }
            &Routed::Gap { start, end } => {
                let gap = Event::Gap { start, end };
                for (t, o) in tables.iter_mut().zip(out.iter_mut()) {
                    t.handle(gap, o);
                }
            }
        }
    }
    for (local, t) in tables.iter_mut().enumerate() {
        t.handle(Event::Tick(now), &mut out[local]);
        if last {
            t.handle(Event::Finish(end), &mut out[local]);
        }
        table_done(local, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints hold the batch being filled; a gap in it is kept in the form
    /// every earlier checkpoint has (a packet of partition u16::MAX, `ts_ns` the
    /// start, `hash` the end), so checkpoints of older agents still resume.
    #[test]
    fn a_gap_is_kept_in_checkpoints_as_it_always_was() {
        let old_form = (
            u16::MAX,
            0u16,
            crate::flow::Packet {
                ts_ns: 5,
                key: crate::flow::FlowKey::default(),
                hash: 9,
                from_src: true,
                ip_bytes: 0,
                tcp_flags: 0,
                icmp: None,
            },
        );
        let old = rmp_serde::to_vec(&old_form).unwrap();
        let gap = Routed::Gap { start: 5, end: 9 };
        assert_eq!(rmp_serde::to_vec(&gap).unwrap(), old);
        let back: Routed = rmp_serde::from_slice(&old).unwrap();
        assert!(matches!(back, Routed::Gap { start: 5, end: 9 }));
    }
}
