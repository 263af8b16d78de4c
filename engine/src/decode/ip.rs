//! IPv4 and IPv6 (with extension headers) and the transport ports, read through
//! pnet's packet views. Hand-read bytes remain only where pnet has no view (the
//! AH header, SCTP/DCCP/UDP-Lite ports) or where a header-only capture cut the
//! transport header below pnet's minimum view size but kept the ports.

use pnet_packet::icmp::IcmpPacket;
use pnet_packet::icmpv6::Icmpv6Packet;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::{ExtensionPacket, FragmentPacket, Ipv6Packet};
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;

use super::{be16, Skip};
use crate::packet::{Decoded, FlowKey, Fragment, ICMP, ICMPV6, TCP, UDP};

const DCCP: u8 = 33;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;
const MAX_EXT_HEADERS: usize = 16;
/// IPv4 "more fragments" within pnet's 3-bit flags field.
const MF: u8 = 0b001;

#[inline]
pub(super) fn ipv4(p: &[u8], vlan: Option<u16>, fallback: u32) -> Result<Decoded, Skip> {
    let ip = Ipv4Packet::new(p).ok_or(Skip::TruncatedIp)?;
    if ip.get_version() != 4 {
        return Err(Skip::BadIpVersion);
    }
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ihl < Ipv4Packet::minimum_packet_size() {
        return Err(Skip::BadIpHeader);
    }
    let total = ip.get_total_length();
    // A zero total length is what segmentation offload leaves in captures
    // taken on the sender; the frame length is then the best we have.
    let ip_bytes = match usize::from(total) {
        0 => fallback,
        t if t < ihl => return Err(Skip::BadIpHeader),
        t => t as u32,
    };
    let id = u32::from(ip.get_identification());
    let fragment = if ip.get_fragment_offset() != 0 {
        Fragment::Later { id }
    } else if ip.get_flags() & MF != 0 {
        Fragment::First { id }
    } else {
        Fragment::None
    };
    let proto = ip.get_next_level_protocol().0;
    let l4 = if let Fragment::Later { .. } = fragment {
        L4::default()
    } else {
        // Ethernet pads short frames; never read the pad as transport data.
        let end = if total == 0 {
            p.len()
        } else {
            p.len().min(usize::from(total))
        };
        transport(proto, 4, p.get(ihl..end).unwrap_or(&[]))?
    };
    // Addresses go through a u128 so each key half is one wide store, not a
    // zero fill followed by a narrow write (which stalls the later wide read).
    let v4 = |a: std::net::Ipv4Addr| u128::from(u32::from_le_bytes(a.octets())).to_le_bytes();
    Ok(Decoded {
        key: FlowKey {
            src: v4(ip.get_source()),
            dst: v4(ip.get_destination()),
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            proto,
            ip_version: 4,
            vlan,
        },
        ip_bytes,
        tcp_flags: l4.flags,
        icmp: l4.icmp,
        fragment,
    })
}

#[inline]
pub(super) fn ipv6(p: &[u8], vlan: Option<u16>, fallback: u32) -> Result<Decoded, Skip> {
    let ip = Ipv6Packet::new(p).ok_or(Skip::TruncatedIp)?;
    if ip.get_version() != 6 {
        return Err(Skip::BadIpVersion);
    }
    let plen = ip.get_payload_length();
    // Zero payload length means a jumbogram (or offload); use the frame length.
    let ip_bytes = if plen == 0 {
        fallback
    } else {
        u32::from(plen) + 40
    };
    let end = if plen == 0 {
        p.len()
    } else {
        p.len().min(40 + usize::from(plen))
    };
    let mut next = ip.get_next_header().0;
    let mut at = Ipv6Packet::minimum_packet_size();
    let mut fragment = Fragment::None;
    for _ in 0..MAX_EXT_HEADERS {
        let rest = p.get(at..).unwrap_or(&[]);
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6:
            // all start with next-header and a length in 8-octet units.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let ext = ExtensionPacket::new(rest).ok_or(Skip::BadExtensionHeaders)?;
                next = ext.get_next_header().0;
                at += (usize::from(ext.get_hdr_ext_len()) + 1) * 8;
            }
            // Authentication header (no pnet view): length in 4-octet units, minus 2.
            51 => {
                let (nh, len) = match rest {
                    [nh, len, ..] => (*nh, usize::from(*len)),
                    _ => return Err(Skip::BadExtensionHeaders),
                };
                next = nh;
                at += (len + 2) * 4;
            }
            44 => {
                let frag = FragmentPacket::new(rest).ok_or(Skip::BadExtensionHeaders)?;
                next = frag.get_next_header().0;
                at += FragmentPacket::minimum_packet_size();
                let off = frag.get_fragment_offset_with_flags();
                if off >> 3 != 0 {
                    fragment = Fragment::Later { id: frag.get_id() };
                    break;
                }
                if off & 1 != 0 {
                    fragment = Fragment::First { id: frag.get_id() };
                }
            }
            _ => break,
        }
    }
    let later = matches!(fragment, Fragment::Later { .. });
    if matches!(next, 0 | 43 | 60 | 135 | 139 | 140 | 51) && !later {
        return Err(Skip::BadExtensionHeaders);
    }
    let l4 = if later {
        L4::default()
    } else {
        transport(next, 6, p.get(at..end).unwrap_or(&[]))?
    };
    Ok(Decoded {
        key: FlowKey {
            src: ip.get_source().octets(),
            dst: ip.get_destination().octets(),
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            proto: next,
            ip_version: 6,
            vlan,
        },
        ip_bytes,
        tcp_flags: l4.flags,
        icmp: l4.icmp,
        fragment,
    })
}

