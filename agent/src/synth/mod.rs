//! Synthetic captures with exact ground truth.
//!
//! The generator knows every flow it writes, so it computes the expected
//! records itself, per flow, from a deliberately simple model of the record
//! contract (segments split at the active timeout, end reasons from how the
//! flow ended and from the capture's last timestamp). That model shares no
//! code with the flow table, which makes it a real check of it.

#[cfg(test)]
mod decode_agreement;
mod writer;

pub use crate::rng::Rng;
pub use writer::PcapWriter;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::net::IpAddr;

use vmflow_proto::{flow_id, Direction, EndReason, FlowRecord};

use crate::config::Config;
use crate::decode::linktype;
use crate::flow::to_ip;
use crate::net::LocalNets;

#[derive(Clone, Debug)]
pub struct SynthParams {
    pub packets: u64,
    pub concurrent: usize,
    pub snaplen: u32,
    pub seed: u64,
    pub lengths: FlowLengths,
}

impl SynthParams {
    /// `packets` packets with `concurrent` flows open at once, header-only
    /// (128 bytes a packet), seed 1, long flows; the methods change one.
    pub fn new(packets: u64, concurrent: usize) -> Self {
        SynthParams {
            packets,
            concurrent,
            snaplen: 128,
            seed: 1,
            lengths: FlowLengths::Long,
        }
    }

    pub fn seed(self, seed: u64) -> Self {
        SynthParams { seed, ..self }
    }

    pub fn snaplen(self, snaplen: u32) -> Self {
        SynthParams { snaplen, ..self }
    }

    pub fn lengths(self, lengths: FlowLengths) -> Self {
        SynthParams { lengths, ..self }
    }
}

/// How many packets the synthetic flows have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowLengths {
    /// Heavy-tailed (Pareto): ~17 packets a flow on average, most packets
    /// in a few long flows, as on a busy server.
    Long,
    /// ~7 packets a flow (short requests, lookups, scans): many flows and
    /// records for the packets, the shape where the cost per record shows.
    Short,
}

pub struct SynthOutput {
    pub packets: u64,
    pub flows: u64,
    /// Expected records (empty unless asked for), sorted by flow id and segment.
    pub truth: Vec<FlowRecord>,
}

/// Start of synthetic time: 2025-10-09T08:53:20Z.
const BASE_NS: u64 = 1_760_000_000 * 1_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tcp,
    TcpRst,
    HalfOpen,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, Default)]
struct Seg {
    first: u64,
    last: u64,
    pkts: [u64; 2],
    bytes: [u64; 2],
    flags: [u8; 2],
}

struct Flow {
    kind: Kind,
    v6: bool,
    tags: [Option<(u16, u16)>; 2],
    client: [u8; 16],
    server: [u8; 16],
    cport: u16,
    sport: u16,
    n: u32,
    i: u32,
    gap_mean_ns: f64,
    ip_id: u16,
    // Ground truth.
    id: u64,
    segment: u32,
    seg: Seg,
    last_ts: u64,
}

struct Gen<'a> {
    rng: Rng,
    lengths: FlowLengths,
    cfg: &'a Config,
    local: LocalNets,
    active_ns: u64,
    max_gap_ns: u64,
    next_index: u64,
    truth: Option<Vec<FlowRecord>>,
    /// Finished flows whose last record waits for the capture's end time
    /// (idle or end of input), with the timeout that applies to them.
    pending: Vec<(FlowRecord, u64, u64)>,
}

