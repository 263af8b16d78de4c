//! The flow record contract: initiator, TCP ending and linger, timeouts,
//! segments, port reuse, table bounds, direction.

mod common;

use common::*;
use serde_json::Value;

fn run_pkts(pkts: Vec<Pkt>, extra: &[&str], config: Option<&str>) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "s.pcap",
        &pcap(&frames(&pkts, Link::Ethernet), false, true),
    );
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if let Some(c) = config {
        let cfg = write(dir.path(), "c.toml", c.as_bytes());
        args.push("--config".into());
        args.push(cfg.display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (recs, err, ok) = replay(&[f], &refs);
    assert!(ok, "{err}");
    let mut recs = recs;
    recs.sort_by_key(|r| (r["first_ns"].as_u64(), r["segment"].as_u64()));
    (recs, err)
}

fn udp4(ts: u64, fwd: bool, sport: u16) -> Pkt {
    let (s, d, sp, dp) = if fwd {
        (A, B, sport, 53)
    } else {
        (B, A, 53, sport)
    };
    Pkt {
        ts_ns: ts,
        ip: ipv4(s, d, 17, &udp(sp, dp, 20), 28, &[], 3, 0),
        ip_len: 48,
    }
}

#[test]
fn initiator_is_the_syn_sender_or_the_syn_ack_receiver() {
    // The SYN was missed: the SYN-ACK from B names A as the initiator.
    let (recs, _) = run_pkts(
        vec![tcp4(T0, false, SYN | ACK, 0), tcp4(T0 + MS, true, ACK, 0)],
        &[],
        None,
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["src_addr"], "10.0.0.1");
    assert_eq!(recs[0]["fwd_packets"], 1);
    assert_eq!(recs[0]["rev_tcp_flags"], SYN | ACK);
    // No handshake at all: the first packet's sender.
    let (recs, _) = run_pkts(
        vec![tcp4(T0, false, ACK, 100), tcp4(T0 + MS, true, ACK, 0)],
        &[],
        None,
    );
    assert_eq!(recs[0]["src_addr"], "198.51.100.7");
    assert_eq!(recs[0]["direction"], "inbound");
}

#[test]
fn echo_request_and_reply_are_one_flow_started_by_the_requester() {
    let req = |ts| Pkt {
        ts_ns: ts,
        ip: ipv4(A, B, 1, &icmp(8, 0, 5, 1), 64, &[], 1, 0),
        ip_len: 84,
    };
    let rep = |ts| Pkt {
        ts_ns: ts,
        ip: ipv4(B, A, 1, &icmp(0, 0, 5, 1), 64, &[], 1, 0),
        ip_len: 84,
    };
    // The capture starts with a reply: its receiver sent the request.
    let (recs, _) = run_pkts(vec![rep(T0), req(T0 + S), rep(T0 + S + MS)], &[], None);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["src_addr"], "10.0.0.1");
    assert_eq!(
        (
            recs[0]["fwd_packets"].as_u64(),
            recs[0]["rev_packets"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // A different identifier is a different flow.
    let other = Pkt {
        ts_ns: T0 + 2 * S,
        ip: ipv4(A, B, 1, &icmp(8, 0, 6, 1), 64, &[], 1, 0),
        ip_len: 84,
    };
    let (recs, _) = run_pkts(vec![req(T0), rep(T0 + MS), other], &[], None);
    assert_eq!(recs.len(), 2);
}

#[test]
fn linger_absorbs_the_last_ack_and_ends_on_fin() {
    let mut pkts = vec![tcp4(T0, true, SYN, 0), tcp4(T0 + MS, false, SYN | ACK, 0)];
    pkts.push(tcp4(T0 + 2 * MS, true, FIN | ACK, 0));
    pkts.push(tcp4(T0 + 3 * MS, false, FIN | ACK, 0));
    // The last ACK 1.5 s later: inside the 2 s linger.
    pkts.push(tcp4(T0 + 1503 * MS, true, ACK, 0));
    // Later traffic moves packet time well past every timeout.
    pkts.push(udp4(T0 + 200 * S, true, 9));
    let (recs, _) = run_pkts(pkts.clone(), &[], None);
    let tcp: Vec<_> = recs.iter().filter(|r| r["proto"] == 6).collect();
    assert_eq!(tcp.len(), 1, "no appendix flow: {recs:?}");
    assert_eq!(tcp[0]["end_reason"], "fin");
    assert_eq!(tcp[0]["fwd_packets"], 3);
    // The ACK of the second FIN joins however late it is (here past a 1 s
    // linger); the linger counts from it: a duplicate 1.5 s after it, past
    // the linger, forms its own flow.
    pkts.insert(5, tcp4(T0 + 3003 * MS, false, FIN | ACK, 0));
    let (recs, _) = run_pkts(pkts, &[], Some("[flow]\ntcp_linger = 1\n"));
    let tcp: Vec<_> = recs.iter().filter(|r| r["proto"] == 6).collect();
    assert_eq!(tcp.len(), 2, "{recs:?}");
    assert_eq!(tcp[0]["fwd_packets"], 3);
    assert_eq!(tcp[0]["rev_packets"], 2);
    assert_eq!(tcp[0]["end_reason"], "fin");
    assert_eq!(tcp[1]["fwd_packets"], 1);
}

/// A TCP packet between A and B on client port `port`.
fn tcp_on(ts_ns: u64, port: u16, from_client: bool, flags: u8) -> Pkt {
    let (s, d, sp, dp) = if from_client {
        (A, B, port, 443)
    } else {
        (B, A, 443, port)
    };
    Pkt {
        ts_ns,
        ip: ipv4(s, d, 6, &tcp(sp, dp, flags), 20, &[], 1, 0x4000),
        ip_len: 40,
    }
}

/// Connections with seconds between their packets (slow handshakes and
/// closes, past the linger) replay as one record each with every packet, and
/// the same capture with its timing compressed a thousandfold gives the same
/// records but for their times.
#[test]
fn slow_closes_and_handshakes_give_the_records_a_fast_capture_gives() {
    let closes: [&[(bool, u8)]; 4] = [
        &[(true, FIN | ACK), (false, FIN | ACK), (true, ACK)],
        &[
            (false, FIN | ACK),
            (true, ACK),
            (true, FIN | ACK),
            (false, ACK),
        ],
        &[(true, RST | ACK), (true, ACK)],
        &[
            (true, FIN | ACK),
            (false, FIN | ACK),
            (false, FIN | ACK),
            (true, ACK),
        ],
    ];
    let mut pkts = Vec::new();
    let mut want = Vec::new();
    for i in 0..40u16 {
        let port = 30_000 + i;
        let start = T0 + u64::from(i) * 700 * MS;
        // 3 to 6 s between packets: past the 2 s linger, inside the 10 s
        // half-open timeout, and the whole connection inside the 60 s
        // active timeout.
        let gap = (3 + u64::from(i % 4)) * S;
        let mut steps = vec![(true, SYN), (false, SYN | ACK), (true, ACK)];
        steps.extend([(true, PSH | ACK), (false, ACK)]);
        let close = closes[usize::from(i) % closes.len()];
        steps.extend_from_slice(close);
        for (k, &(from_client, flags)) in steps.iter().enumerate() {
            // The RST's follower comes within the linger.
            let at = if flags == ACK && k > 0 && steps[k - 1].1 & RST != 0 {
                start + (k as u64 - 1) * gap + S
            } else {
                start + k as u64 * gap
            };
            pkts.push(tcp_on(at, port, from_client, flags));
        }
        let fwd = steps.iter().filter(|s| s.0).count();
        want.push((u64::from(port), fwd, steps.len() - fwd));
    }
    pkts.sort_by_key(|p| p.ts_ns);
    let shape = |recs: &[Value]| {
        let mut v: Vec<Value> = recs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let o = r.as_object_mut().unwrap();
                for k in ["flow_id", "first_ns", "last_ns"] {
                    o.remove(k);
                }
                r
            })
            .collect();
        v.sort_by_key(|r| r["src_port"].as_u64());
        v
    };
    let (slow, _) = run_pkts(pkts.clone(), &[], None);
    let got: Vec<_> = shape(&slow)
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap() as usize;
            (
                r["src_port"].as_u64().unwrap(),
                n("fwd_packets"),
                n("rev_packets"),
            )
        })
        .collect();
    assert_eq!(got, want, "one record per connection, every packet in it");
    for r in &slow {
        assert_ne!(r["end_reason"], "idle", "{r}");
    }
    let fast: Vec<Pkt> = pkts
        .into_iter()
        .map(|mut p| {
            p.ts_ns = T0 + (p.ts_ns - T0) / 1000;
            p
        })
        .collect();
    let (fast, _) = run_pkts(fast, &[], None);
    assert_eq!(shape(&slow), shape(&fast));
}