#[derive(Default)]
struct L4 {
    src_port: u16,
    dst_port: u16,
    flags: u8,
    icmp: Option<(u8, u8)>,
}

/// Ports (or the ICMP echo identifier) and TCP flags. ICMP echo uses the
/// identifier as both ports so that request and reply share one canonical key;
/// other ICMP messages key on type and code as NetFlow does (dst port = type·256+code).
/// Inlined: returned through memory, this small struct costs a store-forwarding
/// stall per packet (measured in `benches/decode.rs`).
#[inline(always)]
fn transport(proto: u8, ip_version: u8, l4: &[u8]) -> Result<L4, Skip> {
    let mut out = L4::default();
    match proto {
        TCP => match TcpPacket::new(l4) {
            Some(t) => {
                out.src_port = t.get_source();
                out.dst_port = t.get_destination();
                out.flags = t.get_flags();
            }
            // Header-only capture cut inside the TCP header: ports if they
            // are there, flags only if they are there, never invented.
            None => {
                (out.src_port, out.dst_port) = raw_ports(l4)?;
                out.flags = l4.get(13).copied().unwrap_or(0);
            }
        },
        UDP => match UdpPacket::new(l4) {
            Some(u) => {
                out.src_port = u.get_source();
                out.dst_port = u.get_destination();
            }
            None => (out.src_port, out.dst_port) = raw_ports(l4)?,
        },
        SCTP | UDPLITE | DCCP => (out.src_port, out.dst_port) = raw_ports(l4)?,
        ICMP | ICMPV6 if (proto == ICMP) == (ip_version == 4) => {
            let (ty, code) = if proto == ICMP {
                let i = IcmpPacket::new(l4).ok_or(Skip::TruncatedTransport)?;
                (i.get_icmp_type().0, i.get_icmp_code().0)
            } else {
                let i = Icmpv6Packet::new(l4).ok_or(Skip::TruncatedTransport)?;
                (i.get_icmpv6_type().0, i.get_icmpv6_code().0)
            };
            out.icmp = Some((ty, code));
            if is_echo(proto, ty) {
                // The identifier follows the 4-byte ICMP header in both versions.
                let id = be16(l4, 4).ok_or(Skip::TruncatedTransport)?;
                out.src_port = id;
                out.dst_port = id;
            } else {
                out.dst_port = u16::from(ty) << 8 | u16::from(code);
            }
        }
        _ => {}
    }
    Ok(out)
}

#[inline]
fn raw_ports(l4: &[u8]) -> Result<(u16, u16), Skip> {
    Ok((
        be16(l4, 0).ok_or(Skip::TruncatedTransport)?,
        be16(l4, 2).ok_or(Skip::TruncatedTransport)?,
    ))
}

/// Echo request or reply (ICMP 8/0, ICMPv6 128/129).
pub fn is_echo(proto: u8, ty: u8) -> bool {
    match proto {
        ICMP => ty == 8 || ty == 0,
        ICMPV6 => ty == 128 || ty == 129,
        _ => false,
    }
}
