//! Capture formats, link types, truncation and corruption, decoding edge cases:
//! hand-built captures through the real `vmflow replay`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::IpAddr;

fn fid(proto: u8, src: &str, sp: u16, dst: &str, dp: u16, first: u64, vlan: Option<u16>) -> u64 {
    let s: IpAddr = src.parse().unwrap();
    let d: IpAddr = dst.parse().unwrap();
    vmflow_proto::flow_id(vlan, proto, s, sp, d, dp, first)
}

/// The records `tcp_conversation(T0)` + `mixed(T0 + 1 s)` must give.
fn golden(vlan: Option<u16>) -> Vec<Value> {
    let t1 = T0 + S;
    sorted(vec![
        json!({"flow_id": fid(6, "10.0.0.1", 40000, "198.51.100.7", 443, T0, vlan), "segment": 0, "final": true,
               "ip_version": 4, "proto": 6, "vlan": vlan, "src_addr": "10.0.0.1", "src_port": 40000,
               "dst_addr": "198.51.100.7", "dst_port": 443, "direction": "outbound",
               "first_ns": T0, "last_ns": T0 + 8 * MS, "fwd_packets": 5, "fwd_bytes": 500,
               "rev_packets": 4, "rev_bytes": 2108, "fwd_tcp_flags": 0x1b, "rev_tcp_flags": 0x1b,
               "icmp_type": null, "icmp_code": null, "end_reason": "fin"}),
        json!({"flow_id": fid(17, "fd00::1", 5353, "2001:db8::2", 53, t1, vlan), "segment": 0, "final": true,
               "ip_version": 6, "proto": 17, "vlan": vlan, "src_addr": "fd00::1", "src_port": 5353,
               "dst_addr": "2001:db8::2", "dst_port": 53, "direction": "outbound",
               "first_ns": t1, "last_ns": t1 + MS, "fwd_packets": 1, "fwd_bytes": 88,
               "rev_packets": 1, "rev_bytes": 168, "fwd_tcp_flags": 0, "rev_tcp_flags": 0,
               "icmp_type": null, "icmp_code": null, "end_reason": "end_of_input"}),
        json!({"flow_id": fid(1, "10.0.0.1", 77, "198.51.100.7", 77, t1 + 2 * MS, vlan), "segment": 0, "final": true,
               "ip_version": 4, "proto": 1, "vlan": vlan, "src_addr": "10.0.0.1", "src_port": 77,
               "dst_addr": "198.51.100.7", "dst_port": 77, "direction": "outbound",
               "first_ns": t1 + 2 * MS, "last_ns": t1 + 3 * MS, "fwd_packets": 1, "fwd_bytes": 84,
               "rev_packets": 1, "rev_bytes": 84, "fwd_tcp_flags": 0, "rev_tcp_flags": 0,
               "icmp_type": 8, "icmp_code": 0, "end_reason": "end_of_input"}),
    ])
}

fn sample() -> Vec<Pkt> {
    let mut p = tcp_conversation(T0);
    p.extend(mixed(T0 + S));
    p
}

fn replay_ok(files: &[std::path::PathBuf], extra: &[&str]) -> (Vec<Value>, String) {
    let (recs, err, ok) = replay(files, extra);
    assert!(ok, "replay failed: {err}");
    (sorted(recs), err)
}

#[test]
fn golden_records_from_ethernet_pcap() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "x.cap",
        &pcap(&frames(&sample(), Link::Ethernet), false, false),
    );
    let (recs, err) = replay_ok(&[f], &[]);
    assert_eq!(recs, golden(None));
    assert_eq!(summary(&err, "packets"), Some(13));
    assert_eq!(summary(&err, "skipped"), Some(0));
    assert_eq!(summary(&err, "flows"), Some(3));
}

#[test]
fn every_file_format_gives_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let fr = frames(&sample(), Link::Ethernet);
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("pcap-le-us", pcap(&fr, false, false)),
        ("pcap-be-us", pcap(&fr, true, false)),
        ("pcap-le-ns", pcap(&fr, false, true)),
        ("pcap-be-ns", pcap(&fr, true, true)),
        ("pcapng-le-us", pcapng(&fr, false, &[6], 0)),
        ("pcapng-be-ns", pcapng(&fr, true, &[9], 0)),
        ("pcapng-le-100ps", pcapng(&fr, false, &[10], 0)),
        ("netmon-2.0", netmon(&fr, 0, true)),
        ("netmon-2.1", netmon(&fr, 1, true)),
        ("netmon-2.2", netmon(&fr, 2, true)),
        ("netmon-2.3", netmon(&fr, 3, true)),
        ("netmon-2.3-no-frame-table", netmon(&fr, 3, false)),
    ];
    for (name, bytes) in variants {
        // Names say nothing: the format comes from the magic.
        let f = write(dir.path(), &format!("{name}.cap"), &bytes);
        let (recs, err) = replay_ok(&[f], &[]);
        assert_eq!(recs, golden(None), "{name}: {err}");
        assert_eq!(summary(&err, "warnings"), Some(0), "{name}: {err}");
    }
}

