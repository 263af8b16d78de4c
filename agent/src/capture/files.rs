//! Several capture files read as one packet stream, merged by packet time.
//!
//! Files given out of order, or captured side by side (two hosts over the
//! same hour), would otherwise reach the flow table out of time order and
//! split flows that idle or active timeouts judge by packet time. The merge
//! is a k-way merge on the head packet of each file; ties go to the file
//! given first, then to the earlier packet in it, so the output is the same
//! on every run. A file is opened only once the merge reaches its first
//! packet's time, so files that follow each other in time are read one at a
//! time, as before.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::filter::PacketFilter;
use super::input::{is_stdin, DamageSlot, Input};
use super::progress::ReadProgress;
use super::{CaptureError, CaptureReader, RawPacket, SourceError};
use crate::config::Config;
use crate::pipeline::live::EngineLive;
use crate::pipeline::{self, FileWarning, Report};
use crate::sink::RecordSink;

/// Replays capture files through the engine into `sink`.
pub fn replay<S: RecordSink>(paths: Vec<PathBuf>, cfg: &Config, sink: S) -> Report<SourceError> {
    let mut files = CaptureFiles::new(paths);
    let mut report = pipeline::run(cfg, sink, |feed| files.for_each(|p| feed.packet(p)));
    report.summary.warnings = files.warnings;
    report
}

/// [`replay`], showing the engine's counts on `live` as it goes (every
/// 64 Ki packets) and its final ones at the end, and handing the engine
/// only the packets `filter` passes.
pub fn replay_watched<S: RecordSink>(
    paths: Vec<PathBuf>,
    cfg: &Config,
    sink: S,
    live: &EngineLive,
    filter: Option<PacketFilter>,
) -> Report<SourceError> {
    const STEP: u32 = 1 << 16;
    let mut files = CaptureFiles::new(paths);
    files.filter = filter;
    let mut report = pipeline::run(cfg, sink, |feed| {
        let mut n = 0u32;
        let r = files.for_each(|p| {
            feed.packet(p);
            n += 1;
            if n == STEP {
                live.publish(feed.progress());
                n = 0;
            }
        });
        live.publish(feed.progress());
        r
    });
    report.summary.warnings = files.warnings;
    report.summary.filtered = files.filter.map_or(0, |f| f.filtered);
    live.publish_summary(&report.summary);
    report
}

/// [`replay`], telling `progress` how far it has read as it goes, and
/// handing the engine only the packets `filter` passes (see
/// [`CaptureFiles::filter`]).
pub fn replay_with_progress<S: RecordSink>(
    paths: Vec<PathBuf>,
    cfg: &Config,
    sink: S,
    progress: Arc<ReadProgress>,
    filter: Option<PacketFilter>,
) -> Report<SourceError> {
    /// Packets are published in steps: an atomic add per packet would cost
    /// a few percent at top speed.
    const STEP: u64 = 4096;
    let mut files = CaptureFiles::new(paths);
    files.progress = Some(progress.clone());
    files.filter = filter;
    let mut report = pipeline::run(cfg, sink, |feed| {
        let mut n = 0u64;
        let r = files.for_each(|p| {
            feed.packet(p);
            n += 1;
            if n == STEP {
                progress.add_packets(n);
                n = 0;
            }
        });
        progress.add_packets(n);
        r
    });
    report.summary.warnings = files.warnings;
    report.summary.filtered = files.filter.map_or(0, |f| f.filtered);
    report
}

/// Every file opens and starts like a capture: checked before a run starts,
/// so a wrong path or a file that is no capture is an error on its own
/// rather than after an empty run's summary. Standard input (`-`) can be
/// read only once, so it is checked when the run reads it. With a filter,
/// it is compiled for each file's link type (its first packet's) now.
pub fn check_readable(
    paths: &[PathBuf],
    mut filter: Option<&mut PacketFilter>,
) -> Result<(), SourceError> {
    if paths.iter().filter(|p| is_stdin(p)).count() > 1 {
        return Err(SourceError::io(
            "-",
            std::io::Error::other("standard input can be given only once"),
        ));
    }
    for p in paths.iter().filter(|p| !is_stdin(p)) {
        if p.is_dir() {
            return Err(SourceError::io(
                p,
                std::io::Error::other("is a directory, not a capture file"),
            ));
        }
        let (mut reader, _) = open(p, None)?;
        if let Some(f) = filter.as_deref_mut() {
            if let Some(first) = reader.next_packet().map_err(SourceError::capture(p))? {
                f.prepare(first.linktype)
                    .map_err(|e| SourceError::filter(p, e))?;
            }
        }
    }
    Ok(())
}

