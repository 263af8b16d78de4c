//! The flow table on its own: packets and time in through `handle`, records
//! out. Each test builds the few packets it needs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use vmflow_proto::{Direction, EndReason, FlowRecord};

use crate::rng::Rng;

use super::{Event, FlowTable, TableConfig};
use crate::net::LocalNets;
use crate::packet::{from_ip, Decoded, FlowKey, Fragment, Packet, ICMP, TCP, UDP};

const S: u64 = 1_000_000_000;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// A local client and a remote server (default local networks: private space).
const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 5], 40_000);
const SERVER: ([u8; 4], u16) = ([93, 184, 216, 34], 443);

fn packet(ts: u64, from: ([u8; 4], u16), to: ([u8; 4], u16), proto: u8, flags: u8) -> Packet {
    let ip = |a: [u8; 4]| from_ip(IpAddr::V4(Ipv4Addr::from(a)));
    let d = Decoded {
        key: FlowKey {
            src: ip(from.0),
            dst: ip(to.0),
            src_port: from.1,
            dst_port: to.1,
            proto,
            ip_version: 4,
            vlan: None,
        },
        ip_bytes: 100,
        tcp_flags: flags,
        icmp: None,
        fragment: Fragment::None,
    };
    Packet::new(ts, &d)
}

fn table(cfg: TableConfig) -> FlowTable {
    FlowTable::new(cfg, Arc::new(LocalNets::default()))
}

fn feed(t: &mut FlowTable, events: &[Event<'_>]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for e in events {
        t.handle(*e, &mut out);
    }
    out
}

