//! The observer behind the record stream: records are tagged with where
//! their remote end is (when `[enrich]` or a `[[watchlist]]` is configured)
//! and go on to the inner sink; what they complete is written as NDJSON to
//! the observations' own output, if there is one, or (`vmflow run`) into
//! the record stream's batches ([`Carried`]).

use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex};

use vmflow_proto::FlowRecord;

use super::{Carried, Observation, Observer, ObserverState, ObserverStats, Reload};

/// Where an observing sink leaves its observer's state at each flush (a
/// checkpoint follows a flush), for the checkpoint to take.
pub type StateSlot = Arc<Mutex<Option<ObserverState>>>;
use crate::sink::RecordSink;

pub struct ObservingSink<S, W: Write> {
    inner: S,
    observer: Observer,
    /// `None`: records are only tagged, no observation is raised.
    out: Option<BufWriter<W>>,
    pending: Vec<Observation>,
    /// The records of one write, tagged (reused).
    tagged: Vec<FlowRecord>,
    reload: Option<Reload>,
    /// `out` is the record stream's batches: each observation must follow
    /// the record that raised it into the inner sink.
    carry: bool,
    slot: Option<StateSlot>,
}

impl<S: RecordSink, W: Write + Send> ObservingSink<S, W> {
    pub fn new(inner: S, observer: Observer, out: Option<W>) -> Self {
        ObservingSink {
            inner,
            observer,
            out: out.map(BufWriter::new),
            pending: Vec::new(),
            tagged: Vec::new(),
            reload: None,
            carry: false,
            slot: None,
        }
    }

    /// Reads the lists and databases again when they change (long runs).
    pub fn reloading(mut self, reload: Reload) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Leaves the observer's state in `slot` at every flush.
    pub fn checkpointed_into(mut self, slot: StateSlot) -> Self {
        self.slot = Some(slot);
        self
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Continues from a checkpointed state.
    pub fn restore(&mut self, state: ObserverState) {
        self.observer.restore(state);
    }

    pub fn stats(&self) -> &ObserverStats {
        self.observer.stats()
    }

    fn reload(&mut self) {
        match self.reload.as_mut().and_then(Reload::poll) {
            Some(Ok((lists, enricher))) => {
                self.observer.replace(lists, enricher);
                tracing::info!("observations: watchlists and databases read again");
            }
            Some(Err(e)) => tracing::warn!("observations: {e}; the lists read before stay"),
            None => {}
        }
    }

    fn observe(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        if self.out.is_none() {
            return Ok(());
        }
        for r in records {
            self.observer.record(r, &mut self.pending);
        }
        self.emit()
    }

    /// Writes the pending observations out.
    fn emit(&mut self) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            self.pending.clear();
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        for o in self.pending.drain(..) {
            serde_json::to_writer(&mut *out, &o)?;
            out.write_all(b"\n")?;
        }
        // Rare and worth seeing at once (a live capture runs for days).
        out.flush()
    }

    /// Records to the inner sink, each observation right after the record
    /// that raised it: the batcher then knows whether that record was new
    /// to it or one an earlier run already spooled (with its observations).
    fn carry_part(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        let mut start = 0;
        for (i, r) in records.iter().enumerate() {
            self.observer.record(r, &mut self.pending);
            if !self.pending.is_empty() {
                self.inner.write(&records[start..=i])?;
                start = i + 1;
                self.emit()?;
            }
        }
        if start < records.len() {
            self.inner.write(&records[start..])?;
        }
        Ok(())
    }

    /// The records of `parts`, tagged, in `self.tagged`.
    fn tag(&mut self, parts: &[&[FlowRecord]]) {
        self.tagged.clear();
        for r in parts.iter().copied().flatten() {
            let mut r = r.clone();
            self.observer.tag(&mut r);
            self.tagged.push(r);
        }
    }
}

impl<S: RecordSink> ObservingSink<S, Carried> {
    /// Observations raised into `carried`, which the inner sink (a lane's
    /// batcher) takes into its batches.
    pub fn carrying(inner: S, observer: Observer, carried: Carried) -> Self {
        let mut s = ObservingSink::new(inner, observer, Some(carried));
        s.carry = true;
        s
    }
}

impl<S: RecordSink, W: Write + Send> RecordSink for ObservingSink<S, W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.write_parts(&[records])
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> io::Result<()> {
        self.reload();
        if self.carry {
            if !self.observer.tags() {
                return parts.iter().try_for_each(|p| self.carry_part(p));
            }
            self.tag(parts);
            let tagged = std::mem::take(&mut self.tagged);
            let r = self.carry_part(&tagged);
            self.tagged = tagged;
            return r;
        }
        if !self.observer.tags() {
            for p in parts {
                self.observe(p)?;
            }
            return self.inner.write_parts(parts);
        }
        self.tag(parts);
        let tagged = std::mem::take(&mut self.tagged);
        let r = self
            .observe(&tagged)
            .and_then(|_| self.inner.write(&tagged));
        self.tagged = tagged;
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
        }
        if let Some(slot) = &self.slot {
            if let Ok(mut s) = slot.lock() {
                *s = Some(self.observer.state());
            }
        }
        self.inner.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
            let s = self.observer.stats();
            tracing::info!(
                failed_access = s.failed_access,
                exposed_service = s.exposed_service,
                watchlist = s.watchlist,
                scan = s.scan,
                new_country = s.new_country,
                untracked = s.untracked,
                "observations"
            );
        }
        self.inner.finish()
    }
}
