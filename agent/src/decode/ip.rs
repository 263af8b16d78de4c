//! IPv4 and IPv6 (with extension headers) and the transport ports.

use super::{be16, be32, Decoded, Fragment, Skip};
use crate::flow::FlowKey;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
const DCCP: u8 = 33;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;
const MAX_EXT_HEADERS: usize = 16;

#[inline]
pub(super) fn ipv4(p: &[u8], vlan: Option<u16>, fallback: u32) -> Result<Decoded, Skip> {
    if p.len() < 20 {
        return Err(Skip::TruncatedIp);
    }
    if p[0] >> 4 != 4 {
        return Err(Skip::BadIpVersion);
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Skip::BadIpHeader);
    }
    let total = u16::from_be_bytes([p[2], p[3]]);
    // A zero total length is what segmentation offload leaves in captures
    // taken on the sender; the frame length is then the best we have.
    let ip_bytes = match usize::from(total) {
        0 => fallback,
        t if t < ihl => return Err(Skip::BadIpHeader),
        t => t as u32,
    };
    let id = u16::from_be_bytes([p[4], p[5]]);
    let frag = u16::from_be_bytes([p[6], p[7]]);
    let proto = p[9];
    let mut key = FlowKey {
        proto,
        ip_version: 4,
        vlan,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&p[12..16]);
    key.dst[..4].copy_from_slice(&p[16..20]);
    let fragment = if frag & 0x1fff != 0 {
        Fragment::Later { id: u32::from(id) }
    } else if frag & 0x2000 != 0 {
        Fragment::First { id: u32::from(id) }
    } else {
        Fragment::None
    };
    let mut d = Decoded {
        key,
        ip_bytes,
        tcp_flags: 0,
        icmp: None,
        fragment,
    };
    if !matches!(fragment, Fragment::Later { .. }) {
        // Ethernet pads short frames; never read the pad as transport data.
        let end = if total == 0 {
            p.len()
        } else {
            p.len().min(usize::from(total))
        };
        let l4 = p.get(ihl..end).ok_or(Skip::TruncatedTransport)?;
        transport(&mut d, l4)?;
    }
    Ok(d)
}

#[inline]
pub(super) fn ipv6(p: &[u8], vlan: Option<u16>, fallback: u32) -> Result<Decoded, Skip> {
    if p.len() < 40 {
        return Err(Skip::TruncatedIp);
    }
    if p[0] >> 4 != 6 {
        return Err(Skip::BadIpVersion);
    }
    let plen = u16::from_be_bytes([p[4], p[5]]);
    // Zero payload length means a jumbogram (or offload); use the frame length.
    let ip_bytes = if plen == 0 {
        fallback
    } else {
        u32::from(plen) + 40
    };
    let mut key = FlowKey {
        ip_version: 6,
        vlan,
        ..FlowKey::default()
    };
    key.src.copy_from_slice(&p[8..24]);
    key.dst.copy_from_slice(&p[24..40]);
    let end = if plen == 0 {
        p.len()
    } else {
        p.len().min(40 + usize::from(plen))
    };
    let mut next = p[6];
    let mut at = 40usize;
    let mut fragment = Fragment::None;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let nh = *p.get(at).ok_or(Skip::BadExtensionHeaders)?;
                let len = usize::from(*p.get(at + 1).ok_or(Skip::BadExtensionHeaders)?);
                next = nh;
                at += (len + 1) * 8;
            }
            // Authentication header counts in 4-octet units, minus 2.
            51 => {
                let nh = *p.get(at).ok_or(Skip::BadExtensionHeaders)?;
                let len = usize::from(*p.get(at + 1).ok_or(Skip::BadExtensionHeaders)?);
                next = nh;
                at += (len + 2) * 4;
            }
            44 => {
                let nh = *p.get(at).ok_or(Skip::BadExtensionHeaders)?;
                let off = be16(p, at + 2).ok_or(Skip::BadExtensionHeaders)?;
                let id = be32(p, at + 4).ok_or(Skip::BadExtensionHeaders)?;
                next = nh;
                at += 8;
                if off >> 3 != 0 {
                    fragment = Fragment::Later { id };
                    break;
                }
                if off & 1 != 0 {
                    fragment = Fragment::First { id };
                }
            }
            _ => break,
        }
    }
    if matches!(next, 0 | 43 | 60 | 135 | 139 | 140 | 51)
        && !matches!(fragment, Fragment::Later { .. })
    {
        return Err(Skip::BadExtensionHeaders);
    }
    key.proto = next;
    let mut d = Decoded {
        key,
        ip_bytes,
        tcp_flags: 0,
        icmp: None,
        fragment,
    };
    if !matches!(fragment, Fragment::Later { .. }) {
        let l4 = p.get(at..end).ok_or(Skip::TruncatedTransport)?;
        transport(&mut d, l4)?;
    }
    Ok(d)
}

/// Ports (or the ICMP echo identifier) and TCP flags. ICMP echo uses the
/// identifier as both ports so that request and reply share one canonical key;
/// other ICMP messages key on type and code as NetFlow does (dst port = type·256+code).
#[inline]
fn transport(d: &mut Decoded, l4: &[u8]) -> Result<(), Skip> {
    let proto = d.key.proto;
    match proto {
        TCP | UDP | SCTP | UDPLITE | DCCP => {
            d.key.src_port = be16(l4, 0).ok_or(Skip::TruncatedTransport)?;
            d.key.dst_port = be16(l4, 2).ok_or(Skip::TruncatedTransport)?;
            if proto == TCP {
                // Header-only captures may stop right after the ports; flags
                // are then unknown, not invented.
                d.tcp_flags = l4.get(13).copied().unwrap_or(0);
            }
        }
        ICMP | ICMPV6 if (proto == ICMP) == (d.key.ip_version == 4) => {
            let ty = *l4.first().ok_or(Skip::TruncatedTransport)?;
            let code = *l4.get(1).ok_or(Skip::TruncatedTransport)?;
            d.icmp = Some((ty, code));
            if is_echo(proto, ty) {
                let id = be16(l4, 4).ok_or(Skip::TruncatedTransport)?;
                d.key.src_port = id;
                d.key.dst_port = id;
            } else {
                d.key.dst_port = u16::from(ty) << 8 | u16::from(code);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Echo request or reply (ICMP 8/0, ICMPv6 128/129).
pub fn is_echo(proto: u8, ty: u8) -> bool {
    match proto {
        ICMP => ty == 8 || ty == 0,
        ICMPV6 => ty == 128 || ty == 129,
        _ => false,
    }
}

/// Echo reply: its receiver started the exchange.
pub fn is_echo_reply(proto: u8, ty: u8) -> bool {
    (proto == ICMP && ty == 0) || (proto == ICMPV6 && ty == 129)
}
