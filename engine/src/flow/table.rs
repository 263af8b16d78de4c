//! The flow table: a sans-IO state machine. It is fed packets and time through
//! [`FlowTable::handle`] and appends finished records to a caller's vector; it
//! owns no socket, thread or clock, so the same input always gives the same
//! output.
//!
//! Flows sit in a slab and in one of four queues (half-open, open, closing,
//! last-ACK), each with one timeout. A packet only updates its flow's `last_seen`; it
//! does not move the flow in its queue (that would touch two more random
//! cache lines per packet). Queues are ordered by `queued_at`, the flow's
//! `last_seen` when it was (re)queued, which never exceeds its `last_seen`.
//! So when the head's `queued_at` is younger than the timeout, nothing in the
//! queue is due; when it is older, the head is either expired or touched since
//! and goes back to the tail ("second chance"). Each flow is requeued at most
//! once per timeout period. The least recently seen flow is found the same way.
//!
//! A TCP close is judged by TCP's own rule, not by how quickly its packets
//! follow each other: after FIN both ways the flow waits for the ACK of the
//! second FIN (up to `last_ack_ns` after its last packet), and the linger for
//! retransmissions counts from that ACK. Such a flow enters the closing queue
//! at the second FIN, where a fast close finishes as it always did; only one
//! still waiting when its linger is over moves on to the last-ACK queue.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use vmflow_proto::{flow_id, Direction, EndReason, FlowRecord};

use super::index::Index;
use super::stored_key::{Addrs, Probe, StoredKey};
use super::{FlowKey, Packet};
use crate::net::LocalNets;
use crate::packet::{is_echo_reply, TCP};

const NIL: u32 = u32::MAX;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Timeouts in nanoseconds of packet time, and the table bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableConfig {
    pub idle_ns: u64,
    pub active_ns: u64,
    pub tcp_linger_ns: u64,
    /// How long after its last packet a flow closed by FIN both ways waits
    /// for the ACK of the second FIN (never less than the linger).
    pub last_ack_ns: u64,
    pub half_open_ns: u64,
    /// Idle timeout used while the table is nearly full.
    pub emergency_idle_ns: u64,
    pub max_flows: usize,
    /// Flow count at which emergency timeouts start.
    pub emergency_at: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        TableConfig {
            idle_ns: 60 * S,
            active_ns: 60 * S,
            tcp_linger_ns: 2 * S,
            last_ack_ns: 60 * S,
            half_open_ns: 10 * S,
            emergency_idle_ns: 5 * S,
            max_flows: 1 << 20,
            emergency_at: (1 << 20) / 10 * 9,
        }
    }
}

/// Input to the table.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    Packet(&'a Packet),
    /// Packet time has reached this instant: expire what is due.
    Tick(u64),
    /// Input is over: end every flow with this reason (closing TCP flows keep
    /// their FIN/RST reason: they did end).
    Finish(EndReason),
    /// The source saw nothing from `start` to `end` although packets may have
    /// flowed (a coverage gap): flows open at `start`, and flows that appear
    /// within an idle timeout after `end` without a TCP handshake, are marked.
    Gap {
        start: u64,
        end: u64,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub records: u64,
    pub evicted: u64,
    /// Flows expired by the emergency idle timeout that the normal one would have kept.
    pub emergency_expired: u64,
    pub peak_flows: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[repr(u8)]
enum Phase {
    HalfOpen = 0,
    Open = 1,
    Closing = 2,
    /// FIN both ways, the ACK of the second FIN not seen within the linger.
    LastAck = 3,
}

const PHASES: [Phase; 4] = [Phase::HalfOpen, Phase::Open, Phase::Closing, Phase::LastAck];

/// Counters of the current segment; index 0 is what the canonical source sent.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Segment {
    first_ns: u64,
    last_ns: u64,
    bytes: [u64; 2],
    /// A segment lasts at most the active timeout; 2^32 packets in it would
    /// take over 70 Mpps for a minute on one flow.
    packets: [u32; 2],
}

