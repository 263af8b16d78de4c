//! One pass from frame to keyed packet for the frames a VM's NIC carries
//! almost always: Ethernet II with at most two VLAN tags, IPv4 without
//! fragmentation or IPv6 without extension headers, then TCP or UDP with the
//! whole fixed header captured, or ICMP/ICMPv6. Anything else returns `None`
//! and takes the general path ([`super::decode`] on pnet's views, then the
//! fragment table).
//!
//! Why a second path: in live capture the general path cost ~400 instructions
//! per packet between the ring and the flow table (views, a `Result` of a
//! 64-byte struct passed through the fragment table by value, the canonical
//! key built from a copy); this one reads fixed offsets after one length check
//! per header and builds the table's packet once (`benches/inline_engine.rs`,
//! BENCHMARKS.md). Its output is the general path's, bit for bit: the unit
//! test below and the `decode` fuzz target compare them on every input.

use super::ip::is_echo;
use crate::packet::{hash_parts, FlowKey, Packet, ICMP, ICMPV6, TCP, UDP};

const ETH: usize = 14;
const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;

/// The table's view of `data` if it is a common frame, else `None`.
// Always inlined into the engine's packet entry, its one caller: left to the
// heuristics, the threaded engine's copy stayed a call and cost 5 % more
// instructions per replay (callgrind).
#[inline(always)]
pub fn packet(ts_ns: u64, linktype: u32, data: &[u8], orig_len: u32) -> Option<Packet> {
    if linktype != super::linktype::ETHERNET {
        return None;
    }
    let (mut at, mut ethertype) = (ETH, be16(data.get(12..ETH)?));
    let mut vlan = None;
    // Up to two tags (802.1Q, 802.1ad and the older QinQ types, as the
    // general path accepts); the outermost names the flow's VLAN.
    for _ in 0..2 {
        if !matches!(ethertype, 0x8100 | 0x88a8 | 0x9100 | 0x9200) {
            break;
        }
        let tag = data.get(at..at + 4)?;
        vlan.get_or_insert(be16(&tag[..2]) & 0x0fff);
        ethertype = be16(&tag[2..]);
        at += 4;
    }
    let p = data.get(at..)?;
    let fallback = orig_len.saturating_sub(at as u32);
    // Addresses as big-endian integers (their order is the canonical order)
    // and the IP header's facts.
    let (src, dst, proto, ip_version, l4, ip_bytes) = match ethertype {
        0x0800 => {
            let h = p.get(..IPV4_MIN)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            // Version 4, a sane header length, no fragment bit (MF or an
            // offset: the fragment table's business).
            if h[0] >> 4 != 4 || ihl < IPV4_MIN || h[6] & 0x3f != 0 || h[7] != 0 {
                return None;
            }
            // A zero total length (segmentation offload on the sender) falls
            // back to the frame length, like the general path; a total below
            // the header length is an error only the general path reports.
            let (ip_bytes, end) = match usize::from(be16(&h[2..4])) {
                0 => (fallback, p.len()),
                t if t < ihl => return None,
                t => (t as u32, p.len().min(t)),
            };
            // An IPv4 address fills the first four of the key's 16 bytes.
            let v4 = |b: &[u8]| u128::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) << 96;
            (
                v4(&h[12..16]),
                v4(&h[16..20]),
                h[9],
                4,
                p.get(ihl..end)?,
                ip_bytes,
            )
        }
        0x86dd => {
            let h = p.get(..IPV6_LEN)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let (ip_bytes, end) = match usize::from(be16(&h[4..6])) {
                0 => (fallback, p.len()),
                n => (n as u32 + IPV6_LEN as u32, p.len().min(IPV6_LEN + n)),
            };
            let v6 = |b: &[u8]| {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                u128::from_be_bytes(a)
            };
            let l4 = p.get(IPV6_LEN..end)?;
            (v6(&h[8..24]), v6(&h[24..40]), h[6], 6, l4, ip_bytes)
        }
        _ => return None,
    };
    let (mut tcp_flags, mut icmp) = (0, None);
    let (sport, dport) = match proto {
        TCP => {
            let t = l4.get(..20)?;
            tcp_flags = t[13];
            (be16(&t[..2]), be16(&t[2..4]))
        }
        UDP => {
            let u = l4.get(..8)?;
            (be16(&u[..2]), be16(&u[2..4]))
        }
        ICMP | ICMPV6 if (proto == ICMP) == (ip_version == 4) => {
            // The general path's views need the 4-byte ICMP header.
            let i = l4.get(..4)?;
            let (ty, code) = (i[0], i[1]);
            icmp = Some((ty, code));
            if is_echo(proto, ty) {
                let id = be16(l4.get(4..6)?);
                (id, id)
            } else {
                (0, u16::from(ty) << 8 | u16::from(code))
            }
        }
        _ => return None,
    };
    // FlowKey::canonical's order, on the integers.
    let from_src = (src, sport) <= (dst, dport);
    let ((a, ap), (b, bp)) = if from_src {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    let key = FlowKey {
        src: a.to_be_bytes(),
        dst: b.to_be_bytes(),
        src_port: ap,
        dst_port: bp,
        proto,
        ip_version,
        vlan,
    };
    // The key's little-endian words, from registers (see `hash_parts`).
    let words = |x: u128| [((x >> 64) as u64).swap_bytes(), (x as u64).swap_bytes()];
    Some(Packet {
        ts_ns,
        key,
        hash: hash_parts(words(a), words(b), key.meta_word()),
        from_src,
        ip_bytes,
        tcp_flags,
        icmp,
    })
}

/// Big-endian u16 of a slice the caller has cut to at least two bytes.
#[inline(always)]
fn be16(b: &[u8]) -> u16 {
    match b {
        [x, y, ..] => u16::from_be_bytes([*x, *y]),
        _ => 0,
    }
}