#[test]
fn both_directions_make_one_record_oriented_by_the_initiator() {
    let mut t = table(TableConfig::default());
    // The server's reply comes first in the capture order of this test: the
    // SYN still decides who initiated.
    let syn = packet(S, CLIENT, SERVER, TCP, SYN);
    let syn_ack = packet(S + 1, SERVER, CLIENT, TCP, SYN | ACK);
    let ack = packet(S + 2, CLIENT, SERVER, TCP, ACK);
    let data = packet(S + 3, SERVER, CLIENT, TCP, ACK);
    let out = feed(
        &mut t,
        &[
            Event::Packet(&syn),
            Event::Packet(&syn_ack),
            Event::Packet(&ack),
            Event::Packet(&data),
            Event::Finish(EndReason::EndOfInput),
        ],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let r = &out[0];
    assert_eq!(r.src_addr, IpAddr::V4(Ipv4Addr::from(CLIENT.0)));
    assert_eq!((r.src_port, r.dst_port), (CLIENT.1, SERVER.1));
    assert_eq!((r.fwd_packets, r.rev_packets), (2, 2));
    assert_eq!((r.fwd_bytes, r.rev_bytes), (200, 200));
    assert_eq!(r.fwd_tcp_flags, SYN | ACK);
    assert_eq!(r.rev_tcp_flags, SYN | ACK);
    assert_eq!((r.first_ns, r.last_ns), (S, S + 3));
    assert_eq!(r.direction, Direction::Outbound);
    assert_eq!(r.end_reason, EndReason::EndOfInput);
    assert!(r.is_final);
    assert_eq!(t.len(), 0);
}

#[test]
fn a_reply_seen_first_is_still_attributed_to_the_initiator() {
    let mut t = table(TableConfig::default());
    let syn_ack = packet(S, SERVER, CLIENT, TCP, SYN | ACK);
    let out = feed(
        &mut t,
        &[
            Event::Packet(&syn_ack),
            Event::Finish(EndReason::EndOfInput),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].src_addr, IpAddr::V4(Ipv4Addr::from(CLIENT.0)));
    assert_eq!((out[0].fwd_packets, out[0].rev_packets), (0, 1));
}

/// An echo request or reply (ICMP type 8 or 0) with identifier `id`: the
/// decoder puts the identifier in both port fields.
fn ping(ts: u64, from: [u8; 4], to: [u8; 4], ty: u8, id: u16) -> Packet {
    let d = Decoded {
        key: FlowKey {
            src: from_ip(IpAddr::V4(Ipv4Addr::from(from))),
            dst: from_ip(IpAddr::V4(Ipv4Addr::from(to))),
            src_port: id,
            dst_port: id,
            proto: ICMP,
            ip_version: 4,
            vlan: None,
        },
        ip_bytes: 84,
        tcp_flags: 0,
        icmp: Some((ty, 0)),
        fragment: Fragment::None,
    };
    Packet::new(ts, &d)
}

#[test]
fn a_ping_to_the_hosts_own_address_keeps_request_and_reply_apart() {
    let me = [127, 0, 0, 1];
    for first in [8u8, 0] {
        let mut t = table(TableConfig::default());
        let second = 8 - first;
        let a = ping(S, me, me, first, 7);
        let b = ping(S + 1, me, me, second, 7);
        let c = ping(S + 2, me, me, 8, 7);
        let d = ping(S + 3, me, me, 0, 7);
        let out = feed(
            &mut t,
            &[
                Event::Packet(&a),
                Event::Packet(&b),
                Event::Packet(&c),
                Event::Packet(&d),
                Event::Finish(EndReason::EndOfInput),
            ],
        );
        assert_eq!(out.len(), 1, "{out:?}");
        let r = &out[0];
        // Two requests forward, two replies back, whichever came first.
        assert_eq!((r.fwd_packets, r.rev_packets), (2, 2), "first type {first}");
        // Loopback never leaves the host: local whatever the networks say.
        assert_eq!(r.direction, Direction::Internal);
    }
}

#[test]
fn an_idle_flow_ends_exactly_at_its_idle_timeout() {
    let cfg = TableConfig::default();
    let idle = cfg.idle_ns;
    let mut t = table(cfg);
    let p = packet(10 * S, CLIENT, SERVER, UDP, 0);
    assert!(feed(&mut t, &[Event::Packet(&p), Event::Tick(10 * S + idle - 1)]).is_empty());
    assert_eq!(t.len(), 1);
    let out = feed(&mut t, &[Event::Tick(10 * S + idle)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_reason, EndReason::Idle);
    assert!(out[0].is_final);
    assert_eq!(t.len(), 0);
}

#[test]
fn a_long_flow_is_split_at_the_active_timeout_and_nothing_is_lost() {
    let cfg = TableConfig::default();
    let active = cfg.active_ns;
    let mut t = table(cfg);
    let mut out = Vec::new();
    // One packet a second for three active timeouts and a bit.
    let n = 3 * active / S + 5;
    for i in 0..n {
        let p = packet(i * S, CLIENT, SERVER, UDP, 0);
        t.handle(Event::Packet(&p), &mut out);
    }
    t.handle(Event::Finish(EndReason::EndOfInput), &mut out);
    assert_eq!(out.len(), 4, "{out:?}");
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.segment as usize, i);
        assert_eq!(r.flow_id, out[0].flow_id, "segments share the flow id");
        let last = i == out.len() - 1;
        assert_eq!(r.is_final, last);
        let want = if last {
            EndReason::EndOfInput
        } else {
            EndReason::Active
        };
        assert_eq!(r.end_reason, want);
    }
    let packets: u64 = out.iter().map(|r| r.fwd_packets + r.rev_packets).sum();
    assert_eq!(packets, n);
}

#[test]
fn fin_both_ways_ends_the_flow_after_the_linger_and_rst_says_so() {
    for (close, reason) in [(FIN, EndReason::Fin), (RST, EndReason::Rst)] {
        let cfg = TableConfig::default();
        let linger = cfg.tcp_linger_ns;
        let mut t = table(cfg);
        let a = packet(S, CLIENT, SERVER, TCP, SYN);
        let b = packet(S + 1, SERVER, CLIENT, TCP, SYN | ACK);
        let c = packet(S + 2, CLIENT, SERVER, TCP, close | ACK);
        let d = packet(S + 3, SERVER, CLIENT, TCP, close | ACK);
        let e = packet(S + 4, CLIENT, SERVER, TCP, ACK);
        // A FIN close lingers from the ACK of the second FIN.
        let last = if close == FIN { S + 4 } else { S + 2 };
        let mut events = vec![Event::Packet(&a), Event::Packet(&b), Event::Packet(&c)];
        if close == FIN {
            events.extend([Event::Packet(&d), Event::Packet(&e)]);
        }
        events.push(Event::Tick(last + linger - 1));
        assert!(
            feed(&mut t, &events).is_empty(),
            "{reason:?} before the linger"
        );
        let out = feed(&mut t, &[Event::Tick(last + linger)]);
        assert_eq!(out.len(), 1, "{reason:?}");
        assert_eq!(out[0].end_reason, reason);
    }
}

