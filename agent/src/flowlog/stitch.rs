//! Flow-log tuples to flow records, without I/O or clocks: time comes with
//! the tuples. A flow is one NIC's (MAC's) view of one 5-tuple: its `B`
//! tuple opens it, each `C` tuple becomes an `active` segment and its `E`
//! tuple the `final` one, all with the flow id a captured flow would get
//! (`flow_id` of the key and the flow's first time), segments numbered from
//! 0. A segment spans the time from the flow's previous tuple to its own
//! and carries that tuple's counters (deltas, as the log's are).
//!
//! What a log leaves out is still closed: a flow opened again before its
//! end, or idle past `idle` (the log's `E` never came: stateless inbound TCP
//! rules write none), or pushed out by `max_open`, gets a final segment with
//! no counters. Tuples that stand alone (NSG version 1, denied flows) become
//! one final segment each.
//!
//! Output depends only on the tuples fed, in order: a run restored from
//! [`StitchState`] gives what the original run would have given from there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use vmflow_proto::{flow_id, Decision, Direction, EndReason, FlowRecord};

use super::parse::Entry;
use super::schema::{Counters, FlowState};

#[derive(Clone, Copy, Debug)]
pub struct StitchSettings {
    /// A flow without a tuple for this long (in the logs' time) is closed.
    pub idle_ns: u64,
    /// Open flows kept at most; the one seen longest ago is closed first.
    pub max_open: usize,
}

impl Default for StitchSettings {
    fn default() -> Self {
        StitchSettings {
            // Flow logs write a `C` tuple about every 5 minutes; the VNet's
            // FlowTimeoutInMinutes goes up to 30.
            idle_ns: 35 * 60 * 1_000_000_000,
            max_open: 1 << 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    pub mac: String,
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Open {
    flow_id: u64,
    /// The next segment's number.
    segment: u32,
    /// Where the next segment starts: the flow's previous tuple.
    since_ns: u64,
    inbound: bool,
    rule: String,
    decision: Decision,
}

/// The stitcher between two tuples, for checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StitchState {
    open: Vec<(FlowKey, Open)>,
    /// The latest tuple time seen.
    watermark_ns: u64,
}

impl StitchState {
    pub fn open_flows(&self) -> usize {
        self.open.len()
    }
}

/// What the stitcher did besides producing records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StitchStats {
    pub tuples: u64,
    pub records: u64,
    /// `C` or `E` tuples of a flow whose `B` was never seen (begun before
    /// the first blob read, or in a blob out of retention).
    pub without_begin: u64,
    /// Flows opened again (a second `B`) before their `E`.
    pub reopened: u64,
    pub idle_closed: u64,
    pub evicted: u64,
}

pub struct Stitcher {
    settings: StitchSettings,
    open: BTreeMap<FlowKey, Open>,
    /// Open flows by the time they were last seen (their `since_ns`).
    by_age: BTreeSet<(u64, FlowKey)>,
    watermark_ns: u64,
    pub stats: StitchStats,
}

impl Stitcher {
    pub fn new(settings: StitchSettings) -> Self {
        Stitcher {
            settings,
            open: BTreeMap::new(),
            by_age: BTreeSet::new(),
            watermark_ns: 0,
            stats: StitchStats::default(),
        }
    }

    pub fn restore(settings: StitchSettings, state: StitchState) -> Self {
        let mut s = Stitcher::new(settings);
        s.watermark_ns = state.watermark_ns;
        for (k, o) in state.open {
            s.by_age.insert((o.since_ns, k.clone()));
            s.open.insert(k, o);
        }
        s
    }

    pub fn state(&self) -> StitchState {
        StitchState {
            open: self
                .open
                .iter()
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect(),
            watermark_ns: self.watermark_ns,
        }
    }

    pub fn open_flows(&self) -> usize {
        self.open.len()
    }

