//! Attributes later IP fragments to their flow. The first fragment carries the
//! ports; later ones carry only (src, dst, id, protocol). Later fragments that
//! arrive before their first fragment are held (bounded) until it comes; if it
//! never does, they are released with zero ports — counted, never guessed from
//! payload bytes.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::packet::{Decoded, Fragment};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct FragKey {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
    vlan: Option<u16>,
}

/// Ports and ICMP type/code learnt from a first fragment.
type FirstInfo = (u16, u16, Option<(u8, u8)>);

#[derive(Serialize, Deserialize)]
struct Entry {
    /// Ports and ICMP fields learnt from the first fragment.
    first: Option<FirstInfo>,
    /// Timestamp the entry's expiry is measured from.
    born: u64,
    pending: Vec<(u64, Decoded)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragStats {
    pub first: u64,
    pub later: u64,
    /// Later fragments that reached a flow through their first fragment.
    pub attributed: u64,
    /// Later fragments whose first fragment never came (flow with ports 0).
    pub orphaned: u64,
}

pub struct FragTable {
    timeout_ns: u64,
    max_entries: usize,
    max_pending: usize,
    map: HashMap<FragKey, Entry>,
    order: VecDeque<(u64, FragKey)>,
    stats: FragStats,
}

/// A fragment table's state for a checkpoint. Entries are kept in expiry
/// order; the map's own order never reaches the output.
#[derive(Serialize, Deserialize)]
pub struct FragSnapshot {
    entries: Vec<(FragKey, Entry)>,
    order: Vec<(u64, FragKey)>,
    stats: FragStats,
}

impl FragTable {
    pub fn new(timeout_ns: u64) -> Self {
        FragTable {
            timeout_ns,
            max_entries: 65_536,
            max_pending: 64,
            map: HashMap::new(),
            order: VecDeque::new(),
            stats: FragStats::default(),
        }
    }

    pub fn snapshot(&self) -> FragSnapshot {
        let mut entries: Vec<(FragKey, Entry)> = self
            .map
            .iter()
            .map(|(k, e)| {
                (
                    *k,
                    Entry {
                        first: e.first,
                        born: e.born,
                        pending: e.pending.clone(),
                    },
                )
            })
            .collect();
        entries.sort_by_key(|(k, e)| (e.born, k.id, k.src, k.dst));
        FragSnapshot {
            entries,
            order: self.order.iter().copied().collect(),
            stats: self.stats,
        }
    }

    pub fn restore(timeout_ns: u64, snap: FragSnapshot) -> Self {
        let mut t = FragTable::new(timeout_ns);
        t.map = snap.entries.into_iter().collect();
        t.order = snap.order.into_iter().collect();
        t.stats = snap.stats;
        t
    }

    pub fn stats(&self) -> FragStats {
        self.stats
    }

    pub fn set_timeout(&mut self, timeout_ns: u64) {
        self.timeout_ns = timeout_ns;
    }

    /// Passes `d` on (through `emit`) with its ports filled in, holds it, or
    /// releases it together with fragments that were waiting for it.
    #[inline]
    pub fn resolve(&mut self, ts: u64, d: Decoded, emit: &mut impl FnMut(u64, Decoded)) {
        let id = match d.fragment {
            Fragment::None => return emit(ts, d),
            Fragment::First { id } | Fragment::Later { id } => id,
        };
        let key = FragKey {
            src: d.key.src,
            dst: d.key.dst,
            id,
            proto: d.key.proto,
            vlan: d.key.vlan,
        };
        if let Fragment::First { .. } = d.fragment {
            self.stats.first += 1;
            emit(ts, d);
            let info = (d.key.src_port, d.key.dst_port, d.icmp);
            let waiting = match self.map.get_mut(&key) {
                Some(e) => {
                    e.first = Some(info);
                    std::mem::take(&mut e.pending)
                }
                None => {
                    self.insert(key, ts, Some(info));
                    Vec::new()
                }
            };
            for (t, mut w) in waiting {
                self.stats.attributed += 1;
                fill(&mut w, info);
                emit(t, w);
            }
            return;
        }
        self.stats.later += 1;
        let room = self.map.len() < self.max_entries;
        match self.map.get_mut(&key) {
            Some(Entry {
                first: Some(info), ..
            }) => {
                let mut d = d;
                fill(&mut d, *info);
                self.stats.attributed += 1;
                emit(ts, d);
            }
            Some(e) if e.pending.len() < self.max_pending => e.pending.push((ts, d)),
            Some(_) => self.orphan(ts, d, emit),
            None if room => {
                self.insert(key, ts, None);
                if let Some(e) = self.map.get_mut(&key) {
                    e.pending.push((ts, d));
                }
            }
            None => self.orphan(ts, d, emit),
        }
    }

    /// Drops entries older than the timeout, releasing their waiting fragments.
    pub fn expire(&mut self, now: u64, emit: &mut impl FnMut(u64, Decoded)) {
        while let Some(&(born, key)) = self.order.front() {
            if born.saturating_add(self.timeout_ns) > now {
                break;
            }
            self.order.pop_front();
            self.release(born, key, emit);
        }
    }

    /// Releases everything that is still waiting (end of input).
    pub fn drain(&mut self, emit: &mut impl FnMut(u64, Decoded)) {
        while let Some((born, key)) = self.order.pop_front() {
            self.release(born, key, emit);
        }
    }

    fn release(&mut self, born: u64, key: FragKey, emit: &mut impl FnMut(u64, Decoded)) {
        // The queue may name an entry that was since replaced; only its own
        // birth time identifies it.
        if self.map.get(&key).is_some_and(|e| e.born == born) {
            if let Some(e) = self.map.remove(&key) {
                for (t, d) in e.pending {
                    self.orphan(t, d, emit);
                }
            }
        }
    }

    fn insert(&mut self, key: FragKey, ts: u64, first: Option<FirstInfo>) {
        self.map.insert(
            key,
            Entry {
                first,
                born: ts,
                pending: Vec::new(),
            },
        );
        self.order.push_back((ts, key));
    }

    fn orphan(&mut self, ts: u64, mut d: Decoded, emit: &mut impl FnMut(u64, Decoded)) {
        self.stats.orphaned += 1;
        d.fragment = Fragment::None;
        emit(ts, d);
    }
}

fn fill(d: &mut Decoded, (sp, dp, icmp): FirstInfo) {
    d.key.src_port = sp;
    d.key.dst_port = dp;
    d.icmp = icmp;
    d.fragment = Fragment::None;
}
