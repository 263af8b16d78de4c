//! The encoder against the decoder (written from RFC 7011 alone: templates
//! are read from the messages, data records decoded by them, whatever the
//! encoder's own field list says), and the decoder against garbage.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::record::Direction;

/// A decoded data record: (element, reverse?) → value bytes.
type Decoded = HashMap<(u16, bool), Vec<u8>>;

struct Stream {
    templates: Vec<u16>,
    records: Vec<Decoded>,
    /// (sequence number, data records in the message) per message.
    seqs: Vec<(u32, u32)>,
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| a << 8 | u64::from(x))
}

fn decode(messages: &[Vec<u8>], domain: u32, max: usize) -> Stream {
    let mut s = Stream {
        templates: Vec::new(),
        records: Vec::new(),
        seqs: Vec::new(),
    };
    let mut dec = IpfixDecoder::new();
    for m in messages {
        assert!(m.len() <= max, "message of {} bytes over {max}", m.len());
        let msg = dec.message(m).expect("the encoder's messages decode");
        assert_eq!(msg.domain, domain);
        assert_eq!(msg.unknown_sets, 0, "data set before its template");
        s.templates.extend(msg.templates);
        for r in &msg.records {
            for (f, _) in &r.fields {
                if let Some(pen) = f.enterprise {
                    assert_eq!(pen, REVERSE_PEN);
                }
            }
            s.records.push(
                r.fields
                    .iter()
                    .map(|(f, v)| ((f.id, f.enterprise.is_some()), v.clone()))
                    .collect(),
            );
        }
        s.seqs.push((msg.sequence, msg.records.len() as u32));
    }
    s
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn record(seed: &mut u64) -> FlowRecord {
    let v6 = rng(seed).is_multiple_of(5);
    let (src, dst) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::from(u128::from(rng(seed)) << 64 | 1)),
            IpAddr::V6(Ipv6Addr::from(u128::from(rng(seed)))),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(rng(seed) as u32)),
            IpAddr::V4(Ipv4Addr::from(rng(seed) as u32)),
        )
    };
    let icmp = rng(seed).is_multiple_of(7);
    let first = rng(seed) >> 4;
    FlowRecord {
        flow_id: rng(seed),
        segment: 0,
        is_final: true,
        ip_version: if v6 { 6 } else { 4 },
        proto: if icmp { 1 } else { 6 },
        vlan: rng(seed)
            .is_multiple_of(3)
            .then(|| (rng(seed) % 4095) as u16),
        src_addr: src,
        src_port: rng(seed) as u16,
        dst_addr: dst,
        dst_port: rng(seed) as u16,
        direction: Direction::Outbound,
        first_ns: first,
        last_ns: first + rng(seed) % 1_000_000_000_000,
        fwd_packets: rng(seed) % 1000 + 1,
        fwd_bytes: rng(seed) % 1_000_000,
        rev_packets: rng(seed) % 3 * (rng(seed) % 1000),
        rev_bytes: rng(seed) % 1_000_000,
        fwd_tcp_flags: rng(seed) as u8,
        rev_tcp_flags: rng(seed) as u8,
        icmp_type: icmp.then_some(8),
        icmp_code: icmp.then_some(0),
        end_reason: EndReason::ALL[(rng(seed) % 7) as usize],
        gap: false,
        rule: None,
        decision: None,
        remote: None,
    }
}

fn addr(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap())),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap())),
    }
}

fn get(d: &Decoded, v6: bool, e4: u16, e6: u16) -> &[u8] {
    &d[&(if v6 { e6 } else { e4 }, false)]
}

