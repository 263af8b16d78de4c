//! Any records, any message size, either mode: the IPFIX encoder's messages
//! must decode (by proto's decoder, written from RFC 7011, not from the
//! encoder's field list) to exactly the records' fields, each message within
//! its size, each sequence number the data records before it. The decoder
//! also takes the raw bytes: any input, never a panic.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use vmflow_proto::ipfix::{
    messages, IpfixDecoder, IpfixEncoder, IpfixMode, MAX_MESSAGE, MIN_MESSAGE,
};
use vmflow_proto::{Direction, EndReason, FlowRecord};

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| a << 8 | u64::from(x))
}

/// 64 bytes make a record; every field comes from them.
fn record(b: &[u8]) -> FlowRecord {
    let n = |i: usize| be(&b[i..i + 8]);
    let v6 = b[0] & 1 != 0;
    let (src, dst) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::from(u128::from(n(8)) << 64 | u128::from(n(16)))),
            IpAddr::V6(Ipv6Addr::from(u128::from(n(24)))),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(n(8) as u32)),
            IpAddr::V4(Ipv4Addr::from(n(16) as u32)),
        )
    };
    let icmp = b[0] & 2 != 0;
    FlowRecord {
        flow_id: n(32),
        segment: 0,
        is_final: true,
        ip_version: if v6 { 6 } else { 4 },
        proto: b[1],
        vlan: (b[0] & 4 != 0).then_some(u16::from(b[2])),
        src_addr: src,
        src_port: be(&b[3..5]) as u16,
        dst_addr: dst,
        dst_port: be(&b[5..7]) as u16,
        direction: Direction::Outbound,
        first_ns: n(40),
        last_ns: n(40).saturating_add(n(48) >> 20),
        fwd_packets: n(56) >> 40,
        fwd_bytes: n(56),
        rev_packets: u64::from(b[7] >> 1),
        rev_bytes: n(32) >> 3,
        fwd_tcp_flags: b[2],
        rev_tcp_flags: b[7],
        icmp_type: icmp.then_some(b[1]),
        icmp_code: icmp.then_some(b[3]),
        end_reason: EndReason::ALL[usize::from(b[4]) % EndReason::ALL.len()],
        gap: false,
        rule: None,
        decision: None,
        remote: None,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = if data[0] & 1 == 0 {
        IpfixMode::Biflow
    } else {
        IpfixMode::Uniflow
    };
    let max = (be(&data[1..3]) as usize).clamp(MIN_MESSAGE, MAX_MESSAGE);
    let records: Vec<FlowRecord> = data[3..].chunks_exact(64).map(record).collect();
    let mut enc = IpfixEncoder::new(3, mode, max);
    let mut out = Vec::new();
    let half = records.len() / 2;
    enc.encode(&records[..half], 1, true, &mut out);
    enc.encode(&records[half..], 2, data[0] & 2 != 0, &mut out);

    // The decoder takes any bytes: a result, never a panic.
    let _ = IpfixDecoder::new().message(&data[3..]);
    let _ = messages(&data[3..]);

    let mut dec = IpfixDecoder::new();
    let mut decoded: Vec<HashMap<(u16, bool), u64>> = Vec::new();
    let mut before = 0u32;
    for m in &out {
        assert!(m.len() <= max && m.len() >= 16);
        let msg = dec.message(m).expect("the encoder's messages decode");
        assert_eq!(msg.sequence, before);
        assert_eq!(msg.unknown_sets, 0);
        for r in &msg.records {
            decoded.push(
                r.fields
                    .iter()
                    .map(|(f, v)| ((f.id, f.enterprise == Some(29305)), be(v)))
                    .collect(),
            );
            before = before.wrapping_add(1);
        }
    }
    let mut want = Vec::new();
    for r in &records {
        want.push((r, false));
        if mode == IpfixMode::Uniflow && r.rev_packets > 0 {
            want.push((r, true));
        }
    }
    assert_eq!(decoded.len(), want.len());
    for (d, (r, rev)) in decoded.iter().zip(want) {
        let (bytes, packets, flags, sp) = if rev {
            (r.rev_bytes, r.rev_packets, r.rev_tcp_flags, r.dst_port)
        } else {
            (r.fwd_bytes, r.fwd_packets, r.fwd_tcp_flags, r.src_port)
        };
        // ICMP has no ports: type and code travel in the destination port.
        let sp = if r.icmp_type.is_some() { 0 } else { sp };
        assert_eq!(d[&(1, false)], bytes);
        assert_eq!(d[&(2, false)], packets);
        assert_eq!(d[&(6, false)], u64::from(flags));
        assert_eq!(d[&(7, false)], u64::from(sp));
        assert_eq!(d[&(4, false)], u64::from(r.proto));
        assert_eq!(d[&(152, false)], r.first_ns / 1_000_000);
        assert_eq!(d[&(153, false)], r.last_ns / 1_000_000);
        assert_eq!(d[&(58, false)], u64::from(r.vlan.unwrap_or(0)));
        if mode == IpfixMode::Biflow {
            assert_eq!(d[&(1, true)], r.rev_bytes);
            assert_eq!(d[&(2, true)], r.rev_packets);
        }
    }
    assert_eq!(enc.sequence(), before);
});