#[test]
fn pcapng_with_several_interfaces_and_resolutions() {
    let dir = tempfile::tempdir().unwrap();
    // TCP on Ethernet, the rest on raw IP: two interfaces, µs and ms resolution.
    let mut fr = frames(&tcp_conversation(T0), Link::Ethernet);
    fr.extend(frames(&mixed(T0 + S), Link::Raw));
    let f = write(dir.path(), "multi.pcapng", &pcapng(&fr, false, &[6, 3], 0));
    let (recs, _) = replay_ok(&[f], &[]);
    assert_eq!(recs, golden(None));
}

#[test]
fn pcapng_simple_packet_blocks_take_the_previous_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    // Whole frames (no payload), the second at the same instant as the first.
    let pk = vec![
        tcp4(T0, true, SYN, 0),
        tcp4(T0, true, SYN, 0),
        tcp4(T0 + MS, false, SYN | ACK, 0),
    ];
    let fr = frames(&pk, Link::Ethernet);
    let ng = pcapng(&fr, false, &[6], 2);
    let plain = pcap(&fr, false, false);
    let a = write(dir.path(), "spb.pcapng", &ng);
    let b = write(dir.path(), "plain.pcap", &plain);
    let (ra, ea) = replay_ok(&[a], &[]);
    let (rb, _) = replay_ok(&[b], &[]);
    assert_eq!(summary(&ea, "packets"), Some(3));
    assert_eq!(ra, rb);
    // The SPB really is in the file: block type 3 after the first EPB.
    assert!(ng.windows(4).any(|w| w == [3, 0, 0, 0]));
}

#[test]
fn every_link_type_gives_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    for link in [
        Link::Ethernet,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::Raw4or6,
        Link::NullLe,
        Link::NullBe,
        Link::Loop,
    ] {
        let f = write(
            dir.path(),
            "l.pcapng",
            &pcapng(&frames(&sample(), link), false, &[6], 0),
        );
        let (recs, err) = replay_ok(&[f], &[]);
        assert_eq!(recs, golden(None), "{link:?}: {err}");
    }
}

#[test]
fn stacked_vlan_tags_record_the_outermost_id() {
    let dir = tempfile::tempdir().unwrap();
    let qinq = Link::Vlan(&[(0x88a8, 300), (0x8100, 42)]);
    let f = write(
        dir.path(),
        "q.pcap",
        &pcap(&frames(&sample(), qinq), false, false),
    );
    let (recs, _) = replay_ok(&[f], &[]);
    assert_eq!(recs, golden(Some(300)));
    let dot1q = Link::Vlan(&[(0x8100, 7)]);
    let f = write(
        dir.path(),
        "v.pcap",
        &pcap(&frames(&sample(), dot1q), false, false),
    );
    let (recs, _) = replay_ok(&[f], &[]);
    assert_eq!(recs, golden(Some(7)));
}

#[test]
fn unsupported_link_types_are_counted_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = frames(&sample(), Link::Ethernet);
    for f in fr.iter_mut().take(4) {
        f.linktype = 105; // IEEE 802.11
    }
    let f = write(dir.path(), "wifi.pcapng", &pcapng(&fr, false, &[6], 0));
    let (_, err) = replay_ok(&[f], &[]);
    assert!(err.contains("skipped.unsupported_linktype_105=4"), "{err}");
    assert_eq!(summary(&err, "flow_packets"), Some(9));
}