#[test]
fn a_new_syn_on_a_closing_connection_is_a_new_flow() {
    let mut t = table(TableConfig::default());
    let a = packet(S, CLIENT, SERVER, TCP, SYN);
    let b = packet(S + 1, CLIENT, SERVER, TCP, FIN | ACK);
    let c = packet(S + 2, SERVER, CLIENT, TCP, FIN | ACK);
    let again = packet(S + 3, CLIENT, SERVER, TCP, SYN);
    let out = feed(
        &mut t,
        &[
            Event::Packet(&a),
            Event::Packet(&b),
            Event::Packet(&c),
            Event::Packet(&again),
            Event::Finish(EndReason::EndOfInput),
        ],
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].end_reason, EndReason::Fin);
    assert_ne!(out[0].flow_id, out[1].flow_id);
}

#[test]
fn a_full_table_evicts_the_least_recently_seen_flow() {
    let cfg = TableConfig {
        max_flows: 2,
        emergency_at: 2,
        ..TableConfig::default()
    };
    let mut t = table(cfg);
    let port = |p: u16| (CLIENT.0, p);
    let p1 = packet(S, port(1), SERVER, UDP, 0);
    let p2 = packet(S + 1, port(2), SERVER, UDP, 0);
    let p1_again = packet(S + 2, port(1), SERVER, UDP, 0);
    let p3 = packet(S + 3, port(3), SERVER, UDP, 0);
    let out = feed(
        &mut t,
        &[
            Event::Packet(&p1),
            Event::Packet(&p2),
            Event::Packet(&p1_again),
            Event::Packet(&p3),
        ],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].src_port, 2, "flow 2 was seen least recently");
    assert_eq!(out[0].end_reason, EndReason::Evicted);
    assert_eq!(t.len(), 2);
    assert_eq!(t.stats().evicted, 1);
}

#[test]
fn a_gap_marks_the_flows_open_across_it_and_not_the_others() {
    let mut t = table(TableConfig::default());
    let open = packet(S, CLIENT, SERVER, UDP, 0);
    let other = (CLIENT.0, 41_000);
    let mut out = feed(
        &mut t,
        &[
            Event::Packet(&open),
            Event::Gap {
                start: 2 * S,
                end: 3 * S,
            },
        ],
    );
    // A flow that starts with a handshake after the gap cannot have begun
    // in it.
    let handshake = packet(4 * S, other, SERVER, TCP, SYN);
    out.extend(feed(
        &mut t,
        &[
            Event::Packet(&handshake),
            Event::Finish(EndReason::EndOfInput),
        ],
    ));
    assert_eq!(out.len(), 2, "{out:?}");
    let udp = out.iter().find(|r| r.proto == UDP).unwrap();
    let tcp = out.iter().find(|r| r.proto == TCP).unwrap();
    assert!(udp.gap, "open across the gap");
    assert!(!tcp.gap, "began with a handshake after it");
}

#[test]
fn a_restored_snapshot_continues_as_if_never_stopped() {
    // Short timeouts, so flows end and split on both sides of the cut.
    let cfg = TableConfig {
        idle_ns: 3 * S,
        active_ns: 10 * S,
        ..TableConfig::default()
    };
    let packets: Vec<Packet> = (0..200u64)
        .map(|i| {
            let c = (CLIENT.0, 30_000 + (i % 7) as u16);
            let flags = if i % 5 == 0 { SYN } else { ACK };
            packet(i * S / 4, c, SERVER, TCP, flags)
        })
        .collect();
    let run = |t: &mut FlowTable, ps: &[Packet], out: &mut Vec<FlowRecord>| {
        for p in ps {
            t.handle(Event::Packet(p), out);
        }
    };
    let mut whole = Vec::new();
    let mut t = table(cfg.clone());
    run(&mut t, &packets, &mut whole);
    t.handle(Event::Finish(EndReason::EndOfInput), &mut whole);

    let mut resumed = Vec::new();
    let mut first = table(cfg.clone());
    run(&mut first, &packets[..120], &mut resumed);
    let snap = first.snapshot();
    drop(first);
    let mut second = FlowTable::restore(cfg, Arc::new(LocalNets::default()), snap);
    run(&mut second, &packets[120..], &mut resumed);
    second.handle(Event::Finish(EndReason::EndOfInput), &mut resumed);
    // More records than flows: the timeouts did their work on both sides.
    assert!(whole.len() > 20, "{}", whole.len());
    assert_eq!(whole, resumed);
}