/// A capture reader over `path`, its header read.
fn open(
    path: &Path,
    progress: Option<&Arc<ReadProgress>>,
) -> Result<(CaptureReader<Input>, DamageSlot), SourceError> {
    let (input, damage) = Input::open(path, progress).map_err(|e| SourceError::io(path, e))?;
    let cap = SourceError::capture(path);
    let reader = match CaptureReader::open(input) {
        Ok(r) => r,
        // A compressed header cut short is the damage, not a wrong format.
        Err(e) => return Err(cap(damage.take().map_or(e, damaged))),
    };
    if let CaptureReader::Empty(t) = &reader {
        let e = damage
            .take()
            .map_or_else(|| CaptureError::TooShort(t.what.clone()), damaged);
        return Err(cap(e));
    }
    tracing::debug!("{}: {} capture", path.display(), reader.format());
    Ok((reader, damage))
}

fn damaged(d: super::input::Damage) -> CaptureError {
    CaptureError::Damaged {
        compression: d.compression,
        offset: d.offset,
        source: d.error,
    }
}

pub struct CaptureFiles {
    paths: Vec<PathBuf>,
    pub warnings: Vec<FileWarning>,
    /// Bytes read are counted here (a progress bar), if set.
    pub progress: Option<Arc<ReadProgress>>,
    /// Only packets this passes are handed on (the rest are counted in it);
    /// a file of a link type the expression cannot be compiled for ends
    /// the run with that error, as tcpdump refuses it.
    pub filter: Option<PacketFilter>,
}

