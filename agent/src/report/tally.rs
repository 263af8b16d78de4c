//! What one pass over the records gathers for the report: the query's own
//! groups (top talkers, services, agents, directions) and, per minute, the
//! bytes by direction and which agents had records (and records marked
//! `gap`).

use std::collections::{BTreeMap, BTreeSet};

use crate::query::read::{Input, Rec};
use crate::query::{Fold, GroupBy, Groups};

pub const MINUTE_NS: u64 = 60_000_000_000;

/// Longest span one record marks as covered (a record spans at most the
/// active timeout; this keeps a damaged timestamp from filling memory).
const MAX_RECORD_MINUTES: u64 = 24 * 60;

pub struct Tally {
    pub talkers: Groups,
    pub services: Groups,
    pub agents: Groups,
    pub directions: Groups,
    /// Minute → bytes by direction (outbound, inbound, internal, external),
    /// by the minute a record begins in.
    pub bytes: BTreeMap<u64, [u64; 4]>,
    /// (agent or None, minute) that some record spans.
    pub covered: BTreeSet<(Option<u32>, u64)>,
    /// The same for records marked `gap`.
    pub gaps: BTreeSet<(Option<u32>, u64)>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            talkers: Groups::new(Some(GroupBy::Src)),
            services: Groups::new(Some(GroupBy::Service)),
            agents: Groups::new(Some(GroupBy::Agent)),
            directions: Groups::new(Some(GroupBy::Direction)),
            bytes: BTreeMap::new(),
            covered: BTreeSet::new(),
            gaps: BTreeSet::new(),
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Fold for Tally {
    fn add(&mut self, input: &Input, r: &Rec) {
        self.talkers.add(input, r);
        self.services.add(input, r);
        self.agents.add(input, r);
        self.directions.add(input, r);
        let Some(d) = crate::query::filter::DIRECTIONS
            .iter()
            .position(|d| *d == r.direction)
        else {
            return;
        };
        let first = r.first_ns / MINUTE_NS;
        let slot = self.bytes.entry(first).or_default();
        slot[d] = slot[d].saturating_add(r.fwd_bytes.saturating_add(r.rev_bytes));
        let last = (r.last_ns.max(r.first_ns) / MINUTE_NS).min(first + MAX_RECORD_MINUTES);
        for m in first..=last {
            self.covered.insert((input.agent, m));
            if r.gap {
                self.gaps.insert((input.agent, m));
            }
        }
    }

    fn merge(&mut self, o: Self) {
        self.talkers.merge(o.talkers);
        self.services.merge(o.services);
        self.agents.merge(o.agents);
        self.directions.merge(o.directions);
        for (m, b) in o.bytes {
            let slot = self.bytes.entry(m).or_default();
            for (s, x) in slot.iter_mut().zip(b) {
                *s = s.saturating_add(x);
            }
        }
        self.covered.extend(o.covered);
        self.gaps.extend(o.gaps);
    }
}