/// Feeds packets as a capture would: packet time reaches each packet (a tick)
/// before it arrives, then the input ends.
fn paced(t: &mut FlowTable, pkts: &[Packet]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for p in pkts {
        t.handle(Event::Tick(p.ts_ns), &mut out);
        t.handle(Event::Packet(p), &mut out);
    }
    out
}

/// A client's connection: handshake, a request and an answer, then the
/// close. The SYN at `t0`, the SYN-ACK `answer` later, then `gap` between
/// consecutive packets.
fn connection(t0: u64, answer: u64, gap: u64, port: u16, close: &[(bool, u8)]) -> Vec<Packet> {
    let c = (CLIENT.0, port);
    let mut steps = vec![
        (true, SYN),
        (false, SYN | ACK),
        (true, ACK),
        (true, ACK),
        (false, ACK),
    ];
    steps.extend_from_slice(close);
    steps
        .iter()
        .enumerate()
        .map(|(i, &(from_client, flags))| {
            let ts = match i {
                0 => t0,
                i => t0 + answer + (i as u64 - 1) * gap,
            };
            if from_client {
                packet(ts, c, SERVER, TCP, flags)
            } else {
                packet(ts, SERVER, c, TCP, flags)
            }
        })
        .collect()
}

const FIN_FIN_ACK: [(bool, u8); 3] = [(true, FIN | ACK), (false, FIN | ACK), (true, ACK)];

#[test]
fn a_slow_close_is_one_flow_and_lingers_from_the_last_ack() {
    // No active-timeout splits: those follow the clock by design.
    let cfg = TableConfig {
        active_ns: 3_600 * S,
        ..TableConfig::default()
    };
    let (linger, idle, half_open) = (cfg.tcp_linger_ns, cfg.idle_ns, cfg.half_open_ns);
    // Seconds between packets: well past the linger, inside the idle timeout.
    for gap in [3 * S, 20 * S, idle - 1] {
        let mut t = table(cfg.clone());
        let pkts = connection(S, gap.min(half_open - 1), gap, CLIENT.1, &FIN_FIN_ACK);
        let ack = pkts.last().unwrap().ts_ns;
        let mut out = paced(&mut t, &pkts);
        out.extend(feed(&mut t, &[Event::Tick(ack + linger - 1)]));
        assert!(out.is_empty(), "gap {gap}: {out:?}");
        out.extend(feed(&mut t, &[Event::Tick(ack + linger)]));
        assert_eq!(out.len(), 1, "gap {gap}: {out:?}");
        let r = &out[0];
        assert_eq!(r.end_reason, EndReason::Fin);
        assert_eq!((r.fwd_packets, r.rev_packets), (5, 3), "gap {gap}");
        assert_eq!((r.first_ns, r.last_ns), (S, ack));
        assert_eq!(t.len(), 0);
    }
}

#[test]
fn retransmissions_join_within_the_linger_after_the_last_ack_and_not_after() {
    let cfg = TableConfig::default();
    let linger = cfg.tcp_linger_ns;
    let mut t = table(cfg);
    let mut pkts = connection(S, 5 * S, 5 * S, CLIENT.1, &FIN_FIN_ACK);
    let ack = pkts.last().unwrap().ts_ns;
    // A duplicate of the second FIN inside the linger, then one after it.
    pkts.push(packet(ack + linger - 1, SERVER, CLIENT, TCP, FIN | ACK));
    pkts.push(packet(ack + 2 * linger, SERVER, CLIENT, TCP, FIN | ACK));
    let mut out = paced(&mut t, &pkts);
    out.extend(feed(&mut t, &[Event::Finish(EndReason::EndOfInput)]));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].end_reason, EndReason::Fin);
    assert_eq!((out[0].fwd_packets, out[0].rev_packets), (5, 4));
    assert_eq!(out[1].end_reason, EndReason::EndOfInput);
    assert_eq!(out[1].fwd_packets + out[1].rev_packets, 1);
}

