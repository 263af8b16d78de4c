//! Packet decoding: link layer → IP → transport, down to the flow key and the
//! few header fields the flow table needs. Headers are read through pnet's
//! packet views, which check their length once on construction; the few bytes
//! read by hand go through `get`. No input can make decoding panic; a packet
//! that cannot be keyed is reported with a [`Skip`] reason instead.
//!
//! `benches/decode.rs` compares this with the hand-written decoder vmflow had
//! before; the numbers are in BENCHMARKS.md.

pub mod fast;
mod ip;
mod link;

pub use crate::packet::{is_echo_reply, Decoded, Fragment, ICMP, ICMPV6, TCP, UDP};
pub use link::linktype;

/// Why a packet yielded no flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The capture's link type is not one we decode.
    UnsupportedLinktype(u32),
    /// A link-layer frame that does not carry IPv4 or IPv6 (ARP, LLDP…).
    NonIp,
    TruncatedLink,
    /// Not even the fixed IP header was captured.
    TruncatedIp,
    BadIpVersion,
    BadIpHeader,
    /// The transport header is cut before the ports (or the ICMP id).
    TruncatedTransport,
    /// An IPv6 extension-header chain that is cut or too long.
    BadExtensionHeaders,
}

impl Skip {
    /// Stable names for stats and logs.
    pub fn reason(&self) -> String {
        match self {
            Skip::UnsupportedLinktype(t) => format!("unsupported_linktype_{t}"),
            Skip::NonIp => "non_ip".into(),
            Skip::TruncatedLink => "truncated_link".into(),
            Skip::TruncatedIp => "truncated_ip".into(),
            Skip::BadIpVersion => "bad_ip_version".into(),
            Skip::BadIpHeader => "bad_ip_header".into(),
            Skip::TruncatedTransport => "truncated_transport".into(),
            Skip::BadExtensionHeaders => "bad_extension_headers".into(),
        }
    }
}

/// Decodes one captured frame. `orig_len` is the frame's length on the wire,
/// used for the byte count when the IP header does not give one.
#[inline]
pub fn decode(linktype: u32, data: &[u8], orig_len: u32) -> Result<Decoded, Skip> {
    let l3 = link::strip(linktype, data)?;
    let fallback = orig_len.saturating_sub(l3.offset as u32);
    let payload = data.get(l3.offset..).ok_or(Skip::TruncatedLink)?;
    match l3.version {
        4 => ip::ipv4(payload, l3.vlan, fallback),
        6 => ip::ipv6(payload, l3.vlan, fallback),
        _ => Err(Skip::BadIpVersion),
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