    /// One tuple in; the records it completes appended to `out`.
    pub fn push(&mut self, e: &Entry, out: &mut Vec<FlowRecord>) {
        let before = out.len();
        self.stats.tuples += 1;
        let t = &e.tuple;
        let key = FlowKey {
            mac: e.mac.clone(),
            proto: t.proto,
            src: t.src,
            sport: t.sport,
            dst: t.dst,
            dport: t.dport,
        };
        let alone =
            matches!(t.state, None | Some(FlowState::Denied)) || t.decision == Decision::Deny;
        if alone {
            let o = self.fresh(&key, e, t.time_ns);
            out.push(record(
                &key,
                &o,
                t.time_ns,
                t.time_ns,
                t.counters,
                true,
                EndReason::Idle,
            ));
        } else {
            match t.state {
                Some(FlowState::Begin) => {
                    if let Some(old) = self.remove(&key) {
                        self.stats.reopened += 1;
                        out.push(closing(&key, &old, EndReason::Idle));
                    }
                    let o = self.fresh(&key, e, t.time_ns);
                    self.insert(key, o);
                }
                Some(s @ (FlowState::Continuing | FlowState::End)) => {
                    let mut o = match self.remove(&key) {
                        Some(o) => o,
                        None => {
                            self.stats.without_begin += 1;
                            self.fresh(&key, e, t.time_ns)
                        }
                    };
                    // Later tuples may name another rule (the rules changed).
                    o.rule.clone_from(&e.rule);
                    let last = t.time_ns.max(o.since_ns);
                    // E closes the flow; C is one more segment of it.
                    let (is_final, reason) = if s == FlowState::End {
                        (true, EndReason::Idle)
                    } else {
                        (false, EndReason::Active)
                    };
                    out.push(record(
                        &key, &o, o.since_ns, last, t.counters, is_final, reason,
                    ));
                    if !is_final {
                        o.segment = o.segment.saturating_add(1);
                        o.since_ns = last;
                        self.insert(key, o);
                    }
                }
                Some(FlowState::Denied) | None => {}
            }
        }
        self.watermark_ns = self.watermark_ns.max(t.time_ns);
        self.expire(out);
        self.stats.records += (out.len() - before) as u64;
    }

    /// Ends every open flow now (`reason`), e.g. when the agent stops and
    /// is told to finish.
    pub fn end_all(&mut self, reason: EndReason, out: &mut Vec<FlowRecord>) {
        let open = std::mem::take(&mut self.open);
        self.by_age.clear();
        for (k, o) in open {
            out.push(closing(&k, &o, reason));
            self.stats.records += 1;
        }
    }

    fn fresh(&self, key: &FlowKey, e: &Entry, time_ns: u64) -> Open {
        Open {
            flow_id: flow_id(
                None, key.proto, key.src, key.sport, key.dst, key.dport, time_ns,
            ),
            segment: 0,
            since_ns: time_ns,
            inbound: e.tuple.inbound,
            rule: e.rule.clone(),
            decision: e.tuple.decision,
        }
    }

    fn insert(&mut self, key: FlowKey, o: Open) {
        self.by_age.insert((o.since_ns, key.clone()));
        self.open.insert(key, o);
    }

    fn remove(&mut self, key: &FlowKey) -> Option<Open> {
        let o = self.open.remove(key)?;
        self.by_age.remove(&(o.since_ns, key.clone()));
        Some(o)
    }