/// Writes a synthetic capture (libpcap, Ethernet) to `out`.
pub fn generate<W: Write>(
    p: &SynthParams,
    cfg: &Config,
    out: W,
    want_truth: bool,
) -> io::Result<SynthOutput> {
    let t = cfg.table();
    let local = cfg
        .local_nets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    // Gaps inside a flow stay well below every timeout that would split it,
    // so each synthetic flow is exactly one flow to the engine.
    let max_gap_ns = (t.idle_ns.min(t.half_open_ns).min(t.tcp_linger_ns) as f64 * 0.45) as u64;
    let mut g = Gen {
        rng: Rng::new(p.seed),
        lengths: p.lengths,
        cfg,
        local,
        active_ns: t.active_ns,
        max_gap_ns: max_gap_ns.max(1_000),
        next_index: 0,
        truth: want_truth.then(Vec::new),
        pending: Vec::new(),
    };
    let mut w = PcapWriter::new(
        io::BufWriter::with_capacity(1 << 20, out),
        p.snaplen.max(64),
        linktype::ETHERNET,
    )?;
    let mut flows: Vec<Option<Flow>> = Vec::with_capacity(p.concurrent.max(1));
    let mut heap = BinaryHeap::new();
    let mut assigned = 0u64;
    for slot in 0..p.concurrent.max(1) {
        if assigned >= p.packets {
            break;
        }
        let start = BASE_NS + g.rng.below(1_000_000) * 1_000;
        let f = g.new_flow(p.packets - assigned);
        assigned += u64::from(f.n);
        flows.push(Some(f));
        heap.push(Reverse((start, slot as u32)));
    }
    let mut frame = vec![0u8; p.snaplen.max(64) as usize + 128];
    let mut written = 0u64;
    let mut nflows = flows.len() as u64;
    let mut end_ts = 0u64;
    while let Some(Reverse((ts, slot))) = heap.pop() {
        let Some(f) = flows[slot as usize].as_mut() else {
            continue;
        };
        let (orig, incl) = g.packet(f, ts, &mut frame);
        w.write(ts, orig, &frame[..incl])?;
        written += 1;
        end_ts = end_ts.max(ts);
        if f.i < f.n {
            let gap = g.gap(f.gap_mean_ns);
            heap.push(Reverse((ts + gap, slot)));
            continue;
        }
        let done = flows[slot as usize].take();
        if let Some(done) = done {
            g.finish_flow(done);
        }
        if assigned < p.packets {
            let f = g.new_flow(p.packets - assigned);
            assigned += u64::from(f.n);
            nflows += 1;
            flows[slot as usize] = Some(f);
            let gap = g.gap(1_000_000.0);
            heap.push(Reverse((ts + gap, slot)));
        }
    }
    w.into_inner().flush()?;
    let mut truth = g.truth.take().unwrap_or_default();
    for (mut r, last, timeout) in g.pending.drain(..) {
        r.end_reason = if last.saturating_add(timeout) <= end_ts {
            EndReason::Idle
        } else {
            EndReason::EndOfInput
        };
        truth.push(r);
    }
    truth.sort_by_key(|r| (r.flow_id, r.segment));
    Ok(SynthOutput {
        packets: written,
        flows: nflows,
        truth,
    })
}

