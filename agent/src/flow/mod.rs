//! The flow engine: fragments are attributed to their flows, then a sans-IO
//! flow table turns packets and time into flow records.

mod frag;
mod index;
mod key;
mod table;

pub use frag::{FragSnapshot, FragStats, FragTable};
pub use index::prefetch;
pub(crate) use key::hash_parts;
pub use key::{from_ip, to_ip, FlowKey};
pub use table::{Event, FlowTable, TableConfig, TableSnapshot, TableStats};

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
    pub fn new(ts_ns: u64, d: &crate::decode::Decoded) -> Packet {
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