impl CaptureFiles {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        CaptureFiles {
            paths,
            warnings: Vec::new(),
            progress: None,
            filter: None,
        }
    }

    /// Feeds every packet of every file to `f`, merged by time. A damaged
    /// file ends at the damage (every packet before it is delivered), the
    /// other files are read to their end, and the first error, naming its
    /// file, is returned.
    pub fn for_each(&mut self, mut f: impl FnMut(RawPacket<'_>)) -> Result<(), SourceError> {
        match self.paths.as_slice() {
            [] => Ok(()),
            [one] => {
                let path = one.clone();
                self.read_one(&path, &mut f)
            }
            _ => self.merge(&mut f),
        }
    }

    /// One file: its packets straight from the reader's buffer.
    fn read_one(
        &mut self,
        path: &Path,
        f: &mut impl FnMut(RawPacket<'_>),
    ) -> Result<(), SourceError> {
        let (mut reader, damage) = open(path, self.progress.as_ref())?;
        let cap = SourceError::capture(path);
        match self.filter.as_mut() {
            None => reader.for_each_packet(f).map_err(&cap)?,
            Some(filter) => {
                while let Some(p) = reader.next_packet().map_err(&cap)? {
                    if filter
                        .accepts(&p)
                        .map_err(|e| SourceError::filter(path, e))?
                    {
                        f(p);
                    }
                }
            }
        }
        self.finish(path, &reader, &damage)
    }

    /// At a file's end: a truncation is a warning, a damaged compressed
    /// stream an error.
    fn finish(
        &mut self,
        path: &Path,
        reader: &CaptureReader<Input>,
        damage: &DamageSlot,
    ) -> Result<(), SourceError> {
        if let Some(d) = damage.take() {
            return Err(SourceError::capture(path)(damaged(d)));
        }
        if let Some(t) = reader.truncation() {
            tracing::warn!(
                "{}: input ends inside a record at offset {} ({}); every complete record before it was read",
                path.display(),
                t.offset,
                t.what
            );
            self.warnings.push(FileWarning {
                path: path.to_path_buf(),
                offset: t.offset,
                what: t.what.clone(),
            });
        }
        Ok(())
    }

    /// The k-way merge over several files.
    fn merge(&mut self, f: &mut impl FnMut(RawPacket<'_>)) -> Result<(), SourceError> {
        let paths = self.paths.clone();
        let mut first_err: Option<SourceError> = None;
        let mut lanes: Vec<Option<Lane>> = paths.iter().map(|_| None).collect();
        // Files not yet open, by their first packet's time (then file
        // order), the earliest last so it pops first.
        let mut pending: Vec<(u64, usize)> = Vec::new();
        for (idx, path) in paths.iter().enumerate() {
            match self.open_lane(path) {
                Ok(Some(lane)) => {
                    pending.push((lane.head.ts_ns, idx));
                    // Standard input cannot be opened twice: it stays open.
                    if is_stdin(path) {
                        lanes[idx] = Some(lane);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        pending.sort_unstable_by(|a, b| b.cmp(a));
        // Open lanes by (head time, file index).
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        loop {
            // Open every file whose first packet is due before the next one.
            while let Some(&(first_ts, idx)) = pending.last() {
                if heap.peek().is_some_and(|Reverse((ts, _))| first_ts > *ts) {
                    break;
                }
                pending.pop();
                if lanes[idx].is_none() {
                    match self.open_lane(&paths[idx]) {
                        Ok(lane) => lanes[idx] = lane,
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if let Some(lane) = &lanes[idx] {
                    heap.push(Reverse((lane.head.ts_ns, idx)));
                }
            }
            let Some(Reverse((_, idx))) = heap.pop() else {
                break;
            };
            let Some(lane) = lanes[idx].as_mut() else {
                continue;
            };
            let head = lane.head.packet();
            let pass = match self.filter.as_mut().map(|flt| flt.accepts(&head)) {
                None | Some(Ok(true)) => true,
                Some(Ok(false)) => false,
                Some(Err(e)) => return Err(SourceError::filter(&paths[idx], e)),
            };
            if pass {
                f(head);
            }
            match self.advance(&paths[idx], lane) {
                Ok(true) => heap.push(Reverse((lane.head.ts_ns, idx))),
                Ok(false) => lanes[idx] = None,
                Err(e) => {
                    first_err.get_or_insert(e);
                    lanes[idx] = None;
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Opens a file and reads its first packet; `None` if it holds none.
    fn open_lane(&mut self, path: &Path) -> Result<Option<Lane>, SourceError> {
        let (reader, damage) = open(path, self.progress.as_ref())?;
        let mut lane = Lane {
            reader,
            damage,
            head: Head::default(),
        };
        Ok(self.advance(path, &mut lane)?.then_some(lane))
    }

    /// Copies the lane's next packet into its head; false at the file's end.
    fn advance(&mut self, path: &Path, lane: &mut Lane) -> Result<bool, SourceError> {
        match lane
            .reader
            .next_packet()
            .map_err(SourceError::capture(path))?
        {
            Some(p) => {
                lane.head.set(&p);
                Ok(true)
            }
            None => {
                self.finish(path, &lane.reader, &lane.damage)?;
                Ok(false)
            }
        }
    }
}

/// One file in the merge and the packet it offers next.
struct Lane {
    reader: CaptureReader<Input>,
    damage: DamageSlot,
    head: Head,
}

/// A packet copied out of its reader's buffer, so every file's next packet
/// can be held at once.
#[derive(Default)]
struct Head {
    ts_ns: u64,
    linktype: u32,
    orig_len: u32,
    data: Vec<u8>,
}

impl Head {
    fn set(&mut self, p: &RawPacket<'_>) {
        self.ts_ns = p.ts_ns;
        self.linktype = p.linktype;
        self.orig_len = p.orig_len;
        self.data.clear();
        self.data.extend_from_slice(p.data);
    }

    fn packet(&self) -> RawPacket<'_> {
        RawPacket {
            ts_ns: self.ts_ns,
            linktype: self.linktype,
            orig_len: self.orig_len,
            data: &self.data,
        }
    }
}
