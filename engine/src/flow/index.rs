//! The flow table's hash index: open addressing, linear probing, backward-shift
//! deletion. Written out (instead of using a general map) for one reason: the
//! shard knows the hashes of the next packets in its batch, and this layout lets
//! it prefetch their buckets, which hides most of the cache misses that
//! otherwise dominate a large flow table.

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Bucket {
    /// Low 32 bits of the hash: they reject most mismatches without touching
    /// the slot, and give the home bucket back when entries move (the table
    /// never has more than 2^32 buckets), so the index never reads a slot.
    tag: u32,
    slot: u32,
}

pub struct Index {
    buckets: Vec<Bucket>,
    mask: usize,
    len: usize,
}

impl Index {
    pub fn new() -> Self {
        Index {
            buckets: vec![
                Bucket {
                    tag: 0,
                    slot: EMPTY
                };
                64
            ],
            mask: 63,
            len: 0,
        }
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash as u32) as usize & self.mask
    }

    /// Asks the CPU to start loading the bucket `hash` will probe first.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let p = &self.buckets[self.home(hash)] as *const Bucket;
        prefetch(p.cast());
    }

    /// The slot in the first bucket `hash` probes, if any: a cheap guess of
    /// where the flow lives, worth prefetching.
    #[inline]
    pub fn first_guess(&self, hash: u64) -> Option<u32> {
        let b = self.buckets[self.home(hash)];
        (b.slot != EMPTY && b.tag == tag(hash)).then_some(b.slot)
    }

    /// Finds the slot holding the flow with this hash for which `eq` holds.
    // Always inlined into the table's packet path, its hot caller: as a call
    // it cost the shard ~10 instructions a packet more (callgrind).
    #[inline(always)]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let mut i = self.home(hash);
        loop {
            let b = self.buckets[i];
            if b.slot == EMPTY {
                return None;
            }
            if b.tag == t && eq(b.slot) {
                return Some(b.slot);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds a slot that is known not to be present.
    pub fn insert(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        self.place(hash, slot);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, slot: u32) {
        let mut i = self.home(hash);
        while self.buckets[i].slot != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = Bucket {
            tag: tag(hash),
            slot,
        };
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        let cap = old.len() * 2;
        self.buckets = vec![
            Bucket {
                tag: 0,
                slot: EMPTY
            };
            cap
        ];
        self.mask = cap - 1;
        for b in old {
            if b.slot != EMPTY {
                self.place(u64::from(b.tag), b.slot);
            }
        }
    }

    /// Removes `slot` (stored under `hash`), shifting later entries of the
    /// probe run back so lookups never need tombstones.
    pub fn remove(&mut self, hash: u64, slot: u32) {
        let mut i = self.home(hash);
        loop {
            let b = self.buckets[i];
            if b.slot == EMPTY {
                return;
            }
            if b.slot == slot {
                break;
            }
            i = (i + 1) & self.mask;
        }
        self.len -= 1;
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let b = self.buckets[j];
            if b.slot == EMPTY {
                break;
            }
            let home = self.home(u64::from(b.tag));
            // Move b into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = Bucket {
            tag: 0,
            slot: EMPTY,
        };
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[inline]
fn tag(hash: u64) -> u32 {
    hash as u32
}

/// A hint to the cache; it never faults and has no effect on program state.
#[inline]
#[allow(unsafe_code)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not dereference the pointer in the
    // language sense, cannot fault on any address, and changes no memory or
    // register state visible to the program. SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Random inserts and removes against a reference model, with a weak hash
    /// so probe runs collide and wrap.
    #[test]
    fn matches_a_reference_map() {
        let mut rng = Rng::new(3);
        let mut idx = Index::new();
        let mut model: std::collections::HashMap<u32, u64> = Default::default();
        let hash_of_key = |k: u32| u64::from(k % 97);
        for step in 0..200_000u32 {
            let k = rng.below(3_000) as u32;
            let h = hash_of_key(k);
            let found = idx.find(h, |s| s == k);
            assert_eq!(found.is_some(), model.contains_key(&k), "step {step}");
            if found.is_some() {
                idx.remove(h, k);
                model.remove(&k);
            } else {
                idx.insert(h, k);
                model.insert(k, h);
            }
            assert_eq!(idx.len(), model.len());
        }
        for (&k, &h) in &model {
            assert_eq!(idx.find(h, |s| s == k), Some(k));
        }
    }
}
