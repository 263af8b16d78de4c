//! The observer: flow records in, observations out. Sans-IO like the flow
//! table: its only clock is the records' packet time, so a capture file gives
//! the same observations on every run. Every table it keeps is capped
//! (`max_tracked`): a source spraying spoofed addresses is counted as
//! untracked instead of growing memory.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use vmflow_proto::{Direction, FlowRecord, Remote};

use super::enrich::Enricher;
use super::watchlist::Watchlist;
use super::{Kind, Observation};
use crate::config::ObserveConfig;

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Counts of what the observer raised and what it could not track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObserverStats {
    pub failed_access: u64,
    pub exposed_service: u64,
    pub watchlist: u64,
    pub scan: u64,
    pub new_country: u64,
    /// Records a full table had no room for (per kind, summed).
    pub untracked: u64,
}

/// Attempts on one (remote, local address, local port) within a window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attempts {
    first_ns: u64,
    last_ns: u64,
    count: u64,
    flow_ids: Vec<u64>,
    raised: bool,
}

/// Distinct local targets one remote reached within a window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Sweep {
    first_ns: u64,
    last_ns: u64,
    targets: HashSet<(IpAddr, u16)>,
    ports: HashSet<u16>,
    flow_ids: Vec<u64>,
    raised: bool,
}

/// What an observer remembers, to be checkpointed with the engine's state:
/// restored, it raises what it would have raised had it never stopped
/// (restarting without it would forget attempts and scans half counted,
/// and raise again what was raised before).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ObserverState {
    countries: Vec<((IpAddr, u16, u8), Vec<String>)>,
    failed: Vec<((IpAddr, IpAddr, u16), Attempts)>,
    exposed: Vec<(IpAddr, u16, IpAddr)>,
    sweeps: Vec<(IpAddr, Sweep)>,
    now: u64,
    swept_at: u64,
}

pub struct Observer {
    cfg: ObserveConfig,
    failed_window_ns: u64,
    scan_window_ns: u64,
    lists: Vec<Watchlist>,
    enricher: Option<Enricher>,
    /// Countries each local service (address, port, protocol) has heard from.
    countries: HashMap<(IpAddr, u16, u8), HashSet<String>>,
    /// Entries of `countries`, summed (what the cap applies to).
    country_pairs: usize,
    failed: HashMap<(IpAddr, IpAddr, u16), Attempts>,
    exposed: HashSet<(IpAddr, u16, IpAddr)>,
    sweeps: HashMap<IpAddr, Sweep>,
    /// The latest packet time seen: what "expired" is measured against.
    now: u64,
    /// When full tables were last swept of expired entries.
    swept_at: u64,
    stats: ObserverStats,
}

impl Observer {
    pub fn new(cfg: ObserveConfig, lists: Vec<Watchlist>, enricher: Option<Enricher>) -> Observer {
        Observer {
            enricher,
            countries: HashMap::new(),
            country_pairs: 0,
            failed_window_ns: cfg.failed_access_window.ns(),
            scan_window_ns: cfg.scan_window.ns(),
            cfg,
            lists,
            failed: HashMap::new(),
            exposed: HashSet::new(),
            sweeps: HashMap::new(),
            now: 0,
            swept_at: 0,
            stats: ObserverStats::default(),
        }
    }

    /// New watchlists and databases; what has been seen so far is kept.
    pub fn replace(&mut self, lists: Vec<Watchlist>, enricher: Option<Enricher>) {
        self.lists = lists;
        self.enricher = enricher;
    }

    pub fn stats(&self) -> &ObserverStats {
        &self.stats
    }

    /// What it remembers now (between two records).
    pub fn state(&self) -> ObserverState {
        ObserverState {
            countries: self
                .countries
                .iter()
                .map(|(k, v)| (*k, v.iter().cloned().collect()))
                .collect(),
            failed: self.failed.iter().map(|(k, v)| (*k, v.clone())).collect(),
            exposed: self.exposed.iter().copied().collect(),
            sweeps: self.sweeps.iter().map(|(k, v)| (*k, v.clone())).collect(),
            now: self.now,
            swept_at: self.swept_at,
        }
    }

