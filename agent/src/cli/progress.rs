//! The progress bar `replay`, `bench` and `synth` show on a terminal:
//! bytes read of the total, packets and their rate, records so far. Drawn
//! by a thread of its own from the counters the reader publishes, ten times
//! a second; nothing at all when stderr is not a terminal (a pipe, a log,
//! CI). The last state stays on screen above the summary lines.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmflow_proto::FlowRecord;

use crate::capture::ReadProgress;
use crate::sink::RecordSink;

pub(super) struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What a bar counts.
pub(super) enum Counting {
    /// Bytes read of `total` (unknown when reading standard input).
    Read { total: Option<u64> },
    /// Bytes written (`synth`): the packets are known, the size is not.
    Written,
}

impl Bar {
    /// A bar over `progress`, or `None` when stderr is not a terminal.
    pub(super) fn start(what: Counting, progress: Arc<ReadProgress>) -> Option<Bar> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let (total, reading) = match what {
            Counting::Read { total } => (total, true),
            Counting::Written => (None, false),
        };
        let template = match (total, reading) {
            (Some(_), _) => "{bar:20} {bytes}/{total_bytes} ({percent}%) {msg}",
            (None, true) => "{spinner} {bytes} read {msg}",
            (None, false) => "{spinner} {bytes} written ({bytes_per_sec})",
        };
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
            .with_style(style(template));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || draw(&bar, &progress, total, &stop))
                .ok()
        };
        Some(Bar { stop, thread })
    }

    /// Draws the last state and leaves it on screen.
    pub(super) fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn draw(bar: &ProgressBar, p: &ReadProgress, total: Option<u64>, stop: &AtomicBool) {
    let t0 = Instant::now();
    loop {
        let done = stop.load(Ordering::Relaxed);
        // A file read for its first packet and again when the merge
        // reaches it counts twice: never past the total.
        let bytes = p.bytes();
        bar.set_position(total.map_or(bytes, |t| bytes.min(t)));
        let packets = p.packets();
        let rate = packets as f64 / t0.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{packets} packets ({}/s), {} records",
            human(rate),
            p.records()
        ));
        if done {
            bar.finish();
            return;
        }
        bar.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1234567.0 → "1.23 M".
fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Counts the bytes written through it (`synth`'s bar).
pub(super) struct CountBytes<W> {
    pub(super) inner: W,
    pub(super) progress: Arc<ReadProgress>,
}

impl<W: std::io::Write> std::io::Write for CountBytes<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add_bytes(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts the records a sink is handed (the bar's "records").
pub(super) struct CountRecords<S> {
    pub(super) inner: S,
    pub(super) progress: Arc<ReadProgress>,
}

impl<S: RecordSink> RecordSink for CountRecords<S> {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        self.progress.add_records(records.len() as u64);
        self.inner.write(records)
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        let n = parts.iter().map(|p| p.len() as u64).sum();
        self.progress.add_records(n);
        self.inner.write_parts(parts)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.finish()
    }
}
