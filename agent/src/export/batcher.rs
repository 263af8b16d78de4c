//! The engine's output on the agent: records are grouped into batches (closed
//! on size or age), encoded as record blocks and appended to the spool, from
//! which the shipper sends them. The engine only ever waits on a local disk
//! append, never on the network.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vmflow_proto::{encode_records, FlowRecord};

use super::spool::Spool;
use super::RecordSink;

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
        if self.pending.is_empty() {
            return;
        }
        let block = encode_records(&self.pending, 1);
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
        self.opened = Instant::now();
        self.notify.notify_one();
    }

    /// Closes the open batch and makes everything spooled durable.
    fn close_and_sync(&mut self) -> std::io::Result<()> {
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
        for &part in parts {
            let mut recs = part;
            if self.skip > 0 {
                let n = (self.skip as usize).min(recs.len());
                self.skip -= n as u64;
                self.skipped += n as u64;
                recs = &recs[n..];
            }
            for r in recs {
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
