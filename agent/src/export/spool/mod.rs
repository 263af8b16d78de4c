//! The disk spool: record batches wait here until the collector acknowledges
//! them, across network failures, agent crashes, full disks and power loss.
//!
//! Files in the spool directory:
//! - `seg-<first seq>.spool`: segments of batch entries ([`segment`]); a
//!   segment is deleted once every batch in it is acknowledged (or dropped
//!   to stay within the bound).
//! - `ledger`: the record stream's epoch and identity, the position before
//!   the oldest batch still here, and the synced watermark ([`ledger`]).
//!
//! The rules that make it exact:
//! - **A batch is sent only once it is durable.** [`SyncJob`] syncs the
//!   segments, then records the watermark (last durable batch and record
//!   position) in the ledger; only then may those batches be sent. Whatever
//!   a power cut or later damage does to the segments, no number at or below
//!   the watermark is given to other records, so the collector never takes
//!   new records for a repeat.
//! - **The ledger moves before a segment goes.** Deleting a segment removes
//!   the last record of where the stream stood; the ledger says it first, in
//!   place, without needing free space.
//! - **Positions never shift.** Each batch carries the position of its first
//!   record in the agent's record stream; a batch that cannot be written (a
//!   full disk) keeps its positions, counted as lost, so a restarted agent
//!   with a deterministic source skips exactly what it handed over.
//! - **Damage costs only what is damaged.** A corrupt entry is skipped; the
//!   scan resyncs on the next intact one. A damaged end of the newest
//!   segment (a write the agent did not finish, or later damage) is cut.
//!   Batches missing below the watermark are counted as lost when the
//!   shipper declares the gap to the collector, or forgotten when it turns
//!   out to hold them.
//!
//! The spool is bounded: when a new batch does not fit, whole oldest
//! segments are dropped and counted, and the first drop of an episode is
//! logged.

pub mod ledger;
pub mod segment;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::disk::{self, SharedFs};
use ledger::{Ledger, LedgerFile};
use segment::{Entry, ENTRY_HEADER, MAX_BLOCK, SEG_HEADER};

/// What a spool's records come from: the source and the settings that shape
/// records. A spool resumed for another stream would skip the wrong records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamId {
    /// Readable, for error messages.
    pub text: String,
    pub fingerprint: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a batch of {len} bytes does not fit in the spool ({max} bytes)")]
    TooLarge { len: u64, max: u64 },
    #[error(
        "{}: holds {pending} unacknowledged batches of another record stream ({theirs}); this run is {ours}. \
         Run once more with the old source and settings so they are shipped, or move the directory away to discard them",
        dir.display()
    )]
    Belongs {
        dir: PathBuf,
        pending: u64,
        theirs: String,
        ours: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Unacknowledged batches and their records, and the bytes on disk.
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    /// Dropped to stay within the bound (never acknowledged, never delivered).
    pub dropped_batches: u64,
    pub dropped_records: u64,
    /// Could not be written (a full or failing disk).
    pub failed_batches: u64,
    pub failed_records: u64,
    /// Found damaged in the spool (skipped; the records between the intact
    /// neighbours are counted).
    pub corrupt_batches: u64,
    pub corrupt_records: u64,
    /// Bytes cut from a torn last entry when the spool was opened.
    pub recovered_tail_bytes: u64,
    /// Ledger updates that failed (acknowledged data stayed on disk).
    pub ledger_errors: u64,
}

impl SpoolStats {
    /// Records that will never be delivered, for whatever reason.
    pub fn lost_records(&self) -> u64 {
        self.dropped_records + self.failed_records + self.corrupt_records
    }
}

struct Segment {
    path: PathBuf,
    /// The sequence number in the file name (the next one when it was made).
    first_seq: u64,
    entries: Vec<Entry>,
    /// The file's length as far as this spool wrote or read it.
    bytes: u64,
    /// Appends go here (only the newest segment, only while it is sound).
    open: bool,
    /// Holds entries not yet synced; its directory entry is not yet synced.
    unsynced: bool,
    unsynced_dir: bool,
    /// For a segment an earlier run left: when it was last written, as the
    /// filesystem said at open (its batches have waited at least since).
    written_by: Option<SystemTime>,
}