#[test]
fn a_file_cut_mid_record_yields_every_complete_record_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let all = frames(&sample(), Link::Ethernet);
    let complete = &all[..all.len() - 1];
    for (name, whole, part) in [
        (
            "pcap",
            pcap(&all, false, false),
            pcap(complete, false, false),
        ),
        (
            "pcapng",
            pcapng(&all, false, &[6], 0),
            pcapng(complete, false, &[6], 0),
        ),
        ("netmon", netmon(&all, 3, false), netmon(complete, 3, false)),
    ] {
        // Cut 5 bytes into the last record's data.
        let cut_at = part.len() + if name == "pcapng" { 8 } else { 21 };
        let cut = write(dir.path(), &format!("cut.{name}"), &whole[..cut_at]);
        let reference = write(dir.path(), &format!("ref.{name}"), &part);
        let (got, err) = replay_ok(std::slice::from_ref(&cut), &[]);
        let (want, _) = replay_ok(&[reference], &[]);
        assert_eq!(got, want, "{name}");
        assert!(!got.is_empty());
        assert_eq!(
            summary(&err, "packets"),
            Some(complete.len() as u64),
            "{name}: {err}"
        );
        assert!(
            err.contains(&format!("offset {}", part.len())),
            "{name}: {err}"
        );
        assert!(err.contains(&cut.display().to_string()), "{name}: {err}");
    }
    // A whole file too short for a header is not a capture: an error that
    // names it, before any run (no summary), as for a missing file and an
    // empty one.
    let tiny = write(dir.path(), "tiny.cap", &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]);
    let empty = write(dir.path(), "empty.cap", &[]);
    let missing = dir.path().join("missing.cap");
    for (f, why) in [
        (&tiny, "not a capture: pcap header cut"),
        (&empty, "not a capture"),
        (&missing, "No such file"),
    ] {
        let (got, err, ok) = replay(std::slice::from_ref(f), &[]);
        assert!(!ok && got.is_empty(), "{err}");
        assert!(
            err.contains(&f.display().to_string()) && err.contains(why),
            "{err}"
        );
        assert!(
            !err.contains("packets="),
            "no summary of a run that never started: {err}"
        );
    }
}

#[test]
fn corrupt_input_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let fr = frames(&sample(), Link::Ethernet);
    let mut bytes = pcap(&fr, false, false);
    // Third record's incl_len: header (24) + two records.
    let third = 24 + 2 * 16 + fr[0].data.len() + fr[1].data.len();
    bytes[third + 8..third + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let f = write(dir.path(), "bad.pcap", &bytes);
    let (recs, err, ok) = replay(std::slice::from_ref(&f), &[]);
    assert!(!ok);
    assert!(
        err.contains(&f.display().to_string()) && err.contains(&format!("offset {third}")),
        "{err}"
    );
    // What came before the corruption is still reported (one open TCP flow).
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["end_reason"], "end_of_input");
    assert_eq!(recs[0]["fwd_packets"], 1);
    assert_eq!(recs[0]["rev_packets"], 1);

    let junk = write(dir.path(), "junk.cap", b"this is not a capture file at all");
    let (_, err, ok) = replay(std::slice::from_ref(&junk), &[]);
    assert!(
        !ok && err.contains(&junk.display().to_string()) && err.contains("74 68 69 73"),
        "{err}"
    );

    let mut ng = pcapng(&fr, false, &[6], 0);
    ng[4..8].copy_from_slice(&13u32.to_le_bytes());
    let badng = write(dir.path(), "bad.pcapng", &ng);
    let (_, err, ok) = replay(&[badng], &[]);
    assert!(
        !ok && err.contains("offset 0") && err.contains("block length 13"),
        "{err}"
    );

    let mut nm = netmon(&fr, 2, true);
    nm[5] = 1;
    nm[..4].copy_from_slice(b"RTSS");
    let old = write(dir.path(), "old.cap", &nm);
    let (_, err, ok) = replay(&[old], &[]);
    assert!(!ok && err.contains("1.x"), "{err}");
}

// ---- decoding edge cases ------------------------------------------------------

fn one(pkts: Vec<Pkt>, link: Link, extra: &[&str]) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "e.pcapng",
        &pcapng(&frames(&pkts, link), false, &[9], 0),
    );
    replay_ok(&[f], extra)
}

