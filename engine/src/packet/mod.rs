//! What a packet is to the engine, shared by the decoder (which produces it)
//! and the flow table (which consumes it): the flow key, the decoded header
//! fields, the table's keyed view, and the few protocol numbers both need.

mod key;

pub(crate) use key::hash_parts;
pub use key::{from_ip, to_ip, FlowKey};

/// One captured frame, borrowed from a reader's buffer or a capture ring.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    pub ts_ns: u64,
    /// LINKTYPE_* value of this packet's interface.
    pub linktype: u32,
    /// Length on the wire (may exceed `data.len()` under a snap length).
    pub orig_len: u32,
    pub data: &'a [u8],
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// An ICMP or ICMPv6 echo reply (its flow is the request's, reversed).
pub fn is_echo_reply(proto: u8, ty: u8) -> bool {
    (proto == ICMP && ty == 0) || (proto == ICMPV6 && ty == 129)
}

/// Fragment information of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// The first fragment: it carries the transport header.
    First { id: u32 },
    /// A later fragment: no transport header, ports come from the first one.
    Later { id: u32 },
}

/// What the flow table needs from one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decoded {
    /// Oriented as on the wire. Ports are zero for a later fragment.
    pub key: FlowKey,
    /// IP-layer bytes from the header (not the captured length).
    pub ip_bytes: u32,
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    pub fragment: Fragment,
}

/// One packet as the flow table sees it: already keyed canonically and hashed.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Packet {
    pub ts_ns: u64,
    /// Canonical key (see [`FlowKey::canonical`]).
    pub key: FlowKey,
    pub hash: u64,
    /// The packet travels from the canonical source to the canonical destination.
    pub from_src: bool,
    pub ip_bytes: u32,
    pub tcp_flags: u8,
    pub icmp: Option<(u8, u8)>,
}

impl Packet {
    /// Builds the table's view of a decoded packet.
    #[inline]
    pub fn new(ts_ns: u64, d: &Decoded) -> Packet {
        let (key, from_src) = d.key.canonical();
        Packet {
            ts_ns,
            key,
            hash: key.hash64(),
            from_src,
            ip_bytes: d.ip_bytes,
            tcp_flags: d.tcp_flags,
            icmp: d.icmp,
        }
    }
}
