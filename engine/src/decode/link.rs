//! Link-layer headers: where the IP header starts, which IP version it is and
//! the outermost VLAN tag. pnet's views where it has one; BSD null/loopback
//! (a 4-byte address family) has none.

use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket};
use pnet_packet::sll::SLLPacket;
use pnet_packet::sll2::SLL2Packet;
use pnet_packet::vlan::VlanPacket;

use super::Skip;

/// LINKTYPE_* values (tcpdump.org/linktypes.html) that we decode.
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    /// Some writers store the platform DLT_RAW values instead of 101.
    pub const DLT_RAW_12: u32 = 12;
    pub const DLT_RAW_14: u32 = 14;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

pub(super) struct L3 {
    pub offset: usize,
    pub version: u8,
    pub vlan: Option<u16>,
}

const MAX_TAGS: usize = 8;
/// Linux cooked header v1: type, ARPHRD, address length, 8-byte address, protocol.
const SLL_LEN: usize = 16;
/// Linux cooked header v2: protocol, reserved, ifindex, ARPHRD, type, address length, 8-byte address.
const SLL2_LEN: usize = 20;

#[inline]
pub(super) fn strip(linktype: u32, data: &[u8]) -> Result<L3, Skip> {
    match linktype {
        linktype::ETHERNET => {
            let eth = EthernetPacket::new(data).ok_or(Skip::TruncatedLink)?;
            ethertype_chain(
                data,
                EthernetPacket::minimum_packet_size(),
                eth.get_ethertype(),
            )
        }
        linktype::LINUX_SLL => {
            // pnet 0.35's SLLPacket::new accepts 8 bytes but its protocol
            // getter reads bytes 14..16 (its minimum size leaves out the fixed
            // 8-byte address field): found by our fuzz test. Check first.
            if data.len() < SLL_LEN {
                return Err(Skip::TruncatedLink);
            }
            let sll = SLLPacket::new(data).ok_or(Skip::TruncatedLink)?;
            ethertype_chain(data, SLL_LEN, sll.get_protocol())
        }
        linktype::LINUX_SLL2 => {
            // Same pnet gap as SLL: its minimum size omits the 8-byte address.
            if data.len() < SLL2_LEN {
                return Err(Skip::TruncatedLink);
            }
            let sll = SLL2Packet::new(data).ok_or(Skip::TruncatedLink)?;
            ethertype_chain(data, SLL2_LEN, sll.get_protocol_type())
        }
        linktype::RAW | linktype::DLT_RAW_12 | linktype::DLT_RAW_14 => {
            let first = *data.first().ok_or(Skip::TruncatedIp)?;
            Ok(L3 {
                offset: 0,
                version: first >> 4,
                vlan: None,
            })
        }
        linktype::IPV4 => fixed(0, 4),
        linktype::IPV6 => fixed(0, 6),
        linktype::NULL | linktype::LOOP => {
            let b = data.get(..4).ok_or(Skip::TruncatedLink)?;
            let raw = [b[0], b[1], b[2], b[3]];
            // LOOP is always network order; NULL is the writer's host order,
            // which we infer: address families are small numbers.
            let family = if linktype == linktype::LOOP {
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

/// Follows 802.1Q / 802.1ad tags (any depth up to a sanity bound) to the IP
/// ethertype. `at` points just past the first ethertype field.
#[inline]
fn ethertype_chain(data: &[u8], mut at: usize, mut ethertype: EtherType) -> Result<L3, Skip> {
    let mut vlan = None;
    for _ in 0..=MAX_TAGS {
        match ethertype {
            EtherTypes::Ipv4 => {
                return Ok(L3 {
                    offset: at,
                    version: 4,
                    vlan,
                })
            }
            EtherTypes::Ipv6 => {
                return Ok(L3 {
                    offset: at,
                    version: 6,
                    vlan,
                })
            }
            EtherTypes::Vlan | EtherTypes::PBridge | EtherTypes::QinQ | EtherType(0x9200) => {
                let tag = data
                    .get(at..)
                    .and_then(VlanPacket::new)
                    .ok_or(Skip::TruncatedLink)?;
                vlan.get_or_insert(tag.get_vlan_identifier());
                ethertype = tag.get_ethertype();
                at += VlanPacket::minimum_packet_size();
            }
            _ => return Err(Skip::NonIp),
        }
    }
    Err(Skip::NonIp)
}