/// 96 bytes, aligned to 32 so that a flow never spans more than two cache
/// lines (the shard prefetches both). Fields ordered by size so none pads.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Flow {
    last_seen: u64,
    /// `last_seen` when the flow entered its queue position.
    queued_at: u64,
    flow_id: u64,
    seg: Segment,
    /// The stored key, its parts laid out here rather than as a struct,
    /// whose padding would cost 7 bytes.
    addrs: u64,
    meta: u64,
    segment: u32,
    /// The current segment's TCP flags, by side.
    flags: [u8; 2],
    /// The current segment was open during a coverage gap.
    gap: bool,
    key_kind: u8,
    phase: Phase,
    init_is_src: bool,
    /// The sides that sent a FIN; the second FIN's side is marked only once
    /// the other side has ACKed it. So a FIN-closed flow with one mark still
    /// waits for that ACK, from the marked side.
    fin: [bool; 2],
    close: EndReason,
    icmp: Option<(u8, u8)>,
}

impl Flow {
    #[inline(always)]
    fn stored_key(&self) -> StoredKey {
        StoredKey {
            addrs: self.addrs,
            meta: self.meta,
            kind: self.key_kind,
        }
    }

    /// Starts the next segment (the active timeout split the flow).
    fn next_segment(&mut self) {
        self.segment += 1;
        self.seg = Segment::default();
        self.flags = [0; 2];
        self.gap = false;
    }
}

/// A flow as checkpoints hold it: the form `Flow` had before it was packed
/// (MessagePack arrays, so field order is the format). Only checkpoints use
/// it; the table never holds one.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct FlowState {
    key: FlowKey,
    phase: Phase,
    init_is_src: bool,
    fin: [bool; 2],
    last_seen: u64,
    queued_at: u64,
    flow_id: u64,
    seg: SegmentState,
    segment: u32,
    close: EndReason,
    icmp: Option<(u8, u8)>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
struct SegmentState {
    first_ns: u64,
    last_ns: u64,
    bytes: [u64; 2],
    packets: [u32; 2],
    flags: [u8; 2],
    gap: bool,
}

impl FlowState {
    fn of(f: &Flow, addrs: &Addrs) -> FlowState {
        let s = f.seg;
        FlowState {
            key: addrs.key(&f.stored_key()),
            phase: f.phase,
            init_is_src: f.init_is_src,
            fin: f.fin,
            last_seen: f.last_seen,
            queued_at: f.queued_at,
            flow_id: f.flow_id,
            seg: SegmentState {
                first_ns: s.first_ns,
                last_ns: s.last_ns,
                bytes: s.bytes,
                packets: s.packets,
                flags: f.flags,
                gap: f.gap,
            },
            segment: f.segment,
            close: f.close,
            icmp: f.icmp,
        }
    }

    fn flow(&self, key: StoredKey) -> Flow {
        let s = &self.seg;
        Flow {
            last_seen: self.last_seen,
            queued_at: self.queued_at,
            flow_id: self.flow_id,
            seg: Segment {
                first_ns: s.first_ns,
                last_ns: s.last_ns,
                bytes: s.bytes,
                packets: s.packets,
            },
            addrs: key.addrs,
            meta: key.meta,
            segment: self.segment,
            flags: s.flags,
            gap: s.gap,
            key_kind: key.kind,
            phase: self.phase,
            init_is_src: self.init_is_src,
            fin: self.fin,
            close: self.close,
            icmp: self.icmp,
        }
    }
}

/// Queue links, kept apart from the flows: only queue operations touch them.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

pub struct FlowTable {
    cfg: TableConfig,
    local: Arc<LocalNets>,
    index: Index,
    slots: Vec<Flow>,
    addrs: Addrs,
    links: Vec<Link>,
    free: Vec<u32>,
    lists: [List; 4],
    len: usize,
    now: u64,
    /// New flows before this instant may have started during a gap.
    gap_until: u64,
    stats: TableStats,
}

/// Everything a table holds, flows in queue order: restoring it gives a table
/// that behaves exactly as the original would have (a checkpoint).
#[derive(Serialize, Deserialize)]
pub struct TableSnapshot {
    /// Half-open, open and closing flows.
    queues: [Vec<FlowState>; 3],
    now: u64,
    gap_until: u64,
    stats: TableStats,
    /// Last: checkpoints written before this queue existed restore with it empty.
    #[serde(default)]
    last_ack: Vec<FlowState>,
}