    /// Continues from `state` (taken with the same configuration); what it
    /// counted so far (`stats`) starts again from zero.
    pub fn restore(&mut self, state: ObserverState) {
        self.countries = state
            .countries
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        self.country_pairs = self.countries.values().map(HashSet::len).sum();
        self.failed = state.failed.into_iter().collect();
        self.exposed = state.exposed.into_iter().collect();
        self.sweeps = state.sweeps.into_iter().collect();
        self.now = state.now;
        self.swept_at = state.swept_at;
    }

    /// Whether records can be tagged at all (`[enrich]` or a watchlist).
    pub fn tags(&self) -> bool {
        self.enricher.is_some() || !self.lists.is_empty()
    }

    /// Tags a record with where its remote end is and the watchlists that
    /// name it. The remote is the side outside the local networks: the
    /// responder of an outbound flow, the initiator of an inbound one;
    /// internal flows have none, and external ones (neither side local)
    /// two, so neither is tagged.
    pub fn tag(&self, r: &mut FlowRecord) {
        let remote = match r.direction {
            Direction::Outbound => r.dst_addr,
            Direction::Inbound => r.src_addr,
            Direction::Internal | Direction::External => return,
        };
        let mut t = Remote::default();
        if let Some(e) = &self.enricher {
            let p = e.lookup(remote);
            (t.country, t.asn, t.as_org) = (p.country, p.asn, p.as_org);
        }
        t.watchlists = self
            .lists
            .iter()
            .filter(|l| l.contains(remote))
            .map(|l| l.name.clone())
            .collect();
        r.remote = (!t.is_empty()).then(|| Box::new(t));
    }

    /// One record, in the engine's output order; observations it completes
    /// are appended to `out`, with where their remote is if known.
    pub fn record(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        let start = out.len();
        self.observe(r, out);
        if let Some(e) = &self.enricher {
            for o in &mut out[start..] {
                let p = e.lookup(o.remote_addr);
                o.remote_country = o.remote_country.take().or(p.country);
                o.remote_asn = p.asn;
                o.remote_as_org = p.as_org;
            }
        }
    }

    fn observe(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        self.now = self.now.max(r.last_ns);
        if self.cfg.new_country && r.direction == Direction::Inbound && r.segment == 0 {
            self.new_country(r, out);
        }
        if self.cfg.watchlist && !self.lists.is_empty() {
            self.watchlist(r, out);
        }
        if r.proto != TCP || r.direction != Direction::Inbound {
            return;
        }
        // Inbound: the remote initiated (src), the local side answered (dst).
        let syn = r.fwd_tcp_flags & SYN != 0;
        let answered = r.rev_tcp_flags & (SYN | ACK) == SYN | ACK;
        let completed = syn && answered && r.fwd_tcp_flags & ACK != 0;
        if self.cfg.failed_access && syn && (!answered || r.rev_tcp_flags & RST != 0) {
            self.failed_attempt(r, out);
        }
        if self.cfg.exposed_service && completed && self.cfg.admin_ports.contains(&r.dst_port) {
            self.exposed(r, out);
        }
        if self.cfg.scan && syn && r.segment == 0 {
            self.sweep(r, out);
        }
    }

