//! The hand-written decoder vmflow used before switching to pnet's views;
//! kept here only as the comparison subject of `benches/decode.rs`.
#![allow(dead_code)]

use vmflow::decode::{Decoded, Fragment, Skip};
use vmflow::flow::FlowKey;

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
pub fn decode(linktype: u32, data: &[u8], orig_len: u32) -> Result<Decoded, Skip> {
    let l3 = strip(linktype, data)?;
    let fallback = orig_len.saturating_sub(l3.offset as u32);
    let payload = data.get(l3.offset..).ok_or(Skip::TruncatedLink)?;
    match l3.version {
        4 => ipv4(payload, l3.vlan, fallback),
        6 => ipv6(payload, l3.vlan, fallback),
        _ => Err(Skip::BadIpVersion),
    }
}

struct L3 {
    pub offset: usize,
    pub version: u8,
    pub vlan: Option<u16>,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const MAX_TAGS: usize = 8;

#[inline]
fn strip(linktype: u32, data: &[u8]) -> Result<L3, Skip> {
    match linktype {
        1 => {
            let ethertype = be16(data, 12).ok_or(Skip::TruncatedLink)?;
            ethertype_chain(data, 14, ethertype)
        }
        113 => {
            let proto = be16(data, 14).ok_or(Skip::TruncatedLink)?;
            ethertype_chain(data, 16, proto)
        }
        276 => {
            if data.len() < 20 {
                return Err(Skip::TruncatedLink);
            }
            let proto = be16(data, 0).ok_or(Skip::TruncatedLink)?;
            ethertype_chain(data, 20, proto)
        }
        101 | 12 | 14 => {
            let first = *data.first().ok_or(Skip::TruncatedIp)?;
            Ok(L3 {
                offset: 0,
                version: first >> 4,
                vlan: None,
            })
        }
        228 => fixed(0, 4),
        229 => fixed(0, 6),
        0 | 108 => {
            let b = data.get(..4).ok_or(Skip::TruncatedLink)?;
            let raw = [b[0], b[1], b[2], b[3]];
            // LOOP is always network order; NULL is the writer's host order,
            // which we infer: address families are small numbers.
            let family = if linktype == 108 {
                u32::from_be_bytes(raw)
            } else {
                let le = u32::from_le_bytes(raw);
                if le > 0xffff {
                    u32::from_be_bytes(raw)
                } else {
                    le
                }
            };
            match family {
                2 => fixed(4, 4),
                // AF_INET6 differs between BSDs (24, 28, 30) and Linux (10).
                10 | 24 | 28 | 30 => fixed(4, 6),
                _ => Err(Skip::NonIp),
            }
        }
        other => Err(Skip::UnsupportedLinktype(other)),
    }
}

fn fixed(offset: usize, version: u8) -> Result<L3, Skip> {
    Ok(L3 {
        offset,
        version,
        vlan: None,
    })
}

/// Follows 802.1Q / 802.1ad tags (any depth up to a sanity bound) to the
/// IP ethertype. `at` points just past the first ethertype field.
#[inline]
fn ethertype_chain(data: &[u8], mut at: usize, mut ethertype: u16) -> Result<L3, Skip> {
    let mut vlan = None;
    for _ in 0..=MAX_TAGS {
        match ethertype {
            ETH_IPV4 => {
                return Ok(L3 {
                    offset: at,
                    version: 4,
                    vlan,
                })
            }
            ETH_IPV6 => {
                return Ok(L3 {
                    offset: at,
                    version: 6,
                    vlan,
                })
            }
            0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
                let tci = be16(data, at).ok_or(Skip::TruncatedLink)?;
                ethertype = be16(data, at + 2).ok_or(Skip::TruncatedLink)?;
                vlan.get_or_insert(tci & 0x0fff);
                at += 4;
            }
            _ => return Err(Skip::NonIp),
        }
    }
    Err(Skip::NonIp)
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
const DCCP: u8 = 33;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;
const MAX_EXT_HEADERS: usize = 16;

#[inline]
fn ipv4(p: &[u8], vlan: Option<u16>, fallback: u32) -> Result<Decoded, Skip> {
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
    // Addresses go through a u128 so each key half is one wide store, not a
    // zero fill followed by a narrow write (which stalls the later wide read).
    let v4 = |i: usize| {
        u128::from(u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]])).to_le_bytes()
    };
    let fragment = if frag & 0x1fff != 0 {
        Fragment::Later { id: u32::from(id) }
    } else if frag & 0x2000 != 0 {
        Fragment::First { id: u32::from(id) }
    } else {
        Fragment::None
    };
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
    Ok(Decoded {
        key: FlowKey {
            src: v4(12),
            dst: v4(16),
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
fn ipv6(p: &[u8], vlan: Option<u16>, fallback: u32) -> Result<Decoded, Skip> {
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
    let v6 = |i: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&p[i..i + 16]);
        a
    };
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
    let l4 = if let Fragment::Later { .. } = fragment {
        L4::default()
    } else {
        transport(next, 6, p.get(at..end).unwrap_or(&[]))?
    };
    Ok(Decoded {
        key: FlowKey {
            src: v6(8),
            dst: v6(24),
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
#[inline(always)]
fn transport(proto: u8, ip_version: u8, l4: &[u8]) -> Result<L4, Skip> {
    let mut out = L4::default();
    match proto {
        TCP | UDP | SCTP | UDPLITE | DCCP => {
            out.src_port = be16(l4, 0).ok_or(Skip::TruncatedTransport)?;
            out.dst_port = be16(l4, 2).ok_or(Skip::TruncatedTransport)?;
            if proto == TCP {
                // Header-only captures may stop right after the ports; flags
                // are then unknown, not invented.
                out.flags = l4.get(13).copied().unwrap_or(0);
            }
        }
        ICMP | ICMPV6 if (proto == ICMP) == (ip_version == 4) => {
            let ty = *l4.first().ok_or(Skip::TruncatedTransport)?;
            let code = *l4.get(1).ok_or(Skip::TruncatedTransport)?;
            out.icmp = Some((ty, code));
            if is_echo(proto, ty) {
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