/// Checks one decoded record against the half of `r` it carries.
fn check(d: &Decoded, r: &FlowRecord, reverse: bool, mode: IpfixMode) {
    let v6 = r.ip_version == 6;
    let (src, dst) = if reverse {
        (r.dst_addr, r.src_addr)
    } else {
        (r.src_addr, r.dst_addr)
    };
    assert_eq!(addr(get(d, v6, 8, 27)), src);
    assert_eq!(addr(get(d, v6, 12, 28)), dst);
    let (sp, dp) = match (r.icmp_type, reverse) {
        (Some(t), _) => (0, u16::from(t) << 8 | u16::from(r.icmp_code.unwrap_or(0))),
        (None, true) => (r.dst_port, r.src_port),
        (None, false) => (r.src_port, r.dst_port),
    };
    assert_eq!(be(&d[&(7, false)]), u64::from(sp));
    assert_eq!(be(&d[&(11, false)]), u64::from(dp));
    assert_eq!(be(&d[&(4, false)]), u64::from(r.proto));
    let (bytes, packets, flags) = if reverse {
        (r.rev_bytes, r.rev_packets, r.rev_tcp_flags)
    } else {
        (r.fwd_bytes, r.fwd_packets, r.fwd_tcp_flags)
    };
    assert_eq!(be(&d[&(1, false)]), bytes);
    assert_eq!(be(&d[&(2, false)]), packets);
    assert_eq!(be(&d[&(6, false)]), u64::from(flags));
    match mode {
        IpfixMode::Biflow => {
            assert_eq!(be(&d[&(1, true)]), r.rev_bytes);
            assert_eq!(be(&d[&(2, true)]), r.rev_packets);
            assert_eq!(be(&d[&(239, false)]), 1);
        }
        IpfixMode::Uniflow => {
            assert!(!d.contains_key(&(1, true)) && !d.contains_key(&(239, false)));
        }
    }
    assert_eq!(be(&d[&(152, false)]), r.first_ns / 1_000_000);
    assert_eq!(be(&d[&(153, false)]), r.last_ns / 1_000_000);
    assert_eq!(
        be(&d[&(136, false)]),
        u64::from(end_reason_code(r.end_reason))
    );
    assert_eq!(be(&d[&(58, false)]), u64::from(r.vlan.unwrap_or(0)));
    let icmp = r.icmp_type.map_or(0, |t| u64::from(t) << 8);
    assert_eq!(be(get(d, v6, 32, 139)), icmp);
}

#[test]
fn messages_decode_to_the_records_in_both_modes_and_every_size() {
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let records: Vec<FlowRecord> = (0..3_000).map(|_| record(&mut seed)).collect();
    for mode in [IpfixMode::Biflow, IpfixMode::Uniflow] {
        for max in [MIN_MESSAGE, 1_400, 9_000, MAX_MESSAGE] {
            let mut enc = IpfixEncoder::new(7, mode, max);
            let mut out = Vec::new();
            // Two calls: the sequence carries over; templates only first.
            enc.encode(&records[..1_000], 1_700_000_000, true, &mut out);
            enc.encode(&records[1_000..], 1_700_000_001, false, &mut out);
            let s = decode(&out, 7, max);
            let mut want = Vec::new();
            for r in &records {
                want.push((r, false));
                if mode == IpfixMode::Uniflow && r.rev_packets > 0 {
                    want.push((r, true));
                }
            }
            assert_eq!(s.records.len(), want.len(), "{mode:?} {max}");
            for (d, (r, rev)) in s.records.iter().zip(&want) {
                check(d, r, *rev, mode);
            }
            // Sequence: data records before each message.
            let mut before = 0u32;
            for &(seq, n) in &s.seqs {
                assert_eq!(seq, before, "{mode:?} {max}");
                before = before.wrapping_add(n);
            }
            assert_eq!(enc.sequence(), want.len() as u32);
            if max == MIN_MESSAGE {
                assert!(out.len() > 10, "small messages split the records");
            }
        }
    }
}

#[test]
fn a_templates_only_message_when_there_are_no_records() {
    let mut enc = IpfixEncoder::new(1, IpfixMode::Biflow, 1_400);
    let mut out = Vec::new();
    enc.encode(&[], 5, false, &mut out);
    assert!(out.is_empty());
    enc.encode(&[], 5, true, &mut out);
    assert_eq!(out.len(), 1);
    let s = decode(&out, 1, 1_400);
    assert_eq!(s.templates.len(), 2);
    assert!(s.records.is_empty());
    assert_eq!(enc.sequence(), 0);
}

#[test]
fn a_file_splits_into_its_messages_and_damage_is_an_error_not_a_panic() {
    let mut seed = 77;
    let records: Vec<FlowRecord> = (0..200).map(|_| record(&mut seed)).collect();
    let mut enc = IpfixEncoder::new(2, IpfixMode::Biflow, 600);
    let mut out = Vec::new();
    enc.encode(&records, 9, true, &mut out);
    let file: Vec<u8> = out.concat();
    let split = messages(&file).unwrap();
    assert_eq!(split.len(), out.len());
    assert!(messages(&file[..file.len() - 1]).is_err());
    // Every cut and every flipped byte of every message: a result, never
    // a panic; an intact message still decodes to its records.
    for m in &out {
        for cut in 0..m.len() {
            let _ = IpfixDecoder::new().message(&m[..cut]);
        }
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 1 << (rng(&mut seed) % 8);
            let mut dec = IpfixDecoder::new();
            let _ = dec.message(&out[0]);
            let _ = dec.message(&bad);
        }
    }
    let mut dec = IpfixDecoder::new();
    let n: usize = split
        .iter()
        .map(|m| dec.message(m).unwrap().records.len())
        .sum();
    assert_eq!(n, records.len());
}