    fn watchlist(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        // The local end (service or client), and the remote ends to check.
        type End = (IpAddr, u16);
        let (local, remotes): (Option<End>, &[End]) = match r.direction {
            Direction::Outbound => (Some((r.src_addr, r.src_port)), &[(r.dst_addr, r.dst_port)]),
            Direction::Inbound => (Some((r.dst_addr, r.dst_port)), &[(r.src_addr, r.src_port)]),
            Direction::External => (None, &[(r.src_addr, r.src_port), (r.dst_addr, r.dst_port)]),
            Direction::Internal => return,
        };
        for &(remote, _) in remotes {
            for list in self.lists.iter().filter(|l| l.contains(remote)) {
                self.stats.watchlist += 1;
                let bytes = r.fwd_bytes + r.rev_bytes;
                out.push(Observation {
                    kind: Kind::Watchlist,
                    local_addr: local.map(|l| l.0),
                    local_port: local.map(|l| l.1),
                    remote_addr: remote,
                    watchlist: Some(list.name.clone()),
                    direction: Some(r.direction),
                    bytes: Some(bytes),
                    summary: format!(
                        "{} flow with {remote} (on watchlist {:?}): {bytes} bytes",
                        direction_word(r.direction),
                        list.name
                    ),
                    ..Observation::base(r)
                });
            }
        }
    }

    /// The first country a service hears from is its baseline; each
    /// country after that is new once.
    fn new_country(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        let Some(country) = self
            .enricher
            .as_ref()
            .and_then(|e| e.lookup(r.src_addr).country)
        else {
            return;
        };
        let key = (r.dst_addr, r.dst_port, r.proto);
        let known = self
            .countries
            .get(&key)
            .is_some_and(|c| c.contains(&country));
        if known {
            return;
        }
        if self.country_pairs >= self.cfg.max_tracked {
            self.stats.untracked += 1;
            return;
        }
        self.country_pairs += 1;
        let seen = self.countries.entry(key).or_default();
        let baseline = seen.is_empty();
        seen.insert(country.clone());
        if baseline {
            return;
        }
        self.stats.new_country += 1;
        out.push(Observation {
            kind: Kind::NewCountry,
            local_addr: Some(r.dst_addr),
            local_port: Some(r.dst_port),
            remote_addr: r.src_addr,
            remote_country: Some(country.clone()),
            summary: format!(
                "{}:{} ({}) heard from {country} ({}) for the first time since start; it knew {} other countr{}",
                r.dst_addr,
                r.dst_port,
                service(r.dst_port),
                r.src_addr,
                seen.len() - 1,
                if seen.len() == 2 { "y" } else { "ies" }
            ),
            ..Observation::base(r)
        });
    }

    fn failed_attempt(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        let key = (r.src_addr, r.dst_addr, r.dst_port);
        let window = self.failed_window_ns;
        if !self.failed.contains_key(&key) && self.failed.len() >= self.cfg.max_tracked {
            self.sweep_expired();
            if self.failed.len() >= self.cfg.max_tracked {
                self.stats.untracked += 1;
                return;
            }
        }
        let e = self.failed.entry(key).or_insert(Attempts {
            first_ns: r.first_ns,
            last_ns: r.first_ns,
            count: 0,
            flow_ids: Vec::new(),
            raised: false,
        });
        if r.first_ns >= e.first_ns.saturating_add(window) {
            *e = Attempts {
                first_ns: r.first_ns,
                last_ns: r.first_ns,
                count: 0,
                flow_ids: Vec::new(),
                raised: false,
            };
        }
        e.count += 1;
        e.first_ns = e.first_ns.min(r.first_ns);
        e.last_ns = e.last_ns.max(r.last_ns);
        if e.flow_ids.len() < self.cfg.evidence {
            e.flow_ids.push(r.flow_id);
        }
        if !e.raised && e.count >= u64::from(self.cfg.failed_access_attempts) {
            e.raised = true;
            self.stats.failed_access += 1;
            out.push(Observation {
                kind: Kind::FailedAccess,
                first_ns: e.first_ns,
                last_ns: e.last_ns,
                local_addr: Some(r.dst_addr),
                local_port: Some(r.dst_port),
                remote_addr: r.src_addr,
                count: e.count,
                flow_ids: e.flow_ids.clone(),
                summary: format!(
                    "{} failed connection attempts from {} to {}:{} ({}) within {} s",
                    e.count,
                    r.src_addr,
                    r.dst_addr,
                    r.dst_port,
                    service(r.dst_port),
                    self.cfg.failed_access_window
                ),
                ..Observation::base(r)
            });
        }
    }

