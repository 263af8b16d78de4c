//! The engine's output on the agent: records are grouped into batches (closed
//! on size or age), encoded as record blocks and appended to the spool, from
//! which the shipper sends them. The engine only ever waits on a local disk
//! append, never on the network.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vmflow_proto::{encode_block, FlowRecord};

use super::spool::Spool;
use super::RecordSink;
use crate::observe::{Carried, ObservingSink};

/// A sink that passes over the records an earlier run already took (so a
/// source that repeats them after a restart does not repeat them downstream).
pub trait Skips: RecordSink {
    /// Records still to be passed over.
    fn pending_skip(&self) -> u64;
    /// Passes over the next `n` records.
    fn set_skip(&mut self, n: u64);
}

impl Skips for SpoolSink {
    fn pending_skip(&self) -> u64 {
        SpoolSink::pending_skip(self)
    }

    fn set_skip(&mut self, n: u64) {
        SpoolSink::set_skip(self, n)
    }
}

/// Skipping passes through the observer: what an earlier run spooled is
/// the records the batcher passes over (and the observations they raised).
impl<S: Skips, W: std::io::Write + Send> Skips for ObservingSink<S, W> {
    fn pending_skip(&self) -> u64 {
        self.inner().pending_skip()
    }

    fn set_skip(&mut self, n: u64) {
        self.inner_mut().set_skip(n)
    }
}

pub struct SpoolSink {
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    batch_records: usize,
    batch_age: Duration,
    pending: Vec<FlowRecord>,
    opened: Instant,
    /// Records of the stream that an earlier run already spooled.
    skip: u64,
    pub skipped: u64,
    /// Records lost in the current run of failed appends (a full disk): the
    /// first failure is logged, the rest counted until an append succeeds.
    failing: Option<u64>,
    /// The capture's running count of lost packets, stamped on each batch.
    drops: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Observations raised from the records (`[observe] ship`), taken into
    /// the open batch; see [`Carried`].
    carried: Option<Carried>,
    /// The open batch's observations (NDJSON lines).
    observations: Vec<u8>,
    /// Whether the last record handed in was one an earlier run spooled:
    /// observations raised by it were spooled with it then.
    last_skipped: bool,
}

impl SpoolSink {
    /// A sink that hands every record to the spool (set a skip count to
    /// resume a deterministic source).
    pub fn new(
        spool: Arc<Mutex<Spool>>,
        notify: Arc<Notify>,
        batch_records: usize,
        batch_age: Duration,
    ) -> Self {
        SpoolSink {
            spool,
            notify,
            batch_records: batch_records.max(1),
            batch_age,
            pending: Vec::with_capacity(batch_records),
            opened: Instant::now(),
            skip: 0,
            skipped: 0,
            failing: None,
            drops: None,
            carried: None,
            observations: Vec::new(),
            last_skipped: false,
        }
    }

    /// Takes the observations raised into `carried` into the batches.
    pub fn carrying(mut self, carried: Carried) -> Self {
        self.carried = Some(carried);
        self
    }

    /// Observations raised since the last call go with the open batch,
    /// unless the record that raised them was skipped.
    fn take_observations(&mut self) {
        let Some(c) = &self.carried else {
            return;
        };
        let lines = c.take();
        if !self.last_skipped {
            self.observations.extend_from_slice(&lines);
        }
    }

    /// Stamps every batch with this running count of lost packets.
    pub fn with_drops(mut self, drops: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.drops = Some(drops);
        self
    }

    /// Sets how many of the next records an earlier run already spooled.
    pub fn set_skip(&mut self, n: u64) {
        self.skip = n;
    }

    /// Records still to be skipped (resuming after an earlier run).
    pub fn pending_skip(&self) -> u64 {
        self.skip
    }

    fn close_batch(&mut self) {
        if self.pending.is_empty() && self.observations.is_empty() {
            return;
        }
        let block = encode_block(&self.pending, &self.observations, 1);
        let n = self.pending.len() as u32;
        let drops = self
            .drops
            .as_ref()
            .map_or(0, |d| d.load(std::sync::atomic::Ordering::Relaxed));
        let res = match self.spool.lock() {
            Ok(mut s) => s
                .append(n, drops, &block)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(_) => Err("spool lock poisoned".into()),
        };
        match (res, self.failing) {
            (Ok(()), Some(lost)) => {
                tracing::warn!(
                    "spool writable again; {lost} records could not be spooled and are lost"
                );
                self.failing = None;
            }
            (Ok(()), None) => {}
            (Err(e), None) => {
                // The spool counts them (`failed_records`) and keeps their
                // positions; say it once per episode.
                tracing::error!(
                    "spool append failed, {n} records lost: {e}; further failures are counted until it recovers"
                );
                self.failing = Some(u64::from(n));
            }
            (Err(_), Some(lost)) => self.failing = Some(lost + u64::from(n)),
        }
        self.pending.clear();
        self.observations.clear();
        self.opened = Instant::now();
        self.notify.notify_one();
    }