#[test]
fn without_the_last_ack_a_close_waits_for_it_then_ends_as_fin() {
    let cfg = TableConfig::default();
    let wait = cfg.last_ack_ns;
    let mut t = table(cfg);
    // The second FIN is sent again (its sender still waits for the ACK):
    // that is not the ACK, and it joins the flow.
    let mut pkts = connection(S, S, S, CLIENT.1, &[(true, FIN | ACK), (false, FIN | ACK)]);
    let retransmit = pkts.last().unwrap().ts_ns + 10 * S;
    pkts.push(packet(retransmit, SERVER, CLIENT, TCP, FIN | ACK));
    let mut out = paced(&mut t, &pkts);
    out.extend(feed(&mut t, &[Event::Tick(retransmit + wait - 1)]));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(t.len(), 1);
    out.extend(feed(&mut t, &[Event::Tick(retransmit + wait)]));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].end_reason, EndReason::Fin);
    assert_eq!((out[0].fwd_packets, out[0].rev_packets), (4, 4));
    assert_eq!(out[0].last_ns, retransmit);
}

#[test]
fn the_last_ack_must_come_from_the_side_of_the_first_fin() {
    let cfg = TableConfig::default();
    let linger = cfg.tcp_linger_ns;
    let mut t = table(cfg);
    // The server closes first, so the server ACKs the client's FIN; the
    // client's own ACK after its FIN does not end the wait.
    let pkts = connection(
        S,
        5 * S,
        5 * S,
        CLIENT.1,
        &[
            (false, FIN | ACK),
            (true, FIN | ACK),
            (true, ACK),
            (false, ACK),
        ],
    );
    let (wrong, ack) = (pkts[pkts.len() - 2].ts_ns, pkts[pkts.len() - 1].ts_ns);
    assert!(ack > wrong + linger);
    let mut out = paced(&mut t, &pkts);
    out.extend(feed(&mut t, &[Event::Tick(ack + linger - 1)]));
    assert!(out.is_empty(), "{out:?}");
    out.extend(feed(&mut t, &[Event::Tick(ack + linger)]));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].fwd_packets, out[0].rev_packets), (5, 4));
}

#[test]
fn an_rst_ends_at_once_and_absorbs_its_followers() {
    let cfg = TableConfig::default();
    let linger = cfg.tcp_linger_ns;
    let mut t = table(cfg);
    let mut pkts = connection(S, 5 * S, 5 * S, CLIENT.1, &[(false, RST | ACK)]);
    let rst = pkts.last().unwrap().ts_ns;
    pkts.push(packet(rst + linger - 1, CLIENT, SERVER, TCP, ACK));
    let mut out = paced(&mut t, &pkts);
    out.extend(feed(&mut t, &[Event::Tick(rst + 2 * linger - 2)]));
    assert!(out.is_empty(), "{out:?}");
    out.extend(feed(&mut t, &[Event::Tick(rst + 2 * linger - 1)]));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].end_reason, EndReason::Rst);
    assert_eq!((out[0].fwd_packets, out[0].rev_packets), (4, 3));
}

#[test]
fn a_syn_ack_later_than_the_half_open_timeout_joins_its_syn() {
    let cfg = TableConfig::default();
    let half_open = cfg.half_open_ns;
    // No tick between SYN and SYN-ACK: the SYN's entry is still there.
    let mut t = table(cfg.clone());
    let pkts = connection(S, half_open + S, S, CLIENT.1, &FIN_FIN_ACK);
    let mut out = Vec::new();
    for p in &pkts {
        t.handle(Event::Packet(p), &mut out);
    }
    out.extend(feed(&mut t, &[Event::Finish(EndReason::EndOfInput)]));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].fwd_packets, out[0].rev_packets), (5, 3));
    assert_eq!(out[0].end_reason, EndReason::Fin);
    // A lone SYN still ends at the half-open timeout: once it is gone the
    // SYN-ACK begins a flow of its own.
    let mut t = table(cfg);
    let syn = packet(S, CLIENT, SERVER, TCP, SYN);
    let syn_ack = packet(S + half_open + S, SERVER, CLIENT, TCP, SYN | ACK);
    let out = feed(
        &mut t,
        &[
            Event::Packet(&syn),
            Event::Tick(S + half_open),
            Event::Packet(&syn_ack),
            Event::Finish(EndReason::EndOfInput),
        ],
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].end_reason, EndReason::Idle);
    assert_eq!(out[0].last_ns, S);
}