#[test]
fn ipv4_options_and_zero_total_length() {
    let opts = [1, 1, 1, 0]; // NOP NOP NOP EOL
    let ip = ipv4(A, B, 17, &udp(1000, 2000, 10), 18, &opts, 5, 0);
    let mut tso = ipv4(A, B, 6, &tcp(40_000, 443, ACK), 20 + 9000, &[], 6, 0);
    tso[2..4].copy_from_slice(&[0, 0]); // offload leaves 0 in captures
    let pkts = vec![
        Pkt {
            ts_ns: T0,
            ip,
            ip_len: 42,
        },
        Pkt {
            ts_ns: T0 + MS,
            ip: tso,
            ip_len: 20 + 20 + 9000,
        },
        // SCTP has no pnet view: its ports are read by hand.
        Pkt {
            ts_ns: T0 + 2 * MS,
            ip: ipv4(
                A,
                B,
                132,
                &[0x0b, 0x59, 0x0b, 0x5a, 0, 0, 0, 0, 0, 0, 0, 0],
                12,
                &[],
                7,
                0,
            ),
            ip_len: 32,
        },
    ];
    let (recs, _) = one(pkts, Link::Ethernet, &[]);
    let sctp = recs.iter().find(|r| r["proto"] == 132).unwrap();
    assert_eq!(
        (sctp["src_port"].clone(), sctp["dst_port"].clone()),
        (json!(2905), json!(2906))
    );
    let udp = recs.iter().find(|r| r["proto"] == 17).unwrap();
    assert_eq!(
        (
            udp["src_port"].clone(),
            udp["dst_port"].clone(),
            udp["fwd_bytes"].clone()
        ),
        (json!(1000), json!(2000), json!(42))
    );
    // Total length 0: the wire length minus the 14-byte Ethernet header.
    let tcp = recs.iter().find(|r| r["proto"] == 6).unwrap();
    assert_eq!(tcp["fwd_bytes"], 9040);
}

fn frag4(id: u16, off8: u16, mf: bool, l4: &[u8], l4_len: usize, ts: u64) -> Pkt {
    let flags = off8 | if mf { 0x2000 } else { 0 };
    Pkt {
        ts_ns: ts,
        ip: ipv4(A, B, 17, l4, l4_len, &[], id, flags),
        ip_len: (20 + l4_len) as u32,
    }
}

#[test]
fn ipv4_fragments_join_their_flow_in_any_order() {
    // A 3000-byte UDP datagram in three fragments: 1480 + 1480 + 48 bytes of IP payload.
    let first = |ts| frag4(99, 0, true, &udp(5000, 6000, 3000), 1480, ts);
    let mid = |ts| frag4(99, 185, true, &[0xde, 0xad, 0xbe, 0xef], 1480, ts);
    let last = |ts| frag4(99, 370, false, &[1, 2, 3, 4], 48, ts);
    for (order, pkts) in [
        ("in order", vec![first(T0), mid(T0 + 1), last(T0 + 2)]),
        ("first last", vec![mid(T0), last(T0 + 1), first(T0 + 2)]),
    ] {
        let (recs, err) = one(pkts, Link::Ethernet, &[]);
        assert_eq!(recs.len(), 1, "{order}: {recs:?}");
        let r = &recs[0];
        assert_eq!(
            (r["src_port"].clone(), r["dst_port"].clone()),
            (json!(5000), json!(6000)),
            "{order}"
        );
        assert_eq!(r["fwd_packets"], 3);
        assert_eq!(r["fwd_bytes"], 1500 + 1500 + 68);
        assert_eq!(summary(&err, "frag_later"), Some(2));
        assert_eq!(summary(&err, "frag_orphaned"), Some(0));
    }
    // Without the first fragment the ports are unknown: zero, never guessed
    // from the payload bytes (which here look like ports 0xdead/0xbeef).
    let (recs, err) = one(vec![mid(T0), last(T0 + 1)], Link::Ethernet, &[]);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0]["src_port"].clone(), recs[0]["dst_port"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(recs[0]["fwd_packets"], 2);
    assert_eq!(summary(&err, "frag_orphaned"), Some(2));
}

fn v6(last: u8, local: bool) -> [u8; 16] {
    let mut a = [0u8; 16];
    if local {
        a[..2].copy_from_slice(&[0xfd, 0]);
    } else {
        a[..4].copy_from_slice(&[0x20, 1, 0x0d, 0xb8]);
    }
    a[15] = last;
    a
}