/// Batches read back for sending.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored {
    pub records: u32,
    pub source_drops: u64,
    pub block: Vec<u8>,
}

pub struct Spool {
    fs: SharedFs,
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    ledger: Arc<LedgerFile>,
    next_seq: u64,
    /// Record-stream position after the last batch handed to the spool
    /// (written, failed or dropped).
    end_record: u64,
    acked: u64,
    /// Every batch up to here is durable.
    synced: u64,
    full_episode: bool,
    ledger_episode: bool,
    /// Batches found missing at open, not yet known lost or delivered.
    missing: Vec<Missing>,
    stats: SpoolStats,
    /// When this process appended each batch not yet acknowledged (for the
    /// age of the oldest; not kept on disk).
    appended: VecDeque<(u64, SystemTime)>,
    /// Batches an earlier run left count as waiting since the spool opened.
    opened: SystemTime,
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    from: u64,
    to: u64,
    records: u64,
}

/// A random stream id (never 0, which names the legacy stream): unique, not
/// secret, so the standard library's per-process random hash keys will do.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// The legacy spool state: `acked end_record`.
fn legacy_state(fs: &dyn disk::Fs, dir: &Path) -> Option<(u64, u64)> {
    let text = fs.read(&dir.join("state")).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(r))) => Some((a, r)),
        _ => None,
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes`. A
    /// damaged or missing ledger is rebuilt from the segments; only a disk
    /// that cannot be read or synced is an error.
    pub fn open(fs: SharedFs, dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs.create_dir_all(dir).map_err(io_at(dir))?;
        fs.restrict(dir).map_err(io_at(dir))?;
        let names = fs.list(dir).map_err(io_at(dir))?;
        for leftover in ["ledger.tmp", "state.tmp"] {
            if names.iter().any(|n| n == leftover) {
                let _ = fs.remove(&dir.join(leftover));
            }
        }
        let mut segs: Vec<(u64, PathBuf)> = names
            .iter()
            .filter_map(|n| {
                let seq = n
                    .strip_prefix("seg-")?
                    .strip_suffix(".spool")?
                    .parse()
                    .ok()?;
                Some((seq, dir.join(n)))
            })
            .collect();
        segs.sort();
        let mut scans = Vec::with_capacity(segs.len());
        for (first_seq, path) in segs {
            let bytes = fs.read(&path).map_err(io_at(&path))?;
            let scan = segment::scan(&bytes);
            scans.push((first_seq, path, scan, bytes.len() as u64));
        }
        let ledger_path = dir.join("ledger");
        let seg_epoch = scans.iter().find_map(|s| s.2.epoch);
        let first_entry = scans.iter().find_map(|s| s.2.entries.first().copied());
        let from_segments = |epoch: u64| Ledger {
            epoch,
            head_seq: first_entry.map_or(1, |e| e.seq),
            head_record: first_entry.map_or(0, |e| e.first_record),
            ..Ledger::default()
        };
        let (mut ledger, rebuilt) =
            match ledger::read(&*fs, &ledger_path).map_err(io_at(&ledger_path))? {
                ledger::Read::Intact(l) => (l, false),
                ledger::Read::Damaged => {
                    tracing::warn!(
                        "{}: damaged (both slots fail their checksum); rebuilt from the segments",
                        ledger_path.display()
                    );
                    (from_segments(seg_epoch.unwrap_or_else(new_epoch)), true)
                }
                ledger::Read::Missing => match legacy_state(&*fs, dir) {
                    // A spool of the format before epochs: its batches continue
                    // the legacy stream 0.
                    Some((acked, end)) => (
                        Ledger {
                            epoch: 0,
                            head_seq: acked + 1,
                            head_record: end,
                            acked,
                            ..Ledger::default()
                        },
                        true,
                    ),
                    None if !scans.is_empty() => {
                        if seg_epoch.is_some() {
                            tracing::warn!(
                                "{}: missing; rebuilt from the segments",
                                ledger_path.display()
                            );
                        }
                        (from_segments(seg_epoch.unwrap_or(0)), true)
                    }
                    None => (
                        Ledger {
                            epoch: new_epoch(),
                            head_seq: 1,
                            ..Ledger::default()
                        },
                        true,
                    ),
                },
            };
        ledger.head_seq = ledger.head_seq.max(1);
        let epoch = ledger.epoch;
        let mut stats = SpoolStats::default();
        let mut segments = VecDeque::new();
        let newest = scans.len().saturating_sub(1);
        for (i, (first_seq, path, mut scan, size)) in scans.into_iter().enumerate() {
            if scan.epoch.is_some_and(|e| e != epoch) {
                // Not this stream's: keep it for inspection, never send it.
                let aside = path.with_extension("orphan");
                tracing::error!(
                    "{}: belongs to another record stream than the ledger's; moved to {}",
                    path.display(),
                    aside.display()
                );
                fs.rename(&path, &aside).map_err(io_at(&path))?;
                continue;
            }
            // A damaged end of the newest segment: a write the agent did not
            // finish (never synced, never sent), or later damage to batches
            // that were. Cut either way: the ledger's synced watermark keeps
            // the numbers of the second kind from being given out again.
            let mut size = size;
            if i == newest {
                if let Some(&(start, end)) = scan.damaged.last() {
                    if start == scan.valid_end && end == size {
                        tracing::warn!(
                            "{}: {} bytes after offset {start} are a torn or damaged last entry; cut",
                            path.display(),
                            end - start
                        );
                        fs.set_len(&path, start).map_err(io_at(&path))?;
                        stats.recovered_tail_bytes += end - start;
                        scan.damaged.pop();
                        size = start;
                    }
                }
            }
            for (start, end) in &scan.damaged {
                tracing::error!(
                    "{}: bytes {start}..{end} are damaged; the batches there are skipped",
                    path.display()
                );
            }
            scan.entries.retain(|e| e.seq >= ledger.head_seq);
            let written_by = fs.modified(&path);
            segments.push_back(Segment {
                path,
                first_seq,
                entries: scan.entries,
                bytes: size,
                open: false,
                unsynced: false,
                unsynced_dir: false,
                written_by,
            });
        }
        let last = segments
            .iter()
            .filter_map(|s| s.entries.last())
            .next_back()
            .copied();
        let next_seq = [
            ledger.head_seq,
            ledger.acked + 1,
            ledger.synced_seq + 1,
            last.map_or(0, |e| e.seq + 1),
        ]
        .into_iter()
        .max()
        .unwrap_or(1);
        let end_record = ledger
            .head_record
            .max(ledger.synced_record)
            .max(last.map_or(0, |e| e.end_record()));
        let mut spool = Spool {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(1 << 16),
            segment_bytes: (max_bytes / 16).clamp(1 << 16, 64 << 20),
            segments,
            next_seq,
            end_record,
            acked: ledger.acked.max(ledger.head_seq - 1),
            synced: next_seq - 1,
            ledger: Arc::new(LedgerFile::new(fs.clone(), ledger_path, ledger.clone())),
            full_episode: false,
            ledger_episode: false,
            missing: Vec::new(),
            stats,
            appended: VecDeque::new(),
            opened: SystemTime::now(),
        };
        spool.find_missing(&ledger);
        // What survived a crash may still be only in the page cache: make it
        // durable before any of it is sent, and say so in the ledger.
        for s in &spool.segments {
            fs.sync(&s.path).map_err(io_at(&s.path))?;
        }
        fs.sync_dir(dir).map_err(io_at(dir))?;
        let path = spool.ledger.path.clone();
        if rebuilt {
            let mut l = Ledger {
                synced_seq: next_seq - 1,
                synced_record: end_record,
                ..ledger
            };
            ledger::create(&*fs, &path, &mut l).map_err(io_at(&path))?;
            spool.ledger = Arc::new(LedgerFile::new(fs.clone(), path, l));
            if legacy_state(&*fs, dir).is_some() {
                let _ = fs.remove(&dir.join("state"));
            }
        } else if ledger.synced_seq < next_seq - 1 || ledger.synced_record < end_record {
            spool
                .ledger
                .update(|l| {
                    l.synced_seq = l.synced_seq.max(next_seq - 1);
                    l.synced_record = l.synced_record.max(end_record);
                })
                .map_err(io_at(&path))?;
        }
        spool.collect();
        spool.recount();
        Ok(spool)
    }

    /// Finds batches missing between intact entries (damage, or a tail a
    /// power cut took from an older segment). They are lost only if the
    /// collector does not already hold them, which only the collector can
    /// say: they are counted when the shipper declares the gap to it
    /// ([`Spool::declare_gap`]), or forgotten when it turns out to hold them.
    fn find_missing(&mut self, l: &Ledger) {
        let mut prev = (l.head_seq - 1, l.head_record);
        let mut gaps = Vec::new();
        for e in self.segments.iter().flat_map(|s| s.entries.iter()) {
            if e.seq > prev.0 + 1 {
                gaps.push((prev.0 + 1, e.seq - 1, e.first_record.saturating_sub(prev.1)));
            }
            prev = (e.seq, e.end_record());
        }
        // Synced (so maybe sent) batches after the last intact one.
        if l.synced_seq > prev.0 {
            gaps.push((
                prev.0 + 1,
                l.synced_seq,
                l.synced_record.saturating_sub(prev.1),
            ));
        }
        for (from, to, records) in gaps {
            if to <= self.acked {
                continue;
            }
            let from = from.max(self.acked + 1);
            tracing::error!(
                "{}: batches {from}..={to} are missing or damaged ({records} records)",
                self.dir.display(),
            );
            self.missing.push(Missing { from, to, records });
        }
    }

    /// The shipper sends `seq` right after `follows`, declaring the batches
    /// in between gone: those the spool found missing are counted as lost.
    /// (Damage the collector holds part of counts whole, and damage declared
    /// again after a crash counts again: under damage the count is an upper
    /// bound, never short.)
    pub fn declare_gap(&mut self, follows: u64, seq: u64) {
        if seq <= follows + 1 {
            return;
        }
        let mut lost = Vec::new();
        self.missing.retain(|m| {
            let gone = m.to > follows && m.from < seq;
            if gone {
                lost.push(*m);
            }
            !gone
        });
        for m in &lost {
            self.stats.corrupt_batches += m.to - m.from + 1;
            self.stats.corrupt_records += m.records;
            tracing::error!(
                "{}: batches {}..={} are lost ({} records)",
                self.dir.display(),
                m.from,
                m.to,
                m.records
            );
        }
    }

    /// Everything the spool holds is delivered: batches found missing after
    /// the last one the collector acknowledged will never come (no later
    /// batch will declare them); count them now.
    pub fn settle_missing(&mut self) {
        let end = self.next_seq;
        self.declare_gap(self.acked, end);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record stream's id at the collector (sent in `hello`).
    pub fn epoch(&self) -> u64 {
        self.ledger.get().epoch
    }

    /// What the stream's records come from, as recorded (fingerprint 0: not
    /// recorded yet).
    pub fn identity(&self) -> StreamId {
        let l = self.ledger.get();
        StreamId {
            text: l.identity,
            fingerprint: l.fingerprint,
        }
    }

    /// Records what the stream's records come from.
    pub fn set_identity(&mut self, id: &StreamId) -> Result<(), SpoolError> {
        self.ledger
            .update(|l| {
                l.identity = id.text.clone();
                l.fingerprint = id.fingerprint;
            })
            .map_err(io_at(&self.ledger.path))
    }

    /// Starts a new record stream (a new epoch, positions from 0) for `id`.
    /// Only an empty spool can: anything unacknowledged belongs to the old one.
    pub fn new_stream(&mut self, id: &StreamId) -> Result<(), SpoolError> {
        let pending = self.stats.batches;
        if pending > 0 {
            return Err(SpoolError::Belongs {
                dir: self.dir.clone(),
                pending,
                theirs: self.ledger.get().identity,
                ours: id.text.clone(),
            });
        }
        // Acknowledged leftovers first: once the ledger names the new stream
        // they would look like another stream's.
        while let Some(s) = self.segments.pop_front() {
            self.fs.remove(&s.path).map_err(io_at(&s.path))?;
        }
        self.ledger
            .update(|l| {
                *l = Ledger {
                    generation: l.generation,
                    epoch: new_epoch(),
                    head_seq: 1,
                    fingerprint: id.fingerprint,
                    identity: id.text.clone(),
                    ..Ledger::default()
                }
            })
            .map_err(io_at(&self.ledger.path))?;
        self.next_seq = 1;
        self.end_record = 0;
        self.acked = 0;
        self.synced = 0;
        self.missing.clear();
        self.recount();
        Ok(())
    }

    /// Appends a batch and returns its sequence number. Makes room by
    /// dropping the oldest segments if the spool would exceed its bound. A
    /// batch that cannot be written is counted as lost and keeps its
    /// positions in the record stream.
    pub fn append(
        &mut self,
        records: u32,
        source_drops: u64,
        block: &[u8],
    ) -> Result<u64, SpoolError> {
        let first_record = self.end_record;
        self.end_record += u64::from(records);
        let r = self.try_append(first_record, records, source_drops, block);
        if r.is_err() {
            self.stats.failed_batches += 1;
            self.stats.failed_records += u64::from(records);
        }
        r
    }

    fn try_append(
        &mut self,
        first_record: u64,
        records: u32,
        source_drops: u64,
        block: &[u8],
    ) -> Result<u64, SpoolError> {
        let need = (ENTRY_HEADER + block.len()) as u64;
        if block.len() as u64 > u64::from(MAX_BLOCK) || need + SEG_HEADER as u64 > self.max_bytes {
            return Err(SpoolError::TooLarge {
                len: need,
                max: self.max_bytes,
            });
        }
        let must_roll = |s: &Spool| match s.segments.back() {
            Some(seg) => !seg.open || seg.bytes + need > s.segment_bytes,
            None => true,
        };
        loop {
            let extra = if must_roll(self) {
                SEG_HEADER as u64
            } else {
                0
            };
            if self.stats.bytes + need + extra <= self.max_bytes || !self.drop_oldest()? {
                break;
            }
        }
        if must_roll(self) {
            self.roll()?;
        }
        let seq = self.next_seq;
        let mut buf = Vec::with_capacity(need as usize);
        buf.extend_from_slice(&segment::encode_entry(
            seq,
            first_record,
            source_drops,
            records,
            block,
        ));
        buf.extend_from_slice(block);
        let fs = self.fs.clone();
        let Some(seg) = self.segments.back_mut() else {
            return Err(io_at(&self.dir)(io::Error::other(
                "spool has no open segment",
            )));
        };
        let offset = seg.bytes;
        if let Err(e) = fs.append(&seg.path, &buf) {
            // Leave no half entry behind (a full disk, say). If even that
            // fails, the segment takes no more appends: the next batch opens a
            // new one and the scan skips the damaged tail at the next start.
            if fs.set_len(&seg.path, offset).is_err() {
                seg.open = false;
            }
            return Err(io_at(&seg.path)(e));
        }
        seg.entries.push(Entry {
            seq,
            first_record,
            source_drops,
            records,
            offset,
            len: block.len() as u32,
        });
        seg.bytes += need;
        seg.unsynced = true;
        self.appended.push_back((seq, SystemTime::now()));
        self.next_seq += 1;
        self.stats.batches += 1;
        self.stats.records += u64::from(records);
        self.stats.bytes += need;
        Ok(seq)
    }

    /// Starts a new segment file for the next batch.
    fn roll(&mut self) -> Result<(), SpoolError> {
        if let Some(s) = self.segments.back_mut() {
            s.open = false;
        }
        let path = self.dir.join(format!("seg-{:020}.spool", self.next_seq));
        // A leftover of that name holds nothing current (no batch this
        // number or later exists).
        if self.fs.len(&path).map_err(io_at(&path))?.is_some() {
            if let Some(i) = self.segments.iter().position(|s| s.path == path) {
                self.segments.remove(i);
            }
            self.fs.remove(&path).map_err(io_at(&path))?;
        }
        let header = segment::encode_header(self.ledger.get().epoch);
        if let Err(e) = self.fs.append(&path, &header) {
            let _ = self.fs.remove(&path);
            return Err(io_at(&path)(e));
        }
        self.stats.bytes += SEG_HEADER as u64;
        self.segments.push_back(Segment {
            path,
            first_seq: self.next_seq,
            entries: Vec::new(),
            bytes: SEG_HEADER as u64,
            open: true,
            unsynced: true,
            unsynced_dir: true,
            written_by: None,
        });
        Ok(())
    }

    /// Drops the oldest segment to make room. False if there is none.
    fn drop_oldest(&mut self) -> Result<bool, SpoolError> {
        let Some(front) = self.segments.front() else {
            return Ok(false);
        };
        if let Some(e) = front.entries.last().copied() {
            self.move_head(e.seq + 1, e.end_record())?;
        }
        let Some(seg) = self.segments.pop_front() else {
            return Ok(false);
        };
        let lost: Vec<&Entry> = seg.entries.iter().filter(|e| e.seq > self.acked).collect();
        if !self.full_episode && !lost.is_empty() {
            tracing::warn!(
                "spool full ({} bytes): dropping the oldest unacknowledged data; further drops are counted, not logged",
                self.max_bytes
            );
            self.full_episode = true;
        }
        self.stats.dropped_batches += lost.len() as u64;
        self.stats.dropped_records += lost.iter().map(|e| u64::from(e.records)).sum::<u64>();
        if let Err(e) = self.fs.remove(&seg.path) {
            tracing::warn!("{}: cannot remove: {e}", seg.path.display());
        }
        self.recount();
        Ok(true)
    }

    /// Records in the ledger that every batch before `seq` (and every record
    /// before `record`) is gone from the spool.
    fn move_head(&mut self, seq: u64, record: u64) -> Result<(), SpoolError> {
        let acked = self.acked;
        let r = self.ledger.update(|l| {
            l.head_seq = l.head_seq.max(seq);
            l.head_record = l.head_record.max(record);
            l.acked = l.acked.max(acked);
        });
        if let Err(e) = r {
            self.stats.ledger_errors += 1;
            return Err(io_at(&self.ledger.path)(e));
        }
        Ok(())
    }

    /// Everything up to and including `seq` is durable at the collector.
    /// Returns how many batches of this spool that acknowledged. Freeing
    /// their space never needs free space; if it fails, they stay on disk
    /// (ignored) until a later acknowledgement frees them.
    pub fn ack(&mut self, seq: u64) -> u64 {
        let upto = seq.min(self.next_seq.saturating_sub(1));
        if upto <= self.acked {
            return 0;
        }
        let newly = self
            .segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.seq > self.acked && e.seq <= upto)
            .count() as u64;
        self.acked = upto;
        while self.appended.front().is_some_and(|(s, _)| *s <= upto) {
            self.appended.pop_front();
        }
        // Batches found missing that the collector acknowledges were
        // delivered before the spool lost them (or declared and counted).
        self.missing.retain(|m| m.to > upto);
        self.collect();
        self.recount();
        newly
    }

    /// Deletes the segments whose batches are all acknowledged.
    fn collect(&mut self) {
        let n = self
            .segments
            .iter()
            .take_while(|s| match s.entries.last() {
                Some(e) => e.seq <= self.acked,
                None => !s.open,
            })
            .count();
        if n == 0 {
            return;
        }
        let last = self
            .segments
            .iter()
            .take(n)
            .filter_map(|s| s.entries.last())
            .next_back()
            .copied();
        let (seq, record) = last.map_or((0, 0), |e| (e.seq + 1, e.end_record()));
        if let Err(e) = self.move_head(seq, record) {
            if !self.ledger_episode {
                tracing::warn!(
                    "{e}; acknowledged batches stay on disk until the ledger can be written"
                );
                self.ledger_episode = true;
            }
            return;
        }
        self.ledger_episode = false;
        for _ in 0..n {
            if let Some(s) = self.segments.pop_front() {
                if let Err(e) = self.fs.remove(&s.path) {
                    tracing::warn!("{}: cannot remove: {e}", s.path.display());
                }
            }
        }
        // The overflow episode ends once delivery has made real room again.
        self.recount();
        if self.stats.bytes <= self.max_bytes / 2 {
            self.full_episode = false;
        }
    }

    /// The collector holds every batch up to `last_seq` of this stream.
    /// Returns how many batches of this spool that acknowledged.
    pub fn collector_holds(&mut self, last_seq: u64) -> u64 {
        if last_seq >= self.next_seq {
            tracing::error!(
                "{}: the collector holds batches up to {last_seq} of this record stream, but this spool has \
                 only made {}: the spool lost data or is a copy of another agent's; continuing after {last_seq}",
                self.dir.display(),
                self.next_seq - 1
            );
            self.next_seq = last_seq + 1;
        }
        self.ack(last_seq)
    }

    /// The work that makes every appended batch durable, to run without
    /// holding the spool (fsync takes milliseconds; the engine keeps
    /// appending meanwhile). `None` when there is nothing to sync.
    pub fn sync_job(&self) -> Option<SyncJob> {
        let files: Vec<PathBuf> = self
            .segments
            .iter()
            .filter(|s| s.unsynced)
            .map(|s| s.path.clone())
            .collect();
        let dir = self.segments.iter().any(|s| s.unsynced_dir);
        if files.is_empty() && !dir {
            return None;
        }
        Some(SyncJob {
            fs: self.fs.clone(),
            ledger: self.ledger.clone(),
            files,
            dir: dir.then(|| self.dir.clone()),
            upto: self.next_seq - 1,
            upto_record: self.end_record,
        })
    }

    /// A sync job made at `upto` succeeded.
    pub fn synced_through(&mut self, upto: u64) {
        self.synced = self.synced.max(upto);
        for s in &mut self.segments {
            if s.first_seq <= upto {
                s.unsynced_dir = false;
                if s.entries.last().is_none_or(|e| e.seq <= upto) {
                    s.unsynced = false;
                }
            }
        }
    }

    /// Syncs while holding the spool (before a checkpoint, at the end).
    pub fn sync_now(&mut self) -> Result<(), SpoolError> {
        if let Some(job) = self.sync_job() {
            job.run()?;
            self.synced_through(job.upto);
        }
        Ok(())
    }

    /// Sequence numbers of unacknowledged batches after `after`, in order.
    #[cfg(test)]
    pub fn pending_after(&self, after: u64) -> Vec<u64> {
        let from = after.max(self.acked);
        self.segments
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.seq > from)
            .map(|e| e.seq)
            .collect()
    }

    /// The first durable, unacknowledged batch after `after` (the shipper
    /// calls this once per batch it sends).
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let from = after.max(self.acked);
        let seg = self
            .segments
            .iter()
            .find(|s| s.entries.last().is_some_and(|e| e.seq > from))?;
        let i = seg.entries.partition_point(|e| e.seq <= from);
        seg.entries
            .get(i)
            .map(|e| e.seq)
            .filter(|&s| s <= self.synced)
    }

    /// Reads a stored batch back. `None` if it was acknowledged or dropped,
    /// or is damaged: then it is counted as lost and taken out of the spool.
    pub fn read(&mut self, seq: u64) -> Result<Option<Stored>, SpoolError> {
        if seq <= self.acked {
            return Ok(None);
        }
        for si in 0..self.segments.len() {
            let seg = &self.segments[si];
            let Ok(i) = seg.entries.binary_search_by_key(&seq, |e| e.seq) else {
                continue;
            };
            let e = seg.entries[i];
            let mut buf = vec![0u8; e.size() as usize];
            self.fs
                .read_at(&seg.path, e.offset, &mut buf)
                .map_err(io_at(&seg.path))?;
            if segment::parse_entry(&buf, e.offset).is_some_and(|p| p == e) {
                return Ok(Some(Stored {
                    records: e.records,
                    source_drops: e.source_drops,
                    block: buf.split_off(ENTRY_HEADER),
                }));
            }
            tracing::error!(
                "{}: batch {seq} at offset {} is damaged; its {} records are lost (counted as corrupt)",
                seg.path.display(),
                e.offset,
                e.records
            );
            self.segments[si].entries.remove(i);
            self.stats.corrupt_batches += 1;
            self.stats.corrupt_records += u64::from(e.records);
            self.recount();
            return Ok(None);
        }
        Ok(None)
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Since when the oldest batch not yet acknowledged has waited (`None`:
    /// nothing waits). A batch an earlier run left has waited at least since
    /// its segment was last written (or, where the filesystem cannot say,
    /// since this run opened the spool).
    pub fn oldest_waiting_since(&self) -> Option<SystemTime> {
        let (seg, oldest) = self.segments.iter().find_map(|s| {
            s.entries
                .iter()
                .find(|e| e.seq > self.acked)
                .map(|e| (s, e.seq))
        })?;
        let earlier_run = || seg.written_by.map_or(self.opened, |t| t.min(self.opened));
        Some(
            self.appended
                .iter()
                .find(|(s, _)| *s >= oldest)
                .filter(|(s, _)| *s == oldest)
                .map_or_else(earlier_run, |(_, t)| *t),
        )
    }

    /// The sequence number the next batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// How many records of the agent's record stream were handed to the
    /// spool (delivered, waiting, dropped or lost): a restarted agent with
    /// the same deterministic source skips that many.
    pub fn end_record(&self) -> u64 {
        self.end_record
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    fn recount(&mut self) {
        let mut s = self.stats;
        s.batches = 0;
        s.records = 0;
        s.bytes = 0;
        for seg in &self.segments {
            for e in seg.entries.iter().filter(|e| e.seq > self.acked) {
                s.batches += 1;
                s.records += u64::from(e.records);
            }
            s.bytes += seg.bytes;
        }
        self.stats = s;
    }
}

/// See [`Spool::sync_job`].
pub struct SyncJob {
    fs: SharedFs,
    ledger: Arc<LedgerFile>,
    files: Vec<PathBuf>,
    dir: Option<PathBuf>,
    pub upto: u64,
    upto_record: u64,
}

impl SyncJob {
    /// Syncs the segments, then records in the ledger that everything up
    /// to `upto` is durable: from then on it may be sent, and its numbers
    /// are never given out again, whatever happens to the segments.
    pub fn run(&self) -> Result<(), SpoolError> {
        for f in &self.files {
            match self.fs.sync(f) {
                // Dropped meanwhile (acknowledged or overflowed): nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r.map_err(io_at(f))?,
            }
        }
        if let Some(d) = &self.dir {
            self.fs.sync_dir(d).map_err(io_at(d))?;
        }
        let (seq, record) = (self.upto, self.upto_record);
        self.ledger
            .update(|l| {
                l.synced_seq = l.synced_seq.max(seq);
                l.synced_record = l.synced_record.max(record);
            })
            .map_err(io_at(&self.ledger.path))
    }
}

#[cfg(test)]
mod tests;
