//! The flow key as the table stores it: 17 bytes instead of [`FlowKey`]'s 40.
//! An IPv4 key keeps its addresses in place; any other key's addresses live in
//! a side table ([`Addrs`]) and the stored key holds their entry. Four flows
//! in five are IPv4, and their 24 bytes of zeros were most of what kept a
//! flow from fitting in 96 bytes.

use super::FlowKey;

/// `kind` bits.
const VLAN: u8 = 0x01;
const SIDE: u8 = 0x02;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct StoredKey {
    /// In place: source address in the low four bytes, destination in the
    /// high four; in the side table: the entry number.
    pub addrs: u64,
    /// Ports, protocol, IP version and VLAN id ([`meta`]).
    pub meta: u64,
    pub kind: u8,
}

/// A packet's key in stored form for lookups: computed once a packet, no side
/// table entry taken.
#[derive(Clone, Copy)]
pub(super) struct Probe {
    key: StoredKey,
}

impl Probe {
    #[inline(always)]
    pub fn new(k: &FlowKey) -> Probe {
        let side = !in_place(k);
        Probe {
            key: StoredKey {
                addrs: if side { 0 } else { v4_pair(k) },
                meta: meta(k),
                kind: kind(k, side),
            },
        }
    }
}

#[inline(always)]
fn in_place(k: &FlowKey) -> bool {
    k.ip_version == 4 && k.src[4..] == [0; 12] && k.dst[4..] == [0; 12]
}

#[inline(always)]
fn v4_pair(k: &FlowKey) -> u64 {
    let [a, b, c, d, ..] = k.src;
    let [e, f, g, h, ..] = k.dst;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

#[inline(always)]
fn meta(k: &FlowKey) -> u64 {
    u64::from(k.src_port)
        | u64::from(k.dst_port) << 16
        | u64::from(k.proto) << 32
        | u64::from(k.ip_version) << 40
        | u64::from(k.vlan.unwrap_or(0)) << 48
}

#[inline(always)]
fn kind(k: &FlowKey, side: bool) -> u8 {
    (if k.vlan.is_some() { VLAN } else { 0 }) | if side { SIDE } else { 0 }
}

/// Addresses of the stored keys that do not hold them in place.
#[derive(Default)]
pub(super) struct Addrs {
    pairs: Vec<[[u8; 16]; 2]>,
    free: Vec<u32>,
}

impl Addrs {
    /// The key in stored form, taking a side table entry if it needs one.
    pub fn store(&mut self, k: &FlowKey) -> StoredKey {
        let Probe { mut key } = Probe::new(k);
        if key.kind & SIDE != 0 {
            let pair = [k.src, k.dst];
            let at = match self.free.pop() {
                Some(i) => {
                    self.pairs[i as usize] = pair;
                    i
                }
                None => {
                    self.pairs.push(pair);
                    (self.pairs.len() - 1) as u32
                }
            };
            key.addrs = u64::from(at);
        }
        key
    }

    /// Gives a stored key's side table entry back (the key is gone).
    pub fn release(&mut self, s: &StoredKey) {
        if s.kind & SIDE != 0 {
            self.free.push(s.addrs as u32);
        }
    }

    /// Whether `s` is the key `p` was made from.
    #[inline(always)]
    pub fn matches(&self, s: &StoredKey, p: &Probe, k: &FlowKey) -> bool {
        if s.meta != p.key.meta || s.kind != p.key.kind {
            return false;
        }
        if s.kind & SIDE == 0 {
            s.addrs == p.key.addrs
        } else {
            self.pairs
                .get(s.addrs as usize)
                .is_some_and(|pair| pair[0] == k.src && pair[1] == k.dst)
        }
    }

    /// The whole key back.
    pub fn key(&self, s: &StoredKey) -> FlowKey {
        let (src, dst) = if s.kind & SIDE == 0 {
            let b = s.addrs.to_le_bytes();
            let (mut src, mut dst) = ([0; 16], [0; 16]);
            src[..4].copy_from_slice(&b[..4]);
            dst[..4].copy_from_slice(&b[4..]);
            (src, dst)
        } else {
            let [src, dst] = self.pairs[s.addrs as usize];
            (src, dst)
        };
        FlowKey {
            src,
            dst,
            src_port: s.meta as u16,
            dst_port: (s.meta >> 16) as u16,
            proto: (s.meta >> 32) as u8,
            ip_version: (s.meta >> 40) as u8,
            vlan: (s.kind & VLAN != 0).then_some((s.meta >> 48) as u16),
        }
    }

    /// Side table capacity (tests).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.pairs.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_key(rng: &mut Rng) -> FlowKey {
        let mut k = FlowKey {
            src_port: rng.below(4) as u16,
            dst_port: rng.below(65536) as u16,
            proto: [6, 17, 1, 58][rng.below(4) as usize],
            ip_version: [4, 6, 0][rng.below(3) as usize],
            vlan: [None, Some(0), Some(4095)][rng.below(3) as usize],
            ..FlowKey::default()
        };
        // IPv4 keys mostly in their usual form, sometimes with stray bytes.
        let n = if k.ip_version == 4 && rng.below(8) != 0 {
            4
        } else {
            16
        };
        for b in k.src[..n].iter_mut().chain(k.dst[..n].iter_mut()) {
            *b = rng.below(3) as u8;
        }
        k
    }

    /// Every key comes back whole, and a stored key matches exactly the keys
    /// equal to its own (few distinct values, so near misses are common).
    #[test]
    fn stored_keys_are_exact() {
        let mut rng = Rng::new(7);
        let mut addrs = Addrs::default();
        let mut held: Vec<(FlowKey, StoredKey)> = Vec::new();
        for _ in 0..20_000 {
            let k = random_key(&mut rng);
            if held.len() > 50 || (rng.below(3) == 0 && !held.is_empty()) {
                let (gone, s) = held.swap_remove(rng.below(held.len() as u64) as usize);
                assert_eq!(addrs.key(&s), gone);
                addrs.release(&s);
            }
            let p = Probe::new(&k);
            for (other, s) in &held {
                assert_eq!(addrs.matches(s, &p, &k), *other == k, "{other:?} {k:?}");
            }
            let s = addrs.store(&k);
            assert_eq!(addrs.key(&s), k);
            assert!(addrs.matches(&s, &p, &k));
            held.push((k, s));
        }
        for (k, s) in &held {
            assert_eq!(addrs.key(s), *k);
        }
        assert!(addrs.capacity() < 200, "entries are reused");
    }
}