#[test]
fn ipv6_extension_headers() {
    let t = tcp(41_000, 22, SYN);
    // hop-by-hop (8) → destination options (8) → routing (8) → AH (16) → TCP.
    let mut chain = vec![60, 0, 0, 0, 0, 0, 0, 0];
    chain.extend_from_slice(&[43, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&[6, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    chain.extend_from_slice(&t);
    let plen = chain.len();
    let p1 = Pkt {
        ts_ns: T0,
        ip: ipv6(v6(1, true), v6(2, false), 0, &chain, plen),
        ip_len: 40 + plen as u32,
    };
    // A fragmented UDP datagram: first fragment (offset 0, M) then the last one.
    let mut f1 = vec![17, 0, 0, 1, 0, 0, 0x12, 0x34];
    f1.extend_from_slice(&udp(7000, 8000, 2000));
    let p2 = Pkt {
        ts_ns: T0 + MS,
        ip: ipv6(v6(1, true), v6(2, false), 44, &f1, 1240),
        ip_len: 1280,
    };
    let f2 = vec![17, 0, 0x04, 0xd0, 0, 0, 0x12, 0x34, 9, 9, 9, 9];
    let p3 = Pkt {
        ts_ns: T0 + 2 * MS,
        ip: ipv6(v6(1, true), v6(2, false), 44, &f2, 784),
        ip_len: 824,
    };
    let (recs, err) = one(vec![p1, p2, p3], Link::Ethernet, &[]);
    assert_eq!(summary(&err, "skipped"), Some(0), "{err}");
    let tcp = recs.iter().find(|r| r["proto"] == 6).expect("tcp flow");
    assert_eq!(
        (
            tcp["src_port"].clone(),
            tcp["dst_port"].clone(),
            tcp["fwd_tcp_flags"].clone()
        ),
        (json!(41000), json!(22), json!(2))
    );
    let udp = recs.iter().find(|r| r["proto"] == 17).expect("udp flow");
    assert_eq!(
        (
            udp["src_port"].clone(),
            udp["fwd_packets"].clone(),
            udp["fwd_bytes"].clone()
        ),
        (json!(7000), json!(2), json!(2104))
    );
    assert_eq!(recs.len(), 2);
}

#[test]
fn malformed_packets_are_counted_by_reason() {
    let good = tcp4(T0, true, SYN, 0);
    let mut bad_ihl = good.ip.clone();
    bad_ihl[0] = 0x43;
    let cut_ip = good.ip[..10].to_vec();
    let mut bad_version = good.ip.clone();
    bad_version[0] = 0x55;
    let cut_tcp = ipv4(A, B, 6, &[0x9c], 20, &[], 1, 0);
    let v6_cut_ext = ipv6(v6(1, true), v6(2, false), 0, &[6], 8);
    let pkts: Vec<Pkt> = [
        bad_ihl,
        cut_ip,
        bad_version,
        cut_tcp,
        v6_cut_ext,
        good.ip.clone(),
    ]
    .into_iter()
    .map(|ip| Pkt {
        ts_ns: T0,
        ip,
        ip_len: 40,
    })
    .collect();
    let (recs, err) = one(pkts.clone(), Link::Raw, &[]);
    for reason in [
        "bad_ip_header=1",
        "truncated_ip=1",
        "bad_ip_version=1",
        "truncated_transport=1",
        "bad_extension_headers=1",
    ] {
        assert!(
            err.contains(&format!("skipped.{reason}")),
            "{reason}: {err}"
        );
    }
    assert_eq!(recs.len(), 1);
    // ARP on Ethernet is not IP; a frame cut inside the Ethernet header is truncated.
    let dir = tempfile::tempdir().unwrap();
    let arp = Frame {
        ts_ns: T0,
        data: {
            let mut d = vec![0xff; 12];
            d.extend_from_slice(&[0x08, 0x06]);
            d.extend_from_slice(&[0; 28]);
            d
        },
        orig_len: 42,
        linktype: 1,
    };
    let runt = Frame {
        ts_ns: T0,
        data: vec![1, 2, 3, 4, 5, 6, 7],
        orig_len: 60,
        linktype: 1,
    };
    let f = write(dir.path(), "l2.pcap", &pcap(&[arp, runt], false, false));
    let (_, err) = replay_ok(&[f], &[]);
    assert!(
        err.contains("skipped.non_ip=1") && err.contains("skipped.truncated_link=1"),
        "{err}"
    );
}

#[test]
fn out_of_order_timestamps_stay_in_their_flow() {
    let pkts = vec![
        tcp4(T0 + 10 * MS, true, SYN, 0),
        tcp4(T0 + 12 * MS, false, SYN | ACK, 0),
        tcp4(T0 + 5 * MS, true, ACK, 0),
    ];
    let (recs, _) = one(pkts, Link::Ethernet, &[]);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["first_ns"], T0 + 5 * MS);
    assert_eq!(recs[0]["last_ns"], T0 + 12 * MS);
    assert_eq!(recs[0]["fwd_packets"], 2);
}
