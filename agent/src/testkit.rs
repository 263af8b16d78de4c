//! Things the library's own tests share.

use std::net::IpAddr;

use vmflow_proto::{Decision, Direction, EndReason, FlowRecord, Remote};

use crate::synth::Rng;

/// A plain UDP record with this flow id and start time.
pub fn record(flow_id: u64, first_ns: u64) -> FlowRecord {
    FlowRecord {
        flow_id,
        segment: 0,
        is_final: true,
        ip_version: 4,
        proto: 17,
        vlan: None,
        src_addr: "10.0.0.1".parse().unwrap(),
        src_port: 1,
        dst_addr: "10.0.0.2".parse().unwrap(),
        dst_port: 2,
        direction: Direction::Internal,
        first_ns,
        last_ns: first_ns,
        fwd_packets: 1,
        fwd_bytes: 50,
        rev_packets: 0,
        rev_bytes: 0,
        fwd_tcp_flags: 0,
        rev_tcp_flags: 0,
        icmp_type: None,
        icmp_code: None,
        end_reason: EndReason::Idle,
        gap: false,
        rule: None,
        decision: None,
        remote: None,
    }
}

/// A record with every field random, over its whole range (the writers'
/// tests hold their encoding to serde's); a flow log's `rule`, when there is
/// one, is one of `rules`.
pub fn random_record(rng: &mut Rng, rules: &[&str]) -> FlowRecord {
    let v6 = rng.chance(0.5);
    let addr = |rng: &mut Rng| -> IpAddr {
        if v6 {
            IpAddr::V6((u128::from(rng.next_u64()) << 64 | u128::from(rng.below(3))).into())
        } else {
            IpAddr::V4((rng.next_u64() as u32).into())
        }
    };
    let icmp = rng.chance(0.3);
    FlowRecord {
        flow_id: rng.next_u64(),
        segment: rng.next_u64() as u32,
        is_final: rng.chance(0.5),
        ip_version: if v6 { 6 } else { 4 },
        proto: rng.next_u64() as u8,
        vlan: rng.chance(0.5).then(|| rng.below(4096) as u16),
        src_addr: addr(rng),
        src_port: rng.next_u64() as u16,
        dst_addr: addr(rng),
        dst_port: rng.next_u64() as u16,
        direction: Direction::ALL[rng.below(4) as usize],
        first_ns: rng.next_u64(),
        last_ns: rng.next_u64(),
        fwd_packets: rng.next_u64(),
        fwd_bytes: rng.next_u64(),
        rev_packets: rng.below(10),
        rev_bytes: 0,
        fwd_tcp_flags: rng.next_u64() as u8,
        rev_tcp_flags: rng.next_u64() as u8,
        icmp_type: icmp.then(|| rng.next_u64() as u8),
        icmp_code: icmp.then(|| rng.next_u64() as u8),
        end_reason: EndReason::ALL[rng.below(7) as usize],
        gap: rng.chance(0.1),
        rule: (!rules.is_empty() && rng.chance(0.3))
            .then(|| rules[rng.below(rules.len() as u64) as usize].into()),
        decision: rng
            .chance(0.2)
            .then(|| [Decision::Allow, Decision::Deny][rng.below(2) as usize]),
        remote: rng.chance(0.3).then(|| {
            let name = |rng: &mut Rng| -> Option<String> {
                (!rules.is_empty() && rng.chance(0.7))
                    .then(|| rules[rng.below(rules.len() as u64) as usize].into())
            };
            Box::new(Remote {
                country: rng.chance(0.8).then(|| "NL".into()),
                asn: rng.chance(0.8).then(|| rng.next_u64() as u32),
                as_org: name(rng),
                watchlists: (0..rng.below(3)).filter_map(|_| name(rng)).collect(),
            })
        }),
    }
}

/// The flow id of every record of every hour file in `dir` (`*.ndjson`,
/// each line a whole JSON record; `*.blocks`, each byte in an intact
/// entry), sorted.
pub fn hour_file_ids(fs: &dyn crate::disk::Fs, dir: &std::path::Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for n in fs.list(dir).unwrap() {
        let path = dir.join(&n);
        if n.ends_with(crate::collect::store::BLOCKS_EXT) {
            let (blocks, stats) = block_file(fs, &path);
            assert!(!stats.damaged(), "{n}: {stats:?}");
            ids.extend(blocks.iter().flatten().map(|r| r.flow_id));
            continue;
        }
        if !n.ends_with(".ndjson") {
            continue;
        }
        let text = String::from_utf8(fs.read(&path).unwrap()).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a whole JSON line");
            ids.push(v["flow_id"].as_u64().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

/// The blocks of a record file on `fs`, in file order, and what reading
/// them found.
pub fn block_file(
    fs: &dyn crate::disk::Fs,
    path: &std::path::Path,
) -> (
    Vec<Vec<vmflow_proto::FlowRecord>>,
    crate::export::blocks::ReadStats,
) {
    let bytes = fs.read(path).unwrap();
    let len = bytes.len() as u64;
    let mut r =
        crate::export::blocks::BlockReader::new(std::io::Cursor::new(bytes), len, path).unwrap();
    let mut blocks = Vec::new();
    while let Some(recs) = r.next_block().unwrap() {
        blocks.push(recs);
    }
    (blocks, r.stats)
}

/// An Ethernet + IPv4 + UDP frame from 10.0.0.1:`sport` to 10.0.0.2:`dport`
/// (no payload, checksums zero).
pub fn udp_frame(sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 8, 0, 0]);
    f
}