    fn exposed(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        let key = (r.dst_addr, r.dst_port, r.src_addr);
        if self.exposed.contains(&key) {
            return;
        }
        if self.exposed.len() >= self.cfg.max_tracked {
            self.stats.untracked += 1;
            return;
        }
        self.exposed.insert(key);
        self.stats.exposed_service += 1;
        out.push(Observation {
            kind: Kind::ExposedService,
            local_addr: Some(r.dst_addr),
            local_port: Some(r.dst_port),
            remote_addr: r.src_addr,
            summary: format!(
                "{} ({}) on {} completed a handshake with {}, an address outside the local networks",
                service(r.dst_port),
                r.dst_port,
                r.dst_addr,
                r.src_addr
            ),
            ..Observation::base(r)
        });
    }

    fn sweep(&mut self, r: &FlowRecord, out: &mut Vec<Observation>) {
        let window = self.scan_window_ns;
        if !self.sweeps.contains_key(&r.src_addr) && self.sweeps.len() >= self.cfg.max_tracked {
            self.sweep_expired();
            if self.sweeps.len() >= self.cfg.max_tracked {
                self.stats.untracked += 1;
                return;
            }
        }
        let fresh = |t: u64| Sweep {
            first_ns: t,
            last_ns: t,
            targets: HashSet::new(),
            ports: HashSet::new(),
            flow_ids: Vec::new(),
            raised: false,
        };
        let s = self
            .sweeps
            .entry(r.src_addr)
            .or_insert_with(|| fresh(r.first_ns));
        if r.first_ns >= s.first_ns.saturating_add(window) {
            *s = fresh(r.first_ns);
        }
        let threshold = self.cfg.scan_targets as usize;
        // Bounded by the threshold: once raised, targets are not remembered.
        if s.raised || !s.targets.insert((r.dst_addr, r.dst_port)) {
            return;
        }
        s.ports.insert(r.dst_port);
        s.first_ns = s.first_ns.min(r.first_ns);
        s.last_ns = s.last_ns.max(r.last_ns);
        if s.flow_ids.len() < self.cfg.evidence {
            s.flow_ids.push(r.flow_id);
        }
        if s.targets.len() >= threshold {
            s.raised = true;
            let hosts: HashSet<IpAddr> = s.targets.iter().map(|t| t.0).collect();
            let (targets, ports, hosts) = (s.targets.len(), s.ports.len(), hosts.len());
            let (only_host, only_port) = (
                (hosts == 1)
                    .then(|| s.targets.iter().next().map(|t| t.0))
                    .flatten(),
                (ports == 1)
                    .then(|| s.ports.iter().next().copied())
                    .flatten(),
            );
            s.targets = HashSet::new();
            s.ports = HashSet::new();
            self.stats.scan += 1;
            out.push(Observation {
                kind: Kind::Scan,
                first_ns: s.first_ns,
                last_ns: s.last_ns,
                local_addr: only_host,
                local_port: only_port,
                remote_addr: r.src_addr,
                count: targets as u64,
                flow_ids: s.flow_ids.clone(),
                summary: format!(
                    "{} reached {targets} local targets ({ports} ports on {hosts} addresses) within {} s",
                    r.src_addr, self.cfg.scan_window
                ),
                ..Observation::base(r)
            });
        }
    }

    /// Drops entries whose window ended before `now`, at most once per
    /// eighth of the shorter window: under a flood of new sources a full
    /// table is swept now and then, not for every record.
    fn sweep_expired(&mut self) {
        let every = self.failed_window_ns.min(self.scan_window_ns) / 8;
        if self.swept_at != 0 && self.now < self.swept_at.saturating_add(every) {
            return;
        }
        self.swept_at = self.now.max(1);
        let (now, fw, sw) = (self.now, self.failed_window_ns, self.scan_window_ns);
        self.failed
            .retain(|_, e| e.first_ns.saturating_add(fw) > now);
        self.sweeps
            .retain(|_, s| s.first_ns.saturating_add(sw) > now);
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
        Direction::Internal => "internal",
        Direction::External => "external",
    }
}

