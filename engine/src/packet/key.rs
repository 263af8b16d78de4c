//! The flow key and its direction-free (canonical) form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The 5-tuple plus VLAN, oriented as the packet travelled. IPv4 addresses sit
/// in the first four bytes with the rest zero, so one layout serves both versions.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub ip_version: u8,
    pub vlan: Option<u16>,
}

impl FlowKey {
    /// The same key with the endpoints swapped.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }

    /// Both directions of a conversation map to one canonical key (the lower
    /// endpoint first). The flag says whether the packet's source is the
    /// canonical source.
    #[inline]
    pub fn canonical(&self) -> (FlowKey, bool) {
        // Big-endian u128 comparison is the lexicographic byte order of the
        // arrays, in two instructions instead of a memcmp call.
        let (s, d) = (u128::from_be_bytes(self.src), u128::from_be_bytes(self.dst));
        if (s, self.src_port) <= (d, self.dst_port) {
            (*self, true)
        } else {
            (self.reversed(), false)
        }
    }

    /// A 64-bit hash of the key. Call it on the canonical key so that both
    /// directions land on the same shard and bucket.
    #[inline]
    pub fn hash64(&self) -> u64 {
        let w = |b: &[u8; 16], i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        hash_parts(
            [w(&self.src, 0), w(&self.src, 8)],
            [w(&self.dst, 0), w(&self.dst, 8)],
            self.meta_word(),
        )
    }

    /// Ports, protocol, version and VLAN packed into one word for the hash.
    #[inline]
    pub(crate) fn meta_word(&self) -> u64 {
        u64::from(self.src_port)
            | u64::from(self.dst_port) << 16
            | u64::from(self.proto) << 32
            | u64::from(self.ip_version) << 40
            | u64::from(self.vlan.map_or(0x1_0000u32, u32::from)) << 47
    }
    pub fn src_ip(&self) -> IpAddr {
        to_ip(&self.src, self.ip_version)
    }

    pub fn dst_ip(&self) -> IpAddr {
        to_ip(&self.dst, self.ip_version)
    }
}

/// [`FlowKey::hash64`] from the key's parts: each address as its two
/// little-endian words, and [`FlowKey::meta_word`]. The one-pass decoder
/// hashes the words it already holds in registers: reading back a key it has
/// just written byte-wise would stall on store forwarding.
#[inline]
pub(crate) fn hash_parts(src: [u64; 2], dst: [u64; 2], meta: u64) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for x in [src[0], src[1], dst[0], dst[1], meta] {
        h = (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 29)
}

pub fn to_ip(b: &[u8; 16], version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// The inverse of `to_ip`: the key layout of an address.
pub fn from_ip(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey {
            src: from_ip("10.0.0.2".parse().unwrap()),
            dst: from_ip("10.0.0.1".parse().unwrap()),
            src_port: 5,
            dst_port: 80,
            proto: 6,
            ip_version: 4,
            vlan: Some(7),
        }
    }

    #[test]
    fn canonical_is_direction_free() {
        let k = key();
        let (a, fa) = k.canonical();
        let (b, fb) = k.reversed().canonical();
        assert_eq!(a, b);
        assert_ne!(fa, fb);
        assert_eq!(a.hash64(), b.hash64());
        assert_eq!(k.src_ip().to_string(), "10.0.0.2");
    }

    #[test]
    fn hash_sees_vlan_and_ports() {
        let (k, _) = key().canonical();
        let mut other = k;
        other.vlan = None;
        assert_ne!(k.hash64(), other.hash64());
        other = k;
        other.src_port += 1;
        assert_ne!(k.hash64(), other.hash64());
    }
}