/// Interleaved connections, each with seconds to a minute between its
/// packets (or microseconds): the records are the same but for time. (A
/// SYN-ACK comes within the half-open timeout: a lone SYN still ends there.)
#[test]
fn records_do_not_depend_on_the_pace_of_the_packets() {
    let closes: [&[(bool, u8)]; 5] = [
        &FIN_FIN_ACK,
        &[(false, FIN | ACK), (true, FIN | ACK), (false, ACK)],
        &[
            (true, FIN | ACK),
            (false, ACK),
            (false, FIN | ACK),
            (true, ACK),
        ],
        &[(true, RST | ACK)],
        &[(true, FIN | ACK), (false, RST)],
    ];
    let run = |scale: u64, divide: u64| {
        // No active-timeout splits: those follow the clock by design.
        let cfg = TableConfig {
            active_ns: 3_600 * S,
            ..TableConfig::default()
        };
        let (most, answer) = (cfg.idle_ns - 1, cfg.half_open_ns - 1);
        let mut rng = Rng::new(7);
        let mut pkts = Vec::new();
        for i in 0..200u16 {
            let gap = (rng.below(most / S) * S + rng.below(S)).max(1);
            let start = u64::from(i) * S;
            let close = closes[usize::from(i) % closes.len()];
            let at = |d: u64| d * scale / divide;
            let c = connection(
                S + at(start),
                at(gap.min(answer)),
                at(gap),
                20_000 + i,
                close,
            );
            pkts.extend(c);
        }
        pkts.sort_by_key(|p| p.ts_ns);
        let mut t = table(cfg);
        let mut out = paced(&mut t, &pkts);
        out.extend(feed(&mut t, &[Event::Finish(EndReason::EndOfInput)]));
        let mut v: Vec<_> = out
            .into_iter()
            .map(|r| {
                let ports = (r.src_port, r.dst_port);
                let counts = (
                    r.fwd_packets,
                    r.rev_packets,
                    r.fwd_tcp_flags,
                    r.rev_tcp_flags,
                );
                (ports, counts, r.end_reason, r.segment, r.is_final)
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    let slow = run(1, 1);
    let fast = run(1, 100_000);
    assert_eq!(slow.len(), 200, "one record per connection: {slow:?}");
    assert_eq!(slow, fast);
}

#[test]
fn a_finished_table_gives_its_storage_back_and_still_takes_flows() {
    let mut t = table(TableConfig::default());
    let pkts: Vec<Packet> = (0..1000u16)
        .map(|i| packet(S, CLIENT, ([93, 184, 216, 34], i), UDP, 0))
        .collect();
    let events: Vec<Event<'_>> = pkts.iter().map(Event::Packet).collect();
    feed(&mut t, &events);
    assert_eq!(t.len(), 1000);
    let out = feed(&mut t, &[Event::Finish(EndReason::EndOfInput)]);
    assert_eq!(out.len(), 1000);
    assert_eq!(out.capacity(), 1000, "the finish reserves exactly");
    assert_eq!((t.len(), t.storage()), (0, (0, 0)));
    // Taken again afterwards as a new table would.
    let p = packet(2 * S, CLIENT, SERVER, UDP, 0);
    let out = feed(
        &mut t,
        &[Event::Packet(&p), Event::Finish(EndReason::EndOfInput)],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fwd_packets, 1);
}

/// The slab is reserved for the table's bound, so it never moves (and never
/// leaves a copy behind) while it fills; past the bound, eviction reuses
/// slots. A bound too large to reserve is reserved only in part. A table
/// that grows instead (Windows) starts empty and ends the same flows.
#[test]
fn a_table_fills_to_its_bound_without_moving_its_slab() {
    let cfg = TableConfig {
        max_flows: 3000,
        emergency_at: 3000,
        ..TableConfig::default()
    };
    let mut t = FlowTable::growing(cfg.clone(), Arc::new(LocalNets::default()));
    assert_eq!(t.storage(), (0, 0));
    let pkts: Vec<Packet> = (0..4000u16)
        .map(|i| packet(S + u64::from(i), CLIENT, ([93, 184, 216, 34], i), UDP, 0))
        .collect();
    let events: Vec<Event<'_>> = pkts.iter().map(Event::Packet).collect();
    let grown = feed(&mut t, &events);
    if cfg!(windows) {
        // Tables grow there (see `RESERVE_UP_FRONT`): what was just run.
        return;
    }
    let mut t = table(cfg);
    let reserved = t.storage();
    assert_eq!(reserved, (3000, 3000));
    let out = feed(&mut t, &events);
    assert_eq!((t.len(), out.len()), (3000, 1000), "1000 evicted");
    assert_eq!(t.storage(), reserved);
    assert_eq!(out, grown, "a grown table ends the same flows");
    let (cap, _) = table(TableConfig::default()).storage();
    assert!((1 << 16..1 << 20).contains(&cap), "{cap}");
}

/// IPv4, IPv6 (addresses held apart from the flow), VLANs, ICMP, a gap and
/// active splits: a table restored from a snapshot taken midway gives the
/// records and the final snapshot the original gives, byte for byte.
#[test]
fn snapshots_of_mixed_flows_restore_exactly() {
    let cfg = TableConfig {
        active_ns: 5 * S,
        ..TableConfig::default()
    };
    let mut rng = Rng::new(5);
    let pkts: Vec<Packet> = (0..4000u64)
        .map(|i| {
            let v6 = rng.below(5) == 0;
            let proto = [TCP, UDP, ICMP][rng.below(3) as usize];
            let mut key = FlowKey {
                src_port: rng.below(50) as u16,
                dst_port: 443,
                proto,
                ip_version: if v6 { 6 } else { 4 },
                vlan: (rng.below(10) == 0).then(|| rng.below(4000) as u16),
                ..FlowKey::default()
            };
            let n = if v6 { 16 } else { 4 };
            for b in &mut key.src[..n] {
                *b = rng.below(4) as u8;
            }
            for b in &mut key.dst[..n] {
                *b = 9 + rng.below(2) as u8;
            }
            let d = Decoded {
                key,
                ip_bytes: 60 + rng.below(1000) as u32,
                tcp_flags: [SYN, ACK, FIN | ACK, RST, SYN | ACK][rng.below(5) as usize],
                icmp: (proto == ICMP).then_some((8, 0)),
                fragment: Fragment::None,
            };
            Packet::new(i * S / 50, &d)
        })
        .collect();
    let run = |t: &mut FlowTable, pkts: &[Packet], out: &mut Vec<FlowRecord>| {
        for (i, p) in pkts.iter().enumerate() {
            if i == 1000 {
                t.handle(
                    Event::Gap {
                        start: 10 * S,
                        end: 12 * S,
                    },
                    out,
                );
            }
            t.handle(Event::Packet(p), out);
            if i % 100 == 0 {
                t.handle(Event::Tick(p.ts_ns), out);
            }
        }
    };
    let (head, tail) = pkts.split_at(2500);
    let mut a = table(cfg.clone());
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    run(&mut a, head, &mut first);
    let snap = rmp_serde::to_vec(&a.snapshot()).unwrap();
    let mut b = FlowTable::restore(
        cfg,
        Arc::new(LocalNets::default()),
        rmp_serde::from_slice(&snap).unwrap(),
    );
    assert_eq!(rmp_serde::to_vec(&b.snapshot()).unwrap(), snap);
    run(&mut a, tail, &mut rest);
    let mut again = Vec::new();
    run(&mut b, tail, &mut again);
    assert!(
        first.len() > 100 && rest.len() > 100,
        "{} {}",
        first.len(),
        rest.len()
    );
    assert!(rest.iter().any(|r| r.ip_version == 6 && r.vlan.is_some()));
    assert_eq!(rest, again);
    assert_eq!(
        rmp_serde::to_vec(&a.snapshot()).unwrap(),
        rmp_serde::to_vec(&b.snapshot()).unwrap()
    );
    a.handle(Event::Finish(EndReason::EndOfInput), &mut rest);
    b.handle(Event::Finish(EndReason::EndOfInput), &mut again);
    assert_eq!(rest, again);
}
