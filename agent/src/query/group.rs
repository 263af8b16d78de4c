//! Totals per group: records, flows, packets and bytes of the matching
//! records, keyed by what `--group-by` names.
//!
//! A flow is one `flow_id` within one stream (`read::Input::stream`): its
//! active-timeout segments are several records but one flow. A record that
//! is its flow's only one (segment 0, final) counts a flow outright; the
//! ids of the others are kept in a set per group, so memory grows with
//! the long flows only.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::filter::proto_name;
use super::read::{Input, Inputs, Rec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// The initiator's address.
    Src,
    /// The responder's address.
    Dst,
    /// The end outside the local networks (inbound: src, outbound: dst).
    Remote,
    /// The end inside them (outbound and internal: src, inbound: dst).
    Local,
    /// Protocol and responder port (`tcp/443`; the protocol alone for
    /// ICMP and others without ports).
    Service,
    /// The responder's port.
    Port,
    Proto,
    Agent,
    /// Initiator and responder addresses.
    Pair,
    Direction,
}

impl GroupBy {
    /// Column names of the key.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            GroupBy::Src => &["src"],
            GroupBy::Dst => &["dst"],
            GroupBy::Remote => &["remote"],
            GroupBy::Local => &["local"],
            GroupBy::Service => &["service"],
            GroupBy::Port => &["port"],
            GroupBy::Proto => &["proto"],
            GroupBy::Agent => &["agent"],
            GroupBy::Pair => &["src", "dst"],
            GroupBy::Direction => &["direction"],
        }
    }
}

/// A group's key. `None` (no such end: the remote end of an internal
/// flow, an agent of a file outside a collector's directory) is a group
/// of its own, shown as `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    All,
    None,
    Addr(IpAddr),
    Pair(IpAddr, IpAddr),
    /// Protocol, and the port for protocols that have one.
    Service(u8, Option<u16>),
    Port(u16),
    Proto(u8),
    Agent(u32),
    Direction(u8),
}

/// A key's value in output: text, a number, or absent.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyValue {
    Text(String),
    Number(u64),
    Absent,
}

impl Key {
    /// One value per `GroupBy::columns` entry.
    pub fn values(&self, inputs: &Inputs) -> Vec<KeyValue> {
        use KeyValue::*;
        match self {
            Key::All => vec![],
            Key::None => vec![Absent],
            Key::Addr(a) => vec![Text(a.to_string())],
            Key::Pair(a, b) => vec![Text(a.to_string()), Text(b.to_string())],
            Key::Service(p, Some(port)) => vec![Text(format!("{}/{port}", proto_name(*p)))],
            Key::Service(p, None) => vec![Text(proto_name(*p))],
            Key::Port(p) => vec![Number(u64::from(*p))],
            Key::Proto(p) => vec![Number(u64::from(*p))],
            Key::Agent(i) => match inputs.agent_name(Some(*i)) {
                Some(n) => vec![Text(n.to_string())],
                None => vec![Absent],
            },
            Key::Direction(d) => vec![Text(super::filter::DIRECTIONS[*d as usize].to_string())],
        }
    }
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 33 | 136)
}

fn direction_index(d: &str) -> Option<u8> {
    super::filter::DIRECTIONS
        .iter()
        .position(|x| *x == d)
        .map(|i| i as u8)
}

/// The group a record belongs to; `None` for an address or direction that
/// does not read (the line is then not a record the query can use).
pub fn key(by: Option<GroupBy>, input: &Input, r: &Rec) -> Option<Key> {
    let addr = |s: &str| s.parse::<IpAddr>().ok();
    let dir = direction_index(r.direction)?;
    Some(match by {
        None => Key::All,
        Some(GroupBy::Src) => Key::Addr(addr(r.src_addr)?),
        Some(GroupBy::Dst) => Key::Addr(addr(r.dst_addr)?),
        Some(GroupBy::Remote) => match r.direction {
            "outbound" => Key::Addr(addr(r.dst_addr)?),
            "inbound" => Key::Addr(addr(r.src_addr)?),
            _ => Key::None,
        },
        Some(GroupBy::Local) => match r.direction {
            "outbound" | "internal" => Key::Addr(addr(r.src_addr)?),
            "inbound" => Key::Addr(addr(r.dst_addr)?),
            _ => Key::None,
        },
        Some(GroupBy::Service) => Key::Service(r.proto, has_ports(r.proto).then_some(r.dst_port)),
        Some(GroupBy::Port) => Key::Port(r.dst_port),
        Some(GroupBy::Proto) => Key::Proto(r.proto),
        Some(GroupBy::Agent) => input.agent.map_or(Key::None, Key::Agent),
        Some(GroupBy::Pair) => Key::Pair(addr(r.src_addr)?, addr(r.dst_addr)?),
        Some(GroupBy::Direction) => Key::Direction(dir),
    })
}

