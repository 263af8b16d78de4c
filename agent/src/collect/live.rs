//! What the collector has done so far, for the metrics endpoint and the
//! stats line: agents connected, batches and records written, how long
//! group commits (writes and fsyncs) take, refusals by reason. Updated per
//! batch, connection or commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{ConnectionFailure, Refusal};

/// Upper bounds (seconds) of the commit latency histogram's buckets; the
/// last bucket is everything above.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct CollectLive {
    agents: AtomicI64,
    connections: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
    duplicates: AtomicU64,
    commits: Latencies,
    /// The fsyncs of each file-store commit alone (summed per commit).
    syncs: Latencies,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

/// A latency histogram over [`COMMIT_BUCKETS`].
#[derive(Debug, Default)]
struct Latencies {
    buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    ns: AtomicU64,
}

impl Latencies {
    fn add(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.ns
            .fetch_add(took.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    fn now(&self) -> (Vec<u64>, f64) {
        (
            self.buckets.iter().map(|a| a.load(Relaxed)).collect(),
            self.ns.load(Relaxed) as f64 / 1e9,
        )
    }
}

/// A copy of [`CollectLive`] at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectNow {
    pub agents_connected: u64,
    pub connections: u64,
    pub batches_written: u64,
    pub records_written: u64,
    pub duplicates: u64,
    /// Commits per bucket of [`COMMIT_BUCKETS`] (not cumulative), the last
    /// one above them all.
    pub commit_buckets: Vec<u64>,
    pub commit_seconds: f64,
    /// The same for the fsyncs of each commit (file store only).
    pub sync_buckets: Vec<u64>,
    pub sync_seconds: f64,
    pub refusals: BTreeMap<&'static str, u64>,
}

/// Holds one "agent connected" while it lives.
pub struct Connected(Arc<CollectLive>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.agents.fetch_sub(1, Relaxed);
    }
}

impl CollectLive {
    /// An agent has said hello and is accepted: connected until the
    /// returned guard is dropped.
    pub fn connected(self: &Arc<Self>) -> Connected {
        self.agents.fetch_add(1, Relaxed);
        self.connections.fetch_add(1, Relaxed);
        Connected(self.clone())
    }

    pub fn written(&self, records: u64) {
        self.batches.fetch_add(1, Relaxed);
        self.records.fetch_add(records, Relaxed);
    }

    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    pub fn committed(&self, took: Duration) {
        self.commits.add(took);
    }

    /// The time one commit spent in fsync (its syncs summed).
    pub fn synced(&self, took: Duration) {
        self.syncs.add(took);
    }

    /// Counts a connection that ended with a refusal, by its reason.
    pub fn ended(&self, cause: &ConnectionFailure) {
        if let ConnectionFailure::Refused(why) = cause {
            if let Ok(mut m) = self.refusals.lock() {
                *m.entry(refusal_reason(why)).or_default() += 1;
            }
        }
    }

    pub fn now(&self) -> CollectNow {
        let (commits, syncs) = (self.commits.now(), self.syncs.now());
        CollectNow {
            agents_connected: self.agents.load(Relaxed).max(0) as u64,
            connections: self.connections.load(Relaxed),
            batches_written: self.batches.load(Relaxed),
            records_written: self.records.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            commit_buckets: commits.0,
            commit_seconds: commits.1,
            sync_buckets: syncs.0,
            sync_seconds: syncs.1,
            refusals: self.refusals.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }
}

/// A refusal's reason as a metric label.
pub fn refusal_reason(r: &Refusal) -> &'static str {
    match r {
        Refusal::AgentName(_) => "agent_name",
        Refusal::StreamName(_) => "stream_name",
        Refusal::OpenStore(_) => "open_store",
        Refusal::Batch(_) => "batch_out_of_order",
        Refusal::RecordCount { .. } => "record_count",
        Refusal::BadBlock { .. } => "bad_block",
        Refusal::BadObservation { .. } => "bad_observation",
        Refusal::Store { .. } => "store_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_land_in_their_bucket_and_agents_come_and_go() {
        let live = Arc::new(CollectLive::default());
        live.committed(Duration::from_micros(300));
        live.committed(Duration::from_millis(3));
        live.committed(Duration::from_secs(9));
        let g = live.connected();
        assert_eq!(live.now().agents_connected, 1);
        drop(g);
        let now = live.now();
        assert_eq!(now.agents_connected, 0);
        assert_eq!(now.connections, 1);
        assert_eq!(now.commit_buckets[0], 1);
        assert_eq!(now.commit_buckets[3], 1);
        assert_eq!(now.commit_buckets[COMMIT_BUCKETS.len()], 1);
        assert!((now.commit_seconds - 9.0033).abs() < 1e-6);
    }
}