impl Gen<'_> {
    fn gap(&mut self, mean_ns: f64) -> u64 {
        let g = self.rng.exp(mean_ns) as u64;
        (g.clamp(1_000, self.max_gap_ns) / 1_000) * 1_000
    }

    fn new_flow(&mut self, budget: u64) -> Flow {
        let idx = self.next_index;
        self.next_index += 1;
        let r = &mut self.rng;
        let roll = r.unit();
        let mut kind = match roll {
            x if x < 0.55 => Kind::Tcp,
            x if x < 0.60 => Kind::TcpRst,
            x if x < 0.63 => Kind::HalfOpen,
            x if x < 0.90 => Kind::Udp,
            _ => Kind::Icmp,
        };
        let cap = 20_000.0;
        // (scale, shape) of the Pareto tail over TCP's minimum and of UDP.
        let [tcp, rst, udp] = match self.lengths {
            FlowLengths::Long => [(4.0, 1.2), (2.0, 1.2), (1.5, 1.3)],
            FlowLengths::Short => [(2.0, 2.5), (2.0, 2.5), (2.0, 2.5)],
        };
        let mut n = match kind {
            Kind::Tcp => 6 + r.pareto(tcp.0, tcp.1).min(cap) as u64,
            Kind::TcpRst => 4 + r.pareto(rst.0, rst.1).min(cap) as u64,
            Kind::HalfOpen => 1 + r.below(3),
            Kind::Udp => r.pareto(udp.0, udp.1).min(cap) as u64,
            Kind::Icmp => 2 * (1 + r.below(5)),
        };
        if n > budget {
            let min = match kind {
                Kind::Tcp => 6,
                Kind::TcpRst => 4,
                _ => 1,
            };
            n = budget;
            if budget < min {
                kind = Kind::Udp;
            }
        }
        let v6 = r.chance(0.2);
        let tags = match r.below(50) {
            0 => [Some((0x88a8, 100 + r.below(4) as u16)), Some((0x8100, 10))],
            1..=5 => [Some((0x8100, [10, 20, 30][r.below(3) as usize])), None],
            _ => [None, None],
        };
        // Where the ends sit: outbound, inbound or internal.
        let placement = r.below(100);
        let (client_local, server_local) = match placement {
            0..=59 => (true, false),
            60..=84 => (false, true),
            _ => (true, true),
        };
        // (client address, client port) is unique per flow index, so no two
        // synthetic flows ever share a key.
        let hi = (idx / 32_768) as u32 + 1;
        let cport = 32_768 + (idx % 32_768) as u16;
        let client = endpoint(v6, client_local, true, hi);
        let k = r.below(250) as u32 + 1;
        let server = endpoint(v6, server_local, false, k);
        let sport = match kind {
            Kind::Tcp | Kind::TcpRst | Kind::HalfOpen => [443, 80, 22, 8080][r.below(4) as usize],
            Kind::Udp => [53, 123, 443, 5353][r.below(4) as usize],
            Kind::Icmp => cport,
        };
        let gap_mean_ns =
            [200_000.0, 2_000_000.0, 20_000_000.0, 100_000_000.0][r.below(4) as usize];
        Flow {
            kind,
            v6,
            tags,
            client,
            server,
            cport,
            sport,
            n: n as u32,
            i: 0,
            gap_mean_ns,
            ip_id: r.below(65_536) as u16,
            id: 0,
            segment: 0,
            seg: Seg::default(),
            last_ts: 0,
        }
    }

    /// Builds packet `f.i` of the flow into `frame`; returns (wire length, bytes written).
    fn packet(&mut self, f: &mut Flow, ts: u64, frame: &mut [u8]) -> (u32, usize) {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const PSH: u8 = 0x08;
        const ACK: u8 = 0x10;
        let (i, n) = (f.i, f.n);
        let r = &mut self.rng;
        let (from_client, flags, payload): (bool, u8, u32) = match f.kind {
            Kind::Tcp | Kind::TcpRst => match i {
                0 => (true, SYN, 0),
                1 => (false, SYN | ACK, 0),
                2 => (true, ACK, 0),
                _ if f.kind == Kind::TcpRst && i == n - 1 => (r.chance(0.5), RST | ACK, 0),
                _ if f.kind == Kind::Tcp && i == n - 3 => (true, FIN | ACK, 0),
                _ if f.kind == Kind::Tcp && i == n - 2 => (false, FIN | ACK, 0),
                _ if f.kind == Kind::Tcp && i == n - 1 => (true, ACK, 0),
                3 => (true, PSH | ACK, 100 + r.below(500) as u32),
                j if j % 4 == 2 => (true, ACK, 0),
                _ => (
                    false,
                    ACK,
                    if r.chance(0.8) {
                        1448
                    } else {
                        1 + r.below(1448) as u32
                    },
                ),
            },
            Kind::HalfOpen => (true, SYN, 0),
            Kind::Udp => (i % 2 == 0, 0, 20 + r.below(1200) as u32),
            Kind::Icmp => (i % 2 == 0, 0, 56),
        };
        f.i += 1;
        let proto: u8 = match f.kind {
            Kind::Udp => 17,
            Kind::Icmp if f.v6 => 58,
            Kind::Icmp => 1,
            _ => 6,
        };
        let l4_len: u32 = match proto {
            6 => 20,
            _ => 8,
        };
        let ip_hdr: u32 = if f.v6 { 40 } else { 20 };
        let ip_total = ip_hdr + l4_len + payload;

        // Link layer.
        let mut at = 0usize;
        let (smac, dmac) = if from_client {
            (0x02u8, 0x04u8)
        } else {
            (0x04, 0x02)
        };
        frame[..12].copy_from_slice(&[0, 0, 0, 0, 0, dmac, 0, 0, 0, 0, 0, smac]);
        at += 12;
        for (tpid, vid) in f.tags.iter().flatten() {
            frame[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
            frame[at + 2..at + 4].copy_from_slice(&vid.to_be_bytes());
            at += 4;
        }
        let ethertype: u16 = if f.v6 { 0x86dd } else { 0x0800 };
        frame[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
        at += 2;
        let link_len = at as u32;

        let (src, dst, sp, dp) = if from_client {
            (f.client, f.server, f.cport, f.sport)
        } else {
            (f.server, f.client, f.sport, f.cport)
        };
        let ip = &mut frame[at..at + ip_hdr as usize];
        if f.v6 {
            ip.fill(0);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((ip_total - 40) as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&src);
            ip[24..40].copy_from_slice(&dst);
        } else {
            f.ip_id = f.ip_id.wrapping_add(1);
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(ip_total as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&f.ip_id.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = proto;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&src[..4]);
            ip[16..20].copy_from_slice(&dst[..4]);
            let sum = ipv4_checksum(ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        at += ip_hdr as usize;
        let l4 = &mut frame[at..at + l4_len as usize];
        l4.fill(0);
        match proto {
            6 => {
                l4[0..2].copy_from_slice(&sp.to_be_bytes());
                l4[2..4].copy_from_slice(&dp.to_be_bytes());
                l4[4..8].copy_from_slice(&(i * 1000).to_be_bytes());
                l4[12] = 0x50;
                l4[13] = flags;
                l4[14..16].copy_from_slice(&64_240u16.to_be_bytes());
            }
            17 => {
                l4[0..2].copy_from_slice(&sp.to_be_bytes());
                l4[2..4].copy_from_slice(&dp.to_be_bytes());
                l4[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
            }
            _ => {
                let ty = match (f.v6, from_client) {
                    (false, true) => 8,
                    (false, false) => 0,
                    (true, true) => 128,
                    (true, false) => 129,
                };
                l4[0] = ty;
                l4[4..6].copy_from_slice(&f.cport.to_be_bytes());
                l4[6..8].copy_from_slice(&((i / 2) as u16).to_be_bytes());
            }
        }
        at += l4_len as usize;
        let orig = link_len + ip_total;
        let incl = (orig as usize).min(frame.len());
        frame[at..incl].fill(0);

        self.account(f, ts, from_client, ip_total, flags, proto);
        (orig, incl)
    }

    /// The reference model: per-flow counters, split at the active timeout.
    fn account(
        &mut self,
        f: &mut Flow,
        ts: u64,
        from_client: bool,
        bytes: u32,
        flags: u8,
        proto: u8,
    ) {
        if self.truth.is_none() {
            return;
        }
        let ip = |a: &[u8; 16]| to_ip(a, if f.v6 { 6 } else { 4 });
        if f.i == 1 {
            let vlan = f.tags[0].map(|t| t.1);
            f.id = flow_id(
                vlan,
                proto,
                ip(&f.client),
                f.cport,
                ip(&f.server),
                f.sport,
                ts,
            );
        } else if ts >= f.seg.first + self.active_ns {
            let rec = self.record(f, EndReason::Active, false);
            self.truth.get_or_insert_with(Vec::new).push(rec);
            f.segment += 1;
            f.seg = Seg::default();
        }
        let s = &mut f.seg;
        if s.pkts == [0, 0] {
            s.first = ts;
        }
        s.last = ts;
        let side = usize::from(!from_client);
        s.pkts[side] += 1;
        s.bytes[side] += u64::from(bytes);
        s.flags[side] |= flags;
        f.last_ts = ts;
    }

    fn finish_flow(&mut self, f: Flow) {
        if self.truth.is_none() {
            return;
        }
        let t = self.cfg.table();
        match f.kind {
            Kind::Tcp => {
                let r = self.record(&f, EndReason::Fin, true);
                self.truth.get_or_insert_with(Vec::new).push(r);
            }
            Kind::TcpRst => {
                let r = self.record(&f, EndReason::Rst, true);
                self.truth.get_or_insert_with(Vec::new).push(r);
            }
            Kind::HalfOpen => {
                let r = self.record(&f, EndReason::Idle, true);
                self.pending.push((r, f.last_ts, t.half_open_ns));
            }
            Kind::Udp | Kind::Icmp => {
                let r = self.record(&f, EndReason::Idle, true);
                self.pending.push((r, f.last_ts, t.idle_ns));
            }
        }
    }

    fn record(&self, f: &Flow, end_reason: EndReason, is_final: bool) -> FlowRecord {
        let v = if f.v6 { 6 } else { 4 };
        let (src, dst): (IpAddr, IpAddr) = (to_ip(&f.client, v), to_ip(&f.server, v));
        let icmp = (f.kind == Kind::Icmp).then_some(if f.v6 { 128u8 } else { 8 });
        FlowRecord {
            flow_id: f.id,
            segment: f.segment,
            is_final,
            ip_version: v,
            proto: match f.kind {
                Kind::Udp => 17,
                Kind::Icmp if f.v6 => 58,
                Kind::Icmp => 1,
                _ => 6,
            },
            vlan: f.tags[0].map(|t| t.1),
            src_addr: src,
            src_port: f.cport,
            dst_addr: dst,
            dst_port: f.sport,
            direction: Direction::from_locality(self.local.contains(src), self.local.contains(dst)),
            first_ns: f.seg.first,
            last_ns: f.seg.last,
            fwd_packets: f.seg.pkts[0],
            fwd_bytes: f.seg.bytes[0],
            rev_packets: f.seg.pkts[1],
            rev_bytes: f.seg.bytes[1],
            fwd_tcp_flags: f.seg.flags[0],
            rev_tcp_flags: f.seg.flags[1],
            icmp_type: icmp,
            icmp_code: icmp.map(|_| 0),
            end_reason,
            gap: false,
            rule: None,
            decision: None,
            remote: None,
        }
    }
}

/// Synthetic addresses. Local ones come from 10/8 and fd00::/8; remote ones
/// from 11/8 (clients) or the documentation ranges (servers), none of them in
/// the default local networks.
fn endpoint(v6: bool, local: bool, client: bool, n: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    let b = n.to_be_bytes();
    match (v6, local, client) {
        (false, true, true) => a[..4].copy_from_slice(&[10, b[1], b[2], b[3]]),
        (false, false, true) => a[..4].copy_from_slice(&[11, b[1], b[2], b[3]]),
        (false, true, false) => a[..4].copy_from_slice(&[10, 200, 0, b[3]]),
        (false, false, false) => {
            let net = if n.is_multiple_of(2) {
                [198, 51, 100]
            } else {
                [203, 0, 113]
            };
            a[..4].copy_from_slice(&[net[0], net[1], net[2], b[3]]);
        }
        (true, local, client) => {
            a[..2].copy_from_slice(if local { &[0xfd, 0x00] } else { &[0x20, 0x01] });
            if !local {
                a[2..4].copy_from_slice(&[0x0d, 0xb8]);
            }
            a[4..6].copy_from_slice(if client { &[0, 1] } else { &[0xff, 0xff] });
            a[12..16].copy_from_slice(&b);
        }
    }
    a
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