    /// Closes flows idle past the setting, then the oldest beyond the bound.
    fn expire(&mut self, out: &mut Vec<FlowRecord>) {
        let horizon = self.watermark_ns.saturating_sub(self.settings.idle_ns);
        while let Some((since, key)) = self.by_age.first().cloned() {
            let over = self.open.len() > self.settings.max_open;
            if since >= horizon && !over {
                break;
            }
            let reason = if since < horizon {
                self.stats.idle_closed += 1;
                EndReason::Idle
            } else {
                self.stats.evicted += 1;
                EndReason::Evicted
            };
            if let Some(o) = self.remove(&key) {
                out.push(closing(&key, &o, reason));
            } else {
                // Cannot happen (both maps change together); never loop on it.
                self.by_age.remove(&(since, key));
            }
        }
    }
}

/// The final segment, without counters, of a flow whose log never ended it.
fn closing(key: &FlowKey, o: &Open, reason: EndReason) -> FlowRecord {
    record(
        key,
        o,
        o.since_ns,
        o.since_ns,
        Counters::default(),
        true,
        reason,
    )
}

fn record(
    key: &FlowKey,
    o: &Open,
    first_ns: u64,
    last_ns: u64,
    c: Counters,
    is_final: bool,
    end_reason: EndReason,
) -> FlowRecord {
    FlowRecord {
        flow_id: o.flow_id,
        segment: o.segment,
        is_final,
        ip_version: if key.src.is_ipv4() { 4 } else { 6 },
        proto: key.proto,
        vlan: None,
        src_addr: key.src,
        src_port: key.sport,
        dst_addr: key.dst,
        dst_port: key.dport,
        direction: if o.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        first_ns,
        last_ns,
        fwd_packets: c.fwd_packets,
        fwd_bytes: c.fwd_bytes,
        rev_packets: c.rev_packets,
        rev_bytes: c.rev_bytes,
        fwd_tcp_flags: 0,
        rev_tcp_flags: 0,
        icmp_type: None,
        icmp_code: None,
        end_reason,
        gap: false,
        rule: Some(o.rule.clone()),
        decision: Some(o.decision),
        remote: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::schema::{Schema, Tuple};

    const S: u64 = 1_000_000_000;

    fn entry(schema: Schema, t: &str) -> Entry {
        Entry {
            mac: "000D3AF87856".into(),
            rule: "UserRule_web".into(),
            tuple: Tuple::parse(schema, t).unwrap(),
        }
    }

    fn run(st: &mut Stitcher, tuples: &[(Schema, &str)]) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        for (s, t) in tuples {
            st.push(&entry(*s, t), &mut out);
        }
        out
    }

    #[test]
    fn begin_continuing_end_become_segments_of_one_flow() {
        let v = Schema::NsgV2;
        let mut st = Stitcher::new(StitchSettings::default());
        let out = run(
            &mut st,
            &[
                (v, "1000,10.0.0.4,203.0.113.9,40000,443,T,O,A,B,,,,"),
                (
                    v,
                    "1300,10.0.0.4,203.0.113.9,40000,443,T,O,A,C,10,1000,8,6000",
                ),
                (
                    v,
                    "1600,10.0.0.4,203.0.113.9,40000,443,T,O,A,C,5,500,4,3000",
                ),
                (v, "1700,10.0.0.4,203.0.113.9,40000,443,T,O,A,E,1,60,1,60"),
            ],
        );
        assert_eq!(out.len(), 3);
        let id = flow_id(
            None,
            6,
            "10.0.0.4".parse().unwrap(),
            40000,
            "203.0.113.9".parse().unwrap(),
            443,
            1000 * S,
        );
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.flow_id, id);
            assert_eq!(r.segment, i as u32);
            assert_eq!(r.direction, Direction::Outbound);
            assert_eq!(r.rule.as_deref(), Some("UserRule_web"));
            assert_eq!(r.decision, Some(Decision::Allow));
        }
        assert_eq!((out[0].first_ns, out[0].last_ns), (1000 * S, 1300 * S));
        assert_eq!((out[1].first_ns, out[1].last_ns), (1300 * S, 1600 * S));
        assert_eq!((out[2].first_ns, out[2].last_ns), (1600 * S, 1700 * S));
        assert_eq!(out[0].end_reason, EndReason::Active);
        assert!(!out[0].is_final && !out[1].is_final && out[2].is_final);
        assert_eq!(out.iter().map(|r| r.fwd_bytes).sum::<u64>(), 1560);
        assert_eq!(out.iter().map(|r| r.rev_packets).sum::<u64>(), 13);
        assert_eq!(st.open_flows(), 0);
    }

    #[test]
    fn denied_and_stateless_tuples_stand_alone() {
        let mut st = Stitcher::new(StitchSettings::default());
        let out = run(
            &mut st,
            &[
                (Schema::NsgV1, "1000,198.51.100.1,10.0.0.4,5000,22,T,I,D"),
                (
                    Schema::NsgV2,
                    "1000,198.51.100.1,10.0.0.4,5001,22,T,I,D,B,,,,",
                ),
                (
                    Schema::Vnet,
                    "1000000,198.51.100.1,10.0.0.4,5002,22,6,I,D,NX,0,0,0,0",
                ),
            ],
        );
        assert_eq!(out.len(), 3);
        for r in &out {
            assert!(r.is_final && r.segment == 0);
            assert_eq!(r.direction, Direction::Inbound);
            assert_eq!(r.decision, Some(Decision::Deny));
        }
        assert_eq!(st.open_flows(), 0);
    }

    #[test]
    fn what_the_log_leaves_out_is_still_closed() {
        let v = Schema::Vnet;
        let settings = StitchSettings {
            idle_ns: 600 * S,
            max_open: 2,
        };
        let mut st = Stitcher::new(settings);
        let out = run(
            &mut st,
            &[
                // A continuing flow without its begin.
                (v, "1000,10.0.0.4,10.0.0.5,1,80,6,O,C,X,1,100,1,100"),
                // Opened twice.
                (v, "1000,10.0.0.4,10.0.0.5,2,80,6,O,B,X,0,0,0,0"),
                (v, "1010,10.0.0.4,10.0.0.5,2,80,6,O,B,X,0,0,0,0"),
                (v, "1020,10.0.0.4,10.0.0.5,3,80,6,O,B,X,,,,"),
            ],
        );
        assert_eq!(st.stats.without_begin, 1);
        assert_eq!(st.stats.reopened, 1);
        // The reopened one's first life ended; then three open > 2: the
        // oldest (port 1, since 1000) was evicted.
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            (out[0].src_port, out[0].fwd_bytes, out[0].is_final),
            (1, 100, false)
        );
        assert_eq!((out[1].src_port, out[1].end_reason), (2, EndReason::Idle));
        assert_eq!(
            (out[2].src_port, out[2].end_reason, out[2].segment),
            (1, EndReason::Evicted, 1)
        );
        // Time moves past the idle timeout: both left are closed.
        let later = run(&mut st, &[(v, "5000,10.0.0.9,10.0.0.5,9,80,6,O,B,X,,,,")]);
        assert_eq!(later.len(), 2);
        assert!(later
            .iter()
            .all(|r| r.is_final && r.end_reason == EndReason::Idle));
        let mut end = Vec::new();
        st.end_all(EndReason::Shutdown, &mut end);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].end_reason, EndReason::Shutdown);
    }

    /// A run cut anywhere and restored from its state gives the records of
    /// the run never cut.
    #[test]
    fn a_restored_stitcher_continues_exactly() {
        let v = Schema::NsgV2;
        let mut tuples = Vec::new();
        for i in 0..40u64 {
            let port = 1000 + i % 7;
            let st = ["B", "C", "C", "E"][(i / 7 % 4) as usize];
            let counters = if st == "B" { ",,," } else { "1,2,3,4" };
            tuples.push(format!(
                "{},10.0.0.4,10.0.0.5,{port},80,T,O,A,{st},{counters}",
                100 + i * 60
            ));
        }
        let entries: Vec<Entry> = tuples.iter().map(|t| entry(v, t)).collect();
        let settings = StitchSettings {
            idle_ns: 900 * S,
            max_open: 5,
        };
        let mut whole = Vec::new();
        let mut st = Stitcher::new(settings);
        for e in &entries {
            st.push(e, &mut whole);
        }
        for cut in 0..entries.len() {
            let mut out = Vec::new();
            let mut a = Stitcher::new(settings);
            for e in &entries[..cut] {
                a.push(e, &mut out);
            }
            let bytes = rmp_serde::to_vec(&a.state()).unwrap();
            let mut b = Stitcher::restore(settings, rmp_serde::from_slice(&bytes).unwrap());
            for e in &entries[cut..] {
                b.push(e, &mut out);
            }
            assert_eq!(out, whole, "cut at {cut}");
        }
    }
}