/// What a group adds up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub fwd_bytes: u64,
    pub rev_bytes: u64,
    /// Earliest `first_ns` and latest `last_ns` (0 when no record).
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Totals {
    fn add(&mut self, r: &Rec) {
        self.first_ns = if self.records == 0 {
            r.first_ns
        } else {
            self.first_ns.min(r.first_ns)
        };
        self.last_ns = self.last_ns.max(r.last_ns);
        self.records += 1;
        self.packets = self
            .packets
            .saturating_add(r.fwd_packets.saturating_add(r.rev_packets));
        self.fwd_bytes = self.fwd_bytes.saturating_add(r.fwd_bytes);
        self.rev_bytes = self.rev_bytes.saturating_add(r.rev_bytes);
        self.bytes = self.fwd_bytes.saturating_add(self.rev_bytes);
    }

    fn merge(&mut self, o: &Totals) {
        if o.records == 0 {
            return;
        }
        self.first_ns = if self.records == 0 {
            o.first_ns
        } else {
            self.first_ns.min(o.first_ns)
        };
        self.last_ns = self.last_ns.max(o.last_ns);
        self.records += o.records;
        self.packets = self.packets.saturating_add(o.packets);
        self.fwd_bytes = self.fwd_bytes.saturating_add(o.fwd_bytes);
        self.rev_bytes = self.rev_bytes.saturating_add(o.rev_bytes);
        self.bytes = self.fwd_bytes.saturating_add(self.rev_bytes);
    }
}

#[derive(Default)]
struct Acc {
    totals: Totals,
    /// Flows of one record each.
    whole: u64,
    /// (stream, flow_id) of flows with several records.
    split: HashSet<(u32, u64)>,
}

/// Totals by key, for one `GroupBy` (or none: one group of everything).
pub struct Groups {
    by: Option<GroupBy>,
    map: HashMap<Key, Acc>,
    /// Lines whose addresses or direction do not parse.
    pub unusable: u64,
}

/// What to sort groups by (largest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Bytes,
    Packets,
    Flows,
    Records,
}

impl Groups {
    pub fn new(by: Option<GroupBy>) -> Groups {
        Groups {
            by,
            map: HashMap::new(),
            unusable: 0,
        }
    }

    pub fn by(&self) -> Option<GroupBy> {
        self.by
    }

    pub fn add(&mut self, input: &Input, r: &Rec) {
        let Some(k) = key(self.by, input, r) else {
            self.unusable += 1;
            return;
        };
        let acc = self.map.entry(k).or_default();
        acc.totals.add(r);
        if r.whole_flow() {
            acc.whole += 1;
        } else {
            acc.split.insert((input.stream, r.flow_id));
        }
    }

    pub fn merge(&mut self, other: Groups) {
        self.unusable += other.unusable;
        for (k, o) in other.map {
            let acc = self.map.entry(k).or_default();
            acc.totals.merge(&o.totals);
            acc.whole += o.whole;
            if acc.split.len() < o.split.len() {
                let mine = std::mem::replace(&mut acc.split, o.split);
                acc.split.extend(mine);
            } else {
                acc.split.extend(o.split);
            }
        }
    }

    /// Every group with its totals, largest first by `sort` (ties in key
    /// order, so output is the same run after run).
    pub fn rows(&self, sort: SortBy) -> Vec<(Key, Totals)> {
        let mut rows: Vec<(Key, Totals)> = self
            .map
            .iter()
            .map(|(k, a)| {
                let mut t = a.totals;
                t.flows = a.whole + a.split.len() as u64;
                (k.clone(), t)
            })
            .collect();
        let metric = |t: &Totals| match sort {
            SortBy::Bytes => t.bytes,
            SortBy::Packets => t.packets,
            SortBy::Flows => t.flows,
            SortBy::Records => t.records,
        };
        rows.sort_by(|a, b| metric(&b.1).cmp(&metric(&a.1)).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    /// Everything together (all groups' records, flows counted once).
    pub fn total(&self) -> Totals {
        let mut t = Totals::default();
        let mut split: HashSet<(u32, u64)> = HashSet::new();
        let mut whole = 0;
        for a in self.map.values() {
            t.merge(&a.totals);
            whole += a.whole;
            split.extend(a.split.iter().copied());
        }
        t.flows = whole + split.len() as u64;
        t
    }
}