    /// Closes the open batch and makes everything spooled durable.
    fn close_and_sync(&mut self) -> std::io::Result<()> {
        self.take_observations();
        self.close_batch();
        match self.spool.lock() {
            Ok(mut s) => s.sync_now().map_err(std::io::Error::other),
            Err(_) => Err(std::io::Error::other("spool lock poisoned")),
        }
    }
}

impl RecordSink for SpoolSink {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        self.write_parts(&[records])
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        self.take_observations();
        for &part in parts {
            let mut recs = part;
            if self.skip > 0 {
                let n = (self.skip as usize).min(recs.len());
                self.skip -= n as u64;
                self.skipped += n as u64;
                recs = &recs[n..];
                self.last_skipped |= n > 0;
            }
            for r in recs {
                self.last_skipped = false;
                if self.pending.is_empty() {
                    self.opened = Instant::now();
                }
                self.pending.push(r.clone());
                if self.pending.len() >= self.batch_records {
                    self.close_batch();
                }
            }
        }
        if !self.pending.is_empty() && self.opened.elapsed() >= self.batch_age {
            self.close_batch();
        }
        Ok(())
    }

    /// A checkpoint follows: every record before it must be durable in the
    /// spool first, or a power loss would leave a checkpoint that claims
    /// records the spool no longer has.
    fn flush(&mut self) -> std::io::Result<()> {
        self.close_and_sync()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.close_and_sync()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ObserveConfig;
    use crate::disk::sim::SimFs;
    use crate::observe::{Observer, ObservingSink, Watchlist};

    /// Records 0..n, every third to a watchlisted address (one observation
    /// each, carrying the record's flow id).
    fn records(n: u64) -> Vec<FlowRecord> {
        (0..n)
            .map(|i| {
                let mut r = crate::testkit::record(i, 1_000 + i);
                r.direction = vmflow_proto::Direction::Outbound;
                if i % 3 == 0 {
                    r.dst_addr = "192.0.2.9".parse().unwrap();
                }
                r
            })
            .collect()
    }

    /// The flow ids of the observations each spooled batch carries.
    fn spooled(skip: u64, writes: &[std::ops::Range<usize>], all: &[FlowRecord]) -> Vec<u64> {
        let fs: crate::disk::SharedFs = Arc::new(SimFs::new());
        let spool = Spool::open(fs, Path::new("/spool"), 1 << 20).unwrap();
        let spool = Arc::new(Mutex::new(spool));
        let carried = Carried::default();
        let mut batcher = SpoolSink::new(spool.clone(), Arc::default(), 4, Duration::from_secs(60))
            .carrying(carried.clone());
        batcher.set_skip(skip);
        let list = Watchlist::parse("w", "192.0.2.0/24\n").unwrap();
        let observer = Observer::new(ObserveConfig::default(), vec![list], None);
        let mut sink = ObservingSink::carrying(&mut batcher, observer, carried);
        for w in writes {
            sink.write(&all[w.clone()]).unwrap();
        }
        sink.finish().unwrap();
        let mut s = spool.lock().unwrap();
        let mut ids = Vec::new();
        for seq in s.pending_after(0) {
            let b = s.read(seq).unwrap().unwrap();
            let (_, lines) = vmflow_proto::decode_block(&b.block).unwrap();
            for l in std::str::from_utf8(&lines).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                ids.push(v["flow_ids"][0].as_u64().unwrap());
            }
        }
        ids
    }

    /// A resumed run skips the records an earlier run spooled, and exactly
    /// the observations those records raised, wherever the skip ends
    /// (inside a write, at its edge, past everything).
    #[test]
    fn observations_of_skipped_records_are_skipped_with_them() {
        let all = records(40);
        let writes = [0..7, 7..8, 8..20, 20..21, 21..40];
        let every: Vec<u64> = (0..40).filter(|i| i % 3 == 0).collect();
        assert_eq!(spooled(0, &writes, &all), every);
        for skip in [1, 3, 6, 7, 8, 9, 20, 21, 22, 39, 40, 45] {
            let want: Vec<u64> = every.iter().copied().filter(|&i| i >= skip).collect();
            assert_eq!(spooled(skip, &writes, &all), want, "skip {skip}");
        }
    }
}