/// The usual name of a port the observations care about.
fn service(port: u16) -> &'static str {
    match port {
        22 => "SSH",
        3389 => "RDP",
        5985 => "WinRM",
        5986 => "WinRM over HTTPS",
        445 => "SMB",
        1433 => "SQL Server",
        3306 => "MySQL",
        5432 => "PostgreSQL",
        _ => "service",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::record;

    const S: u64 = 1_000_000_000;

    /// An inbound TCP attempt from `src` to 10.0.0.5:`port` at `t` seconds:
    /// refused (RST) or completed.
    fn inbound(id: u64, src: IpAddr, port: u16, t: u64, completed: bool) -> FlowRecord {
        let mut r = record(id, t * S);
        r.proto = TCP;
        r.direction = Direction::Inbound;
        r.src_addr = src;
        r.dst_addr = "10.0.0.5".parse().unwrap();
        r.dst_port = port;
        r.fwd_tcp_flags = if completed { SYN | ACK } else { SYN };
        r.rev_tcp_flags = if completed { SYN | ACK } else { RST | ACK };
        r
    }

    fn run(o: &mut Observer, recs: &[FlowRecord]) -> Vec<Observation> {
        let mut out = Vec::new();
        for r in recs {
            o.record(r, &mut out);
        }
        out
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failed_access_needs_the_attempts_within_one_window_and_is_raised_once() {
        let mut o = Observer::new(ObserveConfig::default(), Vec::new(), None);
        let a = ip("203.0.113.50");
        // Nine within a minute, the tenth after it: a new window, nothing.
        let mut recs: Vec<_> = (0..9).map(|i| inbound(i, a, 3389, i * 6, false)).collect();
        recs.push(inbound(9, a, 3389, 61, false));
        assert!(run(&mut o, &recs).is_empty());
        // Nine more in the new window make ten: raised once, not again.
        let recs: Vec<_> = (10..30)
            .map(|i| inbound(i, a, 3389, 61 + i, false))
            .collect();
        let out = run(&mut o, &recs);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].kind, out[0].count), (Kind::FailedAccess, 10));
        assert_eq!(out[0].first_ns, 61 * S);
        // Completed connections are not failures.
        let recs: Vec<_> = (0..20)
            .map(|i| inbound(100 + i, ip("203.0.113.51"), 22, 500 + i, true))
            .collect();
        let out = run(&mut o, &recs);
        assert!(out.iter().all(|x| x.kind != Kind::FailedAccess), "{out:?}");
    }

    #[test]
    fn exposed_service_only_for_admin_ports_and_once_per_remote() {
        let mut o = Observer::new(ObserveConfig::default(), Vec::new(), None);
        let out = run(
            &mut o,
            &[
                inbound(1, ip("198.51.100.9"), 22, 1, true),
                inbound(2, ip("198.51.100.9"), 22, 2, true),
                inbound(3, ip("198.51.100.9"), 443, 3, true),
                inbound(4, ip("198.51.100.10"), 3389, 4, true),
            ],
        );
        let got: Vec<_> = out
            .iter()
            .map(|x| (x.kind, x.remote_addr, x.local_port))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::ExposedService, ip("198.51.100.9"), Some(22)),
                (Kind::ExposedService, ip("198.51.100.10"), Some(3389)),
            ]
        );
    }

    #[test]
    fn a_million_spoofed_sources_stay_within_the_cap_and_are_counted() {
        let cfg = ObserveConfig {
            max_tracked: 10_000,
            ..ObserveConfig::default()
        };
        let mut o = Observer::new(cfg, Vec::new(), None);
        let mut out = Vec::new();
        for i in 0..1_000_000u32 {
            // All within one second of packet time: nothing expires.
            let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let mut r = inbound(u64::from(i), src, 3389, 0, false);
            r.first_ns = u64::from(i);
            r.last_ns = u64::from(i);
            o.record(&r, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!((o.failed.len(), o.sweeps.len()), (10_000, 10_000));
        // Both the failed-access and the scan table turned away the rest.
        assert_eq!(o.stats().untracked, 2 * (1_000_000 - 10_000));
    }

    #[test]
    fn expired_entries_make_room_for_new_sources() {
        let cfg = ObserveConfig {
            max_tracked: 100,
            ..ObserveConfig::default()
        };
        let mut o = Observer::new(cfg, Vec::new(), None);
        let src = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        let early: Vec<_> = (0..100)
            .map(|i| inbound(u64::from(i), src(i), 22, 0, false))
            .collect();
        run(&mut o, &early);
        // Two minutes later the first hundred have expired.
        let late: Vec<_> = (100..200)
            .map(|i| inbound(u64::from(i), src(i), 22, 120, false))
            .collect();
        run(&mut o, &late);
        assert_eq!(o.stats().untracked, 0);
        assert_eq!(o.failed.len(), 100);
    }

    /// Stopped anywhere and restored from its state (through the
    /// checkpoint's encoding), an observer raises exactly what one that
    /// never stopped raises.
    #[test]
    fn a_restored_observer_continues_where_it_stopped() {
        let cfg = ObserveConfig {
            scan_targets: 30,
            failed_access_attempts: 5,
            ..ObserveConfig::default()
        };
        let mut recs = Vec::new();
        for i in 0..200u64 {
            let src = ip(["203.0.113.1", "203.0.113.2", "198.51.100.3"][(i % 3) as usize]);
            let port = [3389, 22, 1000 + i as u16][(i % 3) as usize];
            recs.push(inbound(i, src, port, i / 2, i % 7 == 0));
        }
        let whole = run(&mut Observer::new(cfg.clone(), Vec::new(), None), &recs);
        assert!(
            [Kind::FailedAccess, Kind::ExposedService, Kind::Scan]
                .iter()
                .all(|k| whole.iter().any(|o| o.kind == *k)),
            "{whole:?}"
        );
        for cut in [1, 17, 60, 100, 199] {
            let mut a = Observer::new(cfg.clone(), Vec::new(), None);
            let mut got = run(&mut a, &recs[..cut]);
            let bytes = rmp_serde::to_vec(&a.state()).unwrap();
            let mut b = Observer::new(cfg.clone(), Vec::new(), None);
            b.restore(rmp_serde::from_slice(&bytes).unwrap());
            got.extend(run(&mut b, &recs[cut..]));
            assert_eq!(got, whole, "cut after {cut}");
        }
    }

    #[test]
    fn a_scan_is_raised_at_the_threshold_with_its_targets() {
        let cfg = ObserveConfig {
            scan_targets: 50,
            ..ObserveConfig::default()
        };
        let mut o = Observer::new(cfg, Vec::new(), None);
        let s = ip("203.0.113.77");
        // The same port twice counts once.
        let mut recs: Vec<_> = (0..49u16)
            .map(|p| inbound(u64::from(p), s, 1000 + p, 1, false))
            .collect();
        recs.push(inbound(99, s, 1000, 2, false));
        assert!(run(&mut o, &recs).iter().all(|x| x.kind != Kind::Scan));
        let out = run(
            &mut o,
            &[
                inbound(100, s, 2000, 3, false),
                inbound(101, s, 2001, 3, false),
            ],
        );
        let scans: Vec<_> = out.iter().filter(|x| x.kind == Kind::Scan).collect();
        assert_eq!(scans.len(), 1);
        assert_eq!(scans[0].count, 50);
        assert_eq!(scans[0].local_addr, Some(ip("10.0.0.5")));
        assert_eq!(scans[0].local_port, None);
    }
}
