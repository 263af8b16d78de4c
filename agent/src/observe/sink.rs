//! The observer behind the record stream: every record goes on to the inner
//! sink unchanged, and what it completes is written as NDJSON to its own
//! output.

use std::io::{self, BufWriter, Write};

use vmflow_proto::FlowRecord;

use super::{Observation, Observer, ObserverStats, Reload};
use crate::sink::RecordSink;

pub struct ObservingSink<S, W: Write> {
    inner: S,
    observer: Observer,
    out: BufWriter<W>,
    pending: Vec<Observation>,
    reload: Option<Reload>,
}

impl<S: RecordSink, W: Write + Send> ObservingSink<S, W> {
    pub fn new(inner: S, observer: Observer, out: W) -> Self {
        ObservingSink {
            inner,
            observer,
            out: BufWriter::new(out),
            pending: Vec::new(),
            reload: None,
        }
    }

    /// Reads the lists and databases again when they change (long runs).
    pub fn reloading(mut self, reload: Reload) -> Self {
        self.reload = Some(reload);
        self
    }

    pub fn stats(&self) -> &ObserverStats {
        self.observer.stats()
    }

    fn observe(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        match self.reload.as_mut().and_then(Reload::poll) {
            Some(Ok((lists, enricher))) => {
                self.observer.replace(lists, enricher);
                tracing::info!("observations: watchlists and databases read again");
            }
            Some(Err(e)) => tracing::warn!("observations: {e}; the lists read before stay"),
            None => {}
        }
        for r in records {
            self.observer.record(r, &mut self.pending);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        for o in self.pending.drain(..) {
            serde_json::to_writer(&mut self.out, &o)?;
            self.out.write_all(b"\n")?;
        }
        // Rare and worth seeing at once (a live capture runs for days).
        self.out.flush()
    }
}

impl<S: RecordSink, W: Write + Send> RecordSink for ObservingSink<S, W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.observe(records)?;
        self.inner.write(records)
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> io::Result<()> {
        for p in parts {
            self.observe(p)?;
        }
        self.inner.write_parts(parts)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.inner.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()?;
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
        self.inner.finish()
    }
}