impl TableSnapshot {
    pub fn len(&self) -> usize {
        self.queues.iter().map(Vec::len).sum::<usize>() + self.last_ack.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FlowTable {
    pub fn new(cfg: TableConfig, local: Arc<LocalNets>) -> Self {
        Self::with_reservation(cfg, local, RESERVE_UP_FRONT)
    }

    /// A table that grows its slab on demand, as tables do on Windows.
    #[cfg(test)]
    pub(super) fn growing(cfg: TableConfig, local: Arc<LocalNets>) -> Self {
        Self::with_reservation(cfg, local, false)
    }

    fn with_reservation(cfg: TableConfig, local: Arc<LocalNets>, up_front: bool) -> Self {
        let (slots, links) = reserved(cfg.max_flows, up_front);
        FlowTable {
            cfg,
            local,
            index: Index::new(),
            slots,
            addrs: Addrs::default(),
            links,
            free: Vec::new(),
            lists: [List {
                head: NIL,
                tail: NIL,
            }; 4],
            len: 0,
            now: 0,
            gap_until: 0,
            stats: TableStats::default(),
        }
    }

    /// The table's whole state; slot numbers are not part of it (they never
    /// reach a record), queue order is.
    pub fn snapshot(&self) -> TableSnapshot {
        let queue = |phase: Phase| {
            let mut v = Vec::new();
            let mut i = self.lists[phase as usize].head;
            while i != NIL {
                v.push(FlowState::of(&self.slots[i as usize], &self.addrs));
                i = self.links[i as usize].next;
            }
            v
        };
        TableSnapshot {
            queues: [Phase::HalfOpen, Phase::Open, Phase::Closing].map(queue),
            now: self.now,
            gap_until: self.gap_until,
            stats: self.stats,
            last_ack: queue(Phase::LastAck),
        }
    }

    pub fn restore(cfg: TableConfig, local: Arc<LocalNets>, snap: TableSnapshot) -> Self {
        let mut t = FlowTable::new(cfg, local);
        t.now = snap.now;
        t.gap_until = snap.gap_until;
        t.stats = snap.stats;
        let [half_open, open, closing] = snap.queues;
        for (phase, q) in PHASES
            .into_iter()
            .zip([half_open, open, closing, snap.last_ack])
        {
            for mut state in q {
                // A queue only ever holds flows of its own phase.
                state.phase = phase;
                let idx = t.slots.len() as u32;
                t.index.insert(state.key.hash64(), idx);
                let key = t.addrs.store(&state.key);
                t.slots.push(state.flow(key));
                t.links.push(Link {
                    prev: NIL,
                    next: NIL,
                });
                t.push_tail(phase, idx);
                t.len += 1;
            }
        }
        t
    }

    /// The one entry point: apply an event, append any finished records to `out`.
    // Inlined so that a batch's packet loop calls `packet` directly.
    #[inline]
    pub fn handle(&mut self, ev: Event<'_>, out: &mut Vec<FlowRecord>) {
        match ev {
            Event::Packet(p) => self.packet(p, out),
            Event::Tick(now) => self.tick(now, out),
            Event::Finish(reason) => self.finish(reason, out),
            Event::Gap { start, end } => self.gap(start, end),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// New timeouts, bound and local networks, keeping every flow (SIGHUP).
    /// A smaller bound takes effect through eviction on the next new flow.
    pub fn reconfigure(&mut self, cfg: TableConfig, local: Arc<LocalNets>) {
        self.cfg = cfg;
        self.local = local;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts loading what a packet with this hash will touch. The shard calls
    /// it a few packets ahead; it changes nothing.
    #[inline]
    pub fn prefetch(&self, hash: u64, deep: bool) {
        if deep {
            if let Some(slot) = self.index.first_guess(hash) {
                self.prefetch_slot(slot);
            }
        } else {
            self.index.prefetch(hash);
        }
    }

    /// Starts loading a flow's slot (both of its lines); NIL or a slot out
    /// of range is ignored.
    #[inline]
    fn prefetch_slot(&self, idx: u32) {
        if let Some(f) = self.slots.get(idx as usize) {
            let p = (f as *const Flow).cast::<u8>();
            super::index::prefetch(p);
            super::index::prefetch(p.wrapping_add(size_of::<Flow>() - 1));
        }
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    #[inline]
    fn packet(&mut self, p: &Packet, out: &mut Vec<FlowRecord>) {
        // A ping to the host's own address: request and reply have the same
        // key in the same order, so the order cannot tell them apart; the
        // ICMP type does (the reply travels responder to initiator). Tested
        // ICMP first: for every other packet this is one compare.
        if p.icmp.is_some_and(|(ty, _)| is_echo_reply(p.key.proto, ty))
            && p.from_src
            && p.key.src == p.key.dst
            && p.key.src_port == p.key.dst_port
        {
            return self.own_ping_reply(p, out);
        }
        self.keyed(p, out);
    }

    #[cold]
    #[inline(never)]
    fn own_ping_reply(&mut self, p: &Packet, out: &mut Vec<FlowRecord>) {
        let reply = Packet {
            from_src: false,
            ..*p
        };
        self.keyed(&reply, out);
    }

    /// A packet whose `from_src` says which way it travelled.
    #[inline(always)]
    fn keyed(&mut self, p: &Packet, out: &mut Vec<FlowRecord>) {
        self.now = self.now.max(p.ts_ns);
        self.stats.packets += 1;
        self.stats.bytes += u64::from(p.ip_bytes);
        let (slots, addrs) = (&self.slots, &self.addrs);
        let probe = Probe::new(&p.key);
        let found = self.index.find(p.hash, |i| {
            addrs.matches(&slots[i as usize].stored_key(), &probe, &p.key)
        });
        if let Some(idx) = found {
            let f = &self.slots[idx as usize];
            let phase = due_phase(f);
            let expired = p.ts_ns >= f.last_seen.saturating_add(self.timeout(phase));
            let closed = matches!(f.phase, Phase::Closing | Phase::LastAck);
            // A fresh SYN on a finished connection is port reuse: a new flow.
            let reused = closed && p.key.proto == TCP && syn_only(p.tcp_flags);
            // A slow answer to a SYN still in the table joins it (within
            // what an open flow would wait): whether it does must not depend
            // on the pace of the handshake.
            let late_answer = f.phase == Phase::HalfOpen
                && p.tcp_flags & (SYN | ACK | RST) == SYN | ACK
                && p.from_src != f.init_is_src
                && p.ts_ns < f.last_seen.saturating_add(self.timeout(Phase::Open));
            if (!expired || late_answer) && !reused {
                self.account(idx, p, true, out);
                return;
            }
            if expired
                && phase != Phase::Closing
                && p.ts_ns < f.last_seen.saturating_add(self.normal_timeout(phase))
            {
                self.stats.emergency_expired += 1;
            }
            let reason = if closed { f.close } else { EndReason::Idle };
            self.end(idx, reason, out);
        }
        self.create(p, out);
    }

    #[inline(never)]
    fn create(&mut self, p: &Packet, out: &mut Vec<FlowRecord>) {
        if self.len >= self.cfg.max_flows.max(1) {
            self.evict_lru(out);
        }
        let sender_initiates = if p.key.proto == TCP {
            p.tcp_flags & (SYN | ACK) != SYN | ACK
        } else {
            !p.icmp.is_some_and(|(ty, _)| is_echo_reply(p.key.proto, ty))
        };
        let init_is_src = sender_initiates == p.from_src;
        let (ik, rk) = if init_is_src {
            ((p.key.src, p.key.src_port), (p.key.dst, p.key.dst_port))
        } else {
            ((p.key.dst, p.key.dst_port), (p.key.src, p.key.src_port))
        };
        let v = p.key.ip_version;
        let id = flow_id(
            p.key.vlan,
            p.key.proto,
            super::to_ip(&ik.0, v),
            ik.1,
            super::to_ip(&rk.0, v),
            rk.1,
            p.ts_ns,
        );
        let phase = if p.key.proto == TCP && syn_only(p.tcp_flags) {
            Phase::HalfOpen
        } else {
            Phase::Open
        };
        let key = self.addrs.store(&p.key);
        let flow = Flow {
            last_seen: p.ts_ns,
            queued_at: p.ts_ns,
            flow_id: id,
            seg: Segment::default(),
            addrs: key.addrs,
            meta: key.meta,
            segment: 0,
            flags: [0; 2],
            // A flow that begins with a handshake cannot have begun in the
            // gap; any other flow soon after it might have.
            gap: p.ts_ns < self.gap_until && phase != Phase::HalfOpen,
            key_kind: key.kind,
            phase,
            init_is_src,
            fin: [false; 2],
            close: EndReason::Fin,
            icmp: p.icmp,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = flow;
                i
            }
            None => {
                self.slots.push(flow);
                self.links.push(Link {
                    prev: NIL,
                    next: NIL,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(p.hash, idx);
        self.push_tail(phase, idx);
        self.len += 1;
        self.stats.flows += 1;
        self.stats.peak_flows = self.stats.peak_flows.max(self.len as u64);
        self.account(idx, p, false, out);
    }

    /// Adds a packet to a flow: active-timeout split, counters, TCP state, LRU position.
    #[inline(always)]
    fn account(&mut self, idx: u32, p: &Packet, existing: bool, out: &mut Vec<FlowRecord>) {
        let active = self.cfg.active_ns;
        let f = &mut self.slots[idx as usize];
        if existing && p.ts_ns >= f.seg.first_ns.saturating_add(active) {
            let key = self.addrs.key(&f.stored_key());
            let rec = record(f, &key, &self.local, EndReason::Active, false);
            out.push(rec);
            self.stats.records += 1;
            f.next_segment();
        }
        let side = usize::from(!p.from_src);
        let s = &mut f.seg;
        if s.packets == [0, 0] {
            s.first_ns = p.ts_ns;
            s.last_ns = p.ts_ns;
        } else {
            s.first_ns = s.first_ns.min(p.ts_ns);
            s.last_ns = s.last_ns.max(p.ts_ns);
        }
        s.packets[side] = s.packets[side].saturating_add(1);
        s.bytes[side] += u64::from(p.ip_bytes);
        f.flags[side] |= p.tcp_flags;
        f.last_seen = f.last_seen.max(p.ts_ns);

        let old = f.phase;
        if p.key.proto == TCP {
            let from_initiator = p.from_src == f.init_is_src;
            if f.phase == Phase::HalfOpen && !(from_initiator && syn_only(p.tcp_flags)) {
                f.phase = Phase::Open;
            }
            let (fin, rst) = (p.tcp_flags & FIN != 0, p.tcp_flags & RST != 0);
            match f.phase {
                Phase::HalfOpen | Phase::Open => {
                    if rst {
                        f.phase = Phase::Closing;
                        f.close = EndReason::Rst;
                    } else if fin && f.fin[1 - side] {
                        // The second FIN: left unmarked until it is ACKed.
                        f.phase = Phase::Closing;
                        f.close = EndReason::Fin;
                    } else if fin {
                        f.fin[side] = true;
                    }
                }
                Phase::Closing | Phase::LastAck => {
                    // The ACK of the second FIN comes from the side that sent
                    // the first; an RST ends the wait as well. The linger
                    // counts from here.
                    if awaits_ack(f) && (rst || (f.fin[side] && p.tcp_flags & ACK != 0)) {
                        f.fin = [true; 2];
                        f.phase = Phase::Closing;
                    }
                }
            }
        }
        let new = f.phase;
        if new != old {
            f.queued_at = f.last_seen;
            self.unlink(old, idx);
            self.push_tail(new, idx);
        }
    }

    #[inline(never)]
    fn gap(&mut self, start: u64, end: u64) {
        let timeouts = PHASES.map(|phase| self.timeout(phase));
        for phase in PHASES {
            let mut i = self.lists[phase as usize].head;
            while i != NIL {
                let f = &mut self.slots[i as usize];
                let timeout = timeouts[due_phase(f) as usize];
                // Still open at `start`: it may have had packets in the gap.
                if f.last_seen.saturating_add(timeout) > start {
                    f.gap = true;
                }
                i = self.links[i as usize].next;
            }
        }
        self.gap_until = self.gap_until.max(end.saturating_add(self.cfg.idle_ns));
    }

    #[inline(never)]
    fn tick(&mut self, now: u64, out: &mut Vec<FlowRecord>) {
        self.now = self.now.max(now);
        // Closing before last-ACK: a flow moved on is judged in the same tick.
        for phase in PHASES {
            loop {
                let head = self.lists[phase as usize].head;
                if head == NIL {
                    break;
                }
                // The next head's slot is a cache miss of its own; started
                // now, it loads while this head is judged and ended.
                self.prefetch_slot(self.links[head as usize].next);
                let timeout = self.timeout(phase);
                let f = &self.slots[head as usize];
                if f.queued_at.saturating_add(timeout) > self.now {
                    break;
                }
                if f.last_seen.saturating_add(timeout) > self.now {
                    self.requeue(phase, head);
                    continue;
                }
                if phase == Phase::Closing && awaits_ack(f) {
                    // Queued by `last_seen` like a requeued flow; the queue
                    // stays ordered to within one tick.
                    self.unlink(phase, head);
                    let f = &mut self.slots[head as usize];
                    f.phase = Phase::LastAck;
                    f.queued_at = f.last_seen;
                    self.push_tail(Phase::LastAck, head);
                    continue;
                }
                let reason = match phase {
                    Phase::Closing | Phase::LastAck => f.close,
                    Phase::HalfOpen | Phase::Open => EndReason::Idle,
                };
                if phase != Phase::Closing
                    && f.last_seen.saturating_add(self.normal_timeout(phase)) > self.now
                {
                    self.stats.emergency_expired += 1;
                }
                self.end(head, reason, out);
            }
        }
    }

    /// Second chance: a head touched since it was queued goes to the tail.
    fn requeue(&mut self, phase: Phase, idx: u32) {
        let f = &mut self.slots[idx as usize];
        f.queued_at = f.last_seen;
        self.unlink(phase, idx);
        self.push_tail(phase, idx);
    }

    /// The queue's head once touched heads have been requeued: the flow with
    /// the oldest `last_seen` in that queue.
    fn oldest(&mut self, phase: Phase) -> u32 {
        loop {
            let head = self.lists[phase as usize].head;
            if head == NIL {
                return NIL;
            }
            let f = &self.slots[head as usize];
            if f.last_seen == f.queued_at {
                return head;
            }
            self.requeue(phase, head);
        }
    }

    /// Ends every open flow. The table then gives its storage back: the end
    /// of a run is when the most records exist at once, and the slab of a
    /// finished table holds nothing (it still takes flows afterwards).
    #[inline(never)]
    fn finish(&mut self, reason: EndReason, out: &mut Vec<FlowRecord>) {
        out.reserve_exact(self.len);
        for phase in PHASES {
            while self.lists[phase as usize].head != NIL {
                let head = self.lists[phase as usize].head;
                self.prefetch_slot(self.links[head as usize].next);
                let r = match phase {
                    Phase::Closing | Phase::LastAck => self.slots[head as usize].close,
                    Phase::HalfOpen | Phase::Open => reason,
                };
                self.end(head, r, out);
            }
        }
        self.index = Index::new();
        self.slots = Vec::new();
        self.addrs = Addrs::default();
        self.links = Vec::new();
        self.free = Vec::new();
    }

    /// Slab and link capacity (tests: a finished table holds none).
    #[cfg(test)]
    pub(super) fn storage(&self) -> (usize, usize) {
        (self.slots.capacity(), self.links.capacity())
    }

    fn evict_lru(&mut self, out: &mut Vec<FlowRecord>) {
        let heads = PHASES.map(|phase| self.oldest(phase));
        let victim = heads
            .into_iter()
            .filter(|&h| h != NIL)
            .min_by_key(|&h| self.slots[h as usize].last_seen);
        if let Some(idx) = victim {
            self.stats.evicted += 1;
            self.end(idx, EndReason::Evicted, out);
        }
    }

    fn end(&mut self, idx: u32, reason: EndReason, out: &mut Vec<FlowRecord>) {
        let f = &self.slots[idx as usize];
        let stored = f.stored_key();
        let key = self.addrs.key(&stored);
        out.push(record(f, &key, &self.local, reason, true));
        self.stats.records += 1;
        let (hash, phase) = (key.hash64(), f.phase);
        self.addrs.release(&stored);
        self.index.remove(hash, idx);
        self.unlink(phase, idx);
        self.free.push(idx);
        self.len -= 1;
    }

    fn emergency(&self) -> bool {
        self.len >= self.cfg.emergency_at
    }

    fn normal_timeout(&self, phase: Phase) -> u64 {
        match phase {
            Phase::HalfOpen => self.cfg.half_open_ns,
            Phase::Open => self.cfg.idle_ns,
            Phase::Closing => self.cfg.tcp_linger_ns,
            Phase::LastAck => self.cfg.last_ack_ns.max(self.cfg.tcp_linger_ns),
        }
    }

    fn timeout(&self, phase: Phase) -> u64 {
        let t = self.normal_timeout(phase);
        match phase {
            Phase::Closing => t,
            _ if !self.emergency() => t,
            Phase::LastAck => t
                .min(self.cfg.emergency_idle_ns)
                .max(self.cfg.tcp_linger_ns),
            Phase::HalfOpen | Phase::Open => t.min(self.cfg.emergency_idle_ns),
        }
    }

    fn unlink(&mut self, phase: Phase, idx: u32) {
        let Link { prev, next } = self.links[idx as usize];
        if prev == NIL {
            self.lists[phase as usize].head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[phase as usize].tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.links[idx as usize] = Link {
            prev: NIL,
            next: NIL,
        };
    }

    fn push_tail(&mut self, phase: Phase, idx: u32) {
        let list = &mut self.lists[phase as usize];
        let tail = list.tail;
        list.tail = idx;
        if tail == NIL {
            list.head = idx;
        } else {
            self.links[tail as usize].next = idx;
        }
        self.links[idx as usize] = Link {
            prev: tail,
            next: NIL,
        };
    }
}

/// Most flows a table reserves room for up front (6 MiB of address space).
const RESERVE_MAX: usize = 1 << 16;

/// Whether tables reserve their slab up front. Not on Windows: there the
/// heap gives a block this large its own virtual allocation, committed
/// whole (Raymond Chen, "There's also a large object heap for unmanaged
/// code"), so 16 tables' reservations would be ~104 MB of commit charge
/// from the start, counted against the page file whether touched or not.
/// Its heap also returns such a block to the system when it is freed, so
/// growing by doubling leaves no copies resident there.
const RESERVE_UP_FRONT: bool = cfg!(not(windows));

/// Empty slab and links with room for the table's bound (up to
/// [`RESERVE_MAX`]) reserved but not touched: they then never move while
/// they fill. Grown by doubling, the slab was copied into a new block at
/// each growth, and the allocator kept the freed smaller blocks resident for
/// reuse: ~7 MB of a 130 MB peak on a 590 k-flow file (BENCHMARKS.md).
/// Untouched pages cost no memory; where the system refuses the reservation
/// (strict overcommit), or does not reserve without committing
/// ([`RESERVE_UP_FRONT`]), the vectors grow on demand.
fn reserved(max_flows: usize, up_front: bool) -> (Vec<Flow>, Vec<Link>) {
    let (mut slots, mut links) = (Vec::new(), Vec::new());
    if up_front {
        let n = max_flows.clamp(1, RESERVE_MAX);
        // Refused: the vector grows on demand instead.
        let _ = slots.try_reserve_exact(n);
        let _ = links.try_reserve_exact(n);
    }
    (slots, links)
}

/// A flow closed by FIN both ways whose second FIN is not yet ACKed.
fn awaits_ack(f: &Flow) -> bool {
    matches!(f.phase, Phase::Closing | Phase::LastAck)
        && f.close == EndReason::Fin
        && f.fin[0] != f.fin[1]
}

/// The phase whose timeout a flow is judged by: a closing flow still waiting
/// for its last ACK waits as long as one in the last-ACK queue.
fn due_phase(f: &Flow) -> Phase {
    if f.phase == Phase::Closing && awaits_ack(f) {
        Phase::LastAck
    } else {
        f.phase
    }
}

fn syn_only(flags: u8) -> bool {
    flags & (SYN | ACK | RST) == SYN
}

/// The record of `f`'s current segment; `k` is its key, given whole.
fn record(
    f: &Flow,
    k: &FlowKey,
    local: &LocalNets,
    reason: EndReason,
    is_final: bool,
) -> FlowRecord {
    let (i, r) = if f.init_is_src { (0, 1) } else { (1, 0) };
    let (src, src_port, dst, dst_port) = if f.init_is_src {
        (k.src_ip(), k.src_port, k.dst_ip(), k.dst_port)
    } else {
        (k.dst_ip(), k.dst_port, k.src_ip(), k.src_port)
    };
    let s = &f.seg;
    FlowRecord {
        flow_id: f.flow_id,
        segment: f.segment,
        is_final,
        ip_version: k.ip_version,
        proto: k.proto,
        vlan: k.vlan,
        src_addr: src,
        src_port,
        dst_addr: dst,
        dst_port,
        direction: Direction::from_locality(local.contains(src), local.contains(dst)),
        first_ns: s.first_ns,
        last_ns: s.last_ns,
        fwd_packets: u64::from(s.packets[i]),
        fwd_bytes: s.bytes[i],
        rev_packets: u64::from(s.packets[r]),
        rev_bytes: s.bytes[r],
        fwd_tcp_flags: f.flags[i],
        rev_tcp_flags: f.flags[r],
        icmp_type: f.icmp.map(|x| x.0),
        icmp_code: f.icmp.map(|x| x.1),
        end_reason: reason,
        gap: f.gap,
        rule: None,
        decision: None,
        remote: None,
    }
}

#[cfg(test)]
mod layout {
    use super::*;

    #[test]
    fn a_flow_takes_96_bytes() {
        assert_eq!(size_of::<Flow>(), 96);
    }

    /// A checkpoint written before the last-ACK queue existed (three queues)
    /// restores, and the table goes on as the one that wrote it.
    #[test]
    fn checkpoints_without_the_last_ack_queue_restore() {
        #[derive(Serialize)]
        struct OldSnapshot {
            queues: [Vec<FlowState>; 3],
            now: u64,
            gap_until: u64,
            stats: TableStats,
        }
        let cfg = TableConfig::default();
        let local = Arc::new(LocalNets::default());
        let pkt = |ts: u64, port: u16, from_src: bool, flags: u8| {
            let key = FlowKey {
                src_port: port,
                dst_port: 443,
                proto: TCP,
                ip_version: 4,
                ..FlowKey::default()
            };
            Packet {
                ts_ns: ts,
                key,
                hash: key.hash64(),
                from_src,
                ip_bytes: 40,
                tcp_flags: flags,
                icmp: None,
            }
        };
        // One flow in each old queue: half-open, open, closing (FIN both
        // ways and the last ACK, as an older agent had it).
        let first = [
            pkt(1, 1, true, SYN),
            pkt(2, 2, true, ACK),
            pkt(3, 3, true, FIN | ACK),
            pkt(4, 3, false, FIN | ACK),
            pkt(5, 3, true, ACK),
        ];
        let then = [pkt(6, 2, false, ACK), pkt(7, 1, false, SYN | ACK)];
        let mut t = FlowTable::new(cfg.clone(), local.clone());
        let mut out = Vec::new();
        for p in &first {
            t.handle(Event::Packet(p), &mut out);
        }
        let snap = t.snapshot();
        assert!(snap.last_ack.is_empty());
        let old = OldSnapshot {
            queues: snap.queues.clone(),
            now: snap.now,
            gap_until: snap.gap_until,
            stats: snap.stats,
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let back: TableSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        let mut r = FlowTable::restore(cfg, local, back);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for p in &then {
            t.handle(Event::Packet(p), &mut a);
            r.handle(Event::Packet(p), &mut b);
        }
        t.handle(Event::Finish(EndReason::EndOfInput), &mut a);
        r.handle(Event::Finish(EndReason::EndOfInput), &mut b);
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
    }
}