#[test]
fn rst_ends_a_flow_and_a_new_syn_reuses_the_ports() {
    let pkts = vec![
        tcp4(T0, true, SYN, 0),
        tcp4(T0 + MS, false, RST | ACK, 0),
        tcp4(T0 + 100 * MS, true, SYN, 0),
        tcp4(T0 + 101 * MS, false, SYN | ACK, 0),
        tcp4(T0 + 102 * MS, true, FIN | ACK, 0),
        tcp4(T0 + 103 * MS, false, FIN | ACK, 0),
        tcp4(T0 + 104 * MS, true, ACK, 0),
        tcp4(T0 + 300 * MS, true, SYN, 0),
    ];
    let (recs, _) = run_pkts(pkts, &[], None);
    let reasons: Vec<_> = recs
        .iter()
        .map(|r| r["end_reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["rst", "fin", "end_of_input"]);
    assert_ne!(recs[0]["flow_id"], recs[1]["flow_id"]);
    assert_eq!(recs[1]["fwd_packets"], 3);
}

#[test]
fn half_open_flows_use_the_short_timeout() {
    let pkts = vec![
        tcp4(T0, true, SYN, 0),
        tcp4(T0 + 3 * S, true, SYN, 0),
        // 11 s after the last SYN: past the 10 s half-open timeout.
        tcp4(T0 + 14 * S, true, SYN, 0),
        udp4(T0 + 30 * S, true, 9),
    ];
    let (recs, err) = run_pkts(pkts, &[], None);
    let tcp: Vec<_> = recs.iter().filter(|r| r["proto"] == 6).collect();
    assert_eq!(tcp.len(), 2, "{err}");
    assert_eq!(tcp[0]["end_reason"], "idle");
    assert_eq!(tcp[0]["fwd_packets"], 2);
    assert_eq!(tcp[1]["end_reason"], "idle");
}

#[test]
fn idle_timeout_splits_flows_and_active_timeout_makes_segments() {
    // A packet every 10 s for 150 s: active timeout 60 s gives three segments.
    let mut pkts: Vec<Pkt> = (0..16)
        .map(|i| udp4(T0 + i * 10 * S, i % 2 == 0, 1234))
        .collect();
    // The same key after 70 s of silence is a new flow.
    pkts.push(udp4(T0 + 220 * S, true, 1234));
    let (recs, _) = run_pkts(pkts, &[], None);
    assert_eq!(recs.len(), 4, "{recs:?}");
    let id = &recs[0]["flow_id"];
    for (i, r) in recs[..3].iter().enumerate() {
        assert_eq!(&r["flow_id"], id);
        assert_eq!(r["segment"], i as u64);
        assert_eq!(r["final"], i == 2);
    }
    assert_eq!(recs[0]["end_reason"], "active");
    assert_eq!(
        (recs[0]["first_ns"].as_u64(), recs[0]["last_ns"].as_u64()),
        (Some(T0), Some(T0 + 50 * S))
    );
    assert_eq!(
        recs[0]["fwd_packets"].as_u64().unwrap() + recs[0]["rev_packets"].as_u64().unwrap(),
        6
    );
    assert_eq!(recs[1]["first_ns"], T0 + 60 * S);
    assert_eq!(recs[2]["end_reason"], "idle");
    assert_eq!(recs[2]["last_ns"], T0 + 150 * S);
    let total: u64 = recs[..3]
        .iter()
        .map(|r| r["fwd_bytes"].as_u64().unwrap() + r["rev_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 16 * 48);
    assert_ne!(&recs[3]["flow_id"], id);
    assert_eq!(recs[3]["segment"], 0);
    assert_eq!(recs[3]["end_reason"], "end_of_input");
}

#[test]
fn a_full_table_evicts_the_least_recently_seen_flow() {
    let pkts = vec![
        udp4(T0, true, 1),
        udp4(T0 + MS, true, 2),
        udp4(T0 + 2 * MS, true, 1),
        udp4(T0 + 3 * MS, true, 3),
    ];
    let cfg = "[flow]\nmax_flows = 2\nemergency_threshold = 1.0\n[pipeline]\npartitions = 1\n";
    let (recs, err) = run_pkts(pkts, &[], Some(cfg));
    assert_eq!(summary(&err, "evicted"), Some(1), "{err}");
    let evicted: Vec<_> = recs
        .iter()
        .filter(|r| r["end_reason"] == "evicted")
        .collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0]["src_port"], 2);
}

#[test]
fn near_the_bound_timeouts_shorten_and_are_counted() {
    // 4 flows in a table of 4 with emergency from 50%: 2 s of silence ends them
    // under the 1 s emergency timeout, not the 60 s one.
    let mut pkts: Vec<Pkt> = (1..=4)
        .map(|p| udp4(T0 + u64::from(p) * MS, true, p))
        .collect();
    pkts.push(udp4(T0 + 3 * S, true, 9));
    let cfg = "[flow]\nmax_flows = 4\nemergency_threshold = 0.5\nemergency_idle_timeout = 1\n[pipeline]\npartitions = 1\nbatch_packets = 1\n";
    let (recs, err) = run_pkts(pkts, &[], Some(cfg));
    let emergency = summary(&err, "emergency_expired").unwrap();
    assert!(emergency >= 3, "{err}");
    assert_eq!(
        recs.iter().filter(|r| r["end_reason"] == "idle").count() as u64,
        emergency
    );
}

#[test]
fn direction_follows_the_local_networks() {
    let pkts = tcp_conversation(T0);
    let (recs, _) = run_pkts(pkts.clone(), &[], None);
    assert_eq!(recs[0]["direction"], "outbound");
    let (recs, _) = run_pkts(pkts.clone(), &["--local-net", "198.51.100.0/24"], None);
    assert_eq!(recs[0]["direction"], "inbound");
    let (recs, _) = run_pkts(
        pkts.clone(),
        &[
            "--local-net",
            "198.51.100.0/24",
            "--local-net",
            "10.0.0.0/8",
        ],
        None,
    );
    assert_eq!(recs[0]["direction"], "internal");
    let (recs, _) = run_pkts(pkts, &["--local-net", "192.0.2.0/24"], None);
    assert_eq!(recs[0]["direction"], "external");
}
