//! The collector's durable output for one record stream of one agent:
//! hourly record files (by the records' `first_ns`, UTC; NDJSON, or the
//! spool's compressed blocks with `--store blocks`), the observations
//! shipped with them in `observations/` (hourly by theirs), and a `state`
//! file holding, per epoch of the stream (one per agent spool), the last
//! durable batch, and the committed length of every file.
//!
//! Exactly once:
//! - A batch must follow the last one held (`follows == last_seq`); a repeat
//!   is acknowledged again, never rewritten; anything else is refused.
//! - Its records and observations are appended and synced (and new files'
//!   directory entries synced), then the state (new sequence number, new lengths) replaces the
//!   old one atomically and durably; only then is the batch acknowledged.
//! - A failed write leaves every file exactly at its committed length before
//!   the batch is refused, so the resend appends after committed bytes only.
//! - On open, files are cut back to their committed lengths (a crash between
//!   append and commit). A file shorter than committed, or files without a
//!   readable state, mean damage from outside: the store refuses to open,
//!   naming the file, and never truncates committed data.
//!
//! The state file is text: `vmflow-store 2`, then `epoch ID LAST_SEQ
//! SOURCE_DROPS AGENT_DROPPED` and `file NAME LENGTH` lines, then `end CRC`
//! (CRC32 of everything before it). The first version's format (`seq N`,
//! `drops N`, `file NAME LENGTH`) is read as epoch 0.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use vmflow_proto::FlowRecord;

use crate::disk::{self, SharedFs};
use crate::export::blocks;
use crate::export::NdjsonLines;

const HEADER: &str = "vmflow-store 2";

/// How a stream's hour files hold its records. A store may hold files of
/// both kinds (the collector's setting changed): each is read by its name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFormat {
    /// `HOUR.ndjson`: a JSON object a line (~420 bytes a record).
    #[default]
    Ndjson,
    /// `HOUR.blocks`: the spool's compressed column blocks (~17 bytes a
    /// record), one entry per batch and hour; `vmflow cat` and `vmflow
    /// query` read them. For collectors that take more records than their
    /// disk could write as text.
    Blocks,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: damaged: {why}. vmflow will not guess which batches the files hold: restore the \
         state from a backup, or move {} aside so this stream starts afresh (the agent then sends \
         what its spool still holds)",
        path.display(),
        dir.display()
    )]
    Damaged {
        path: PathBuf,
        dir: PathBuf,
        why: String,
    },
    #[error("{}: an earlier write failed half-way; the store is reopened by the next connection", dir.display())]
    Broken { dir: PathBuf },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where one epoch of the stream (one agent spool) stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochState {
    pub last_seq: u64,
    /// The agent's running count of packets its capture lost.
    pub source_drops: u64,
    /// Batches the agent declared it dropped (spool overflow, damage).
    pub agent_dropped: u64,
}

/// A batch as the store sees it.
#[derive(Clone, Copy, Debug)]
pub struct BatchInfo {
    pub epoch: u64,
    pub seq: u64,
    /// The batch it follows; batches in between were dropped by the agent.
    pub follows: u64,
    pub source_drops: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durable; acknowledge it. Carries the epoch's state before the batch.
    Written(EpochState),
    /// Already held: acknowledge it again.
    Duplicate,
    /// Not the batch that can come next: refuse it, saying why.
    Refused(String),
}

/// What a batch is to an epoch that stands at `before`.
pub enum Verdict {
    /// Held already: acknowledge it again.
    Repeat,
    /// Not the batch that can come next, and why.
    Refuse(String),
    /// The next batch: where the epoch stands once it is durable.
    Next(EpochState),
}

/// The rules every back end applies: a batch must follow the last one held
/// (or be a repeat of one held).
pub fn judge(before: EpochState, b: &BatchInfo) -> Verdict {
    if b.seq <= before.last_seq {
        return Verdict::Repeat;
    }
    if b.seq == u64::MAX {
        return Verdict::Refuse(
            "batch number 2^64-1 is reserved (no batch could follow it)".into(),
        );
    }
    if b.follows != before.last_seq || b.follows >= b.seq {
        return Verdict::Refuse(format!(
            "batch {} follows batch {}, but this collector holds batches up to {} of the stream: \
             the next batch must follow {}",
            b.seq, b.follows, before.last_seq, before.last_seq
        ));
    }
    Verdict::Next(EpochState {
        last_seq: b.seq,
        source_drops: before.source_drops.max(b.source_drops),
        agent_dropped: before.agent_dropped + (b.seq - b.follows - 1),
    })
}

pub struct StreamStore {
    fs: SharedFs,
    dir: PathBuf,
    epochs: BTreeMap<u64, EpochState>,
    files: BTreeMap<String, u64>,
    broken: bool,
    /// How new records are written.
    format: StoreFormat,
    /// NDJSON buffers kept between commits.
    scratch: Vec<Vec<u8>>,
    /// Time spent in fsync since [`StreamStore::take_synced`] (a metric).
    synced: std::cell::Cell<std::time::Duration>,
}

#[derive(Default)]
struct Parsed {
    epochs: BTreeMap<u64, EpochState>,
    files: BTreeMap<String, u64>,
}

fn parse_state(text: &str) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let num = |s: Option<&str>| -> Result<u64, String> {
        s.and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unreadable number {s:?}"))
    };
    let mut lines = text.lines();
    let v2 = text.starts_with(HEADER);
    if v2 {
        lines.next();
        let body_end = text
            .rfind("\nend ")
            .ok_or("no end line (written partly?)")?
            + 1;
        let crc = text[body_end..]
            .trim_end()
            .strip_prefix("end ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or("unreadable end line")?;
        if crc32fast::hash(&text.as_bytes()[..body_end]) != crc {
            return Err("checksum mismatch".into());
        }
    }
    for line in lines {
        let mut w = line.split_whitespace();
        match (w.next(), v2) {
            (Some("epoch"), true) => {
                let id = num(w.next())?;
                let st = EpochState {
                    last_seq: num(w.next())?,
                    source_drops: num(w.next())?,
                    agent_dropped: num(w.next())?,
                };
                p.epochs.insert(id, st);
            }
            (Some("end"), true) => break,
            (Some("seq"), false) => p.epochs.entry(0).or_default().last_seq = num(w.next())?,
            (Some("drops"), false) => p.epochs.entry(0).or_default().source_drops = num(w.next())?,
            (Some("file"), _) => {
                let name = w.next().ok_or("file line without a name")?;
                let file = name.strip_prefix(OBSERVATIONS_DIR).unwrap_or(name);
                let records = file.len() == name.len();
                let ok = (file.ends_with(".ndjson") || records && file.ends_with(BLOCKS_EXT))
                    && file
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && !file.starts_with('.');
                if !ok {
                    return Err(format!("unexpected file name {name:?}"));
                }
                p.files.insert(name.to_string(), num(w.next())?);
            }
            _ => return Err(format!("unreadable line {line:?}")),
        }
    }
    Ok(p)
}

/// What a stream's state file holds: each epoch's last batch and drops,
/// each hour file's committed length (read by `vmflow query --agents`).
#[derive(Debug, Default)]
pub struct StoredState {
    pub epochs: BTreeMap<u64, EpochState>,
    pub files: BTreeMap<String, u64>,
}

pub fn read_state(text: &str) -> Result<StoredState, String> {
    parse_state(text).map(|p| StoredState {
        epochs: p.epochs,
        files: p.files,
    })
}

/// Whether a state file's text reads (the fuzz target's entry point).
pub fn state_reads(text: &str) -> bool {
    parse_state(text).is_ok()
}

impl StreamStore {
    /// Opens the stream's store in `dir`, creating it if there is none.
    pub fn open(fs: SharedFs, dir: &Path, format: StoreFormat) -> Result<StreamStore, StoreError> {
        let state = dir.join("state");
        let mut s = StreamStore {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            epochs: BTreeMap::new(),
            files: BTreeMap::new(),
            broken: false,
            format,
            scratch: Vec::new(),
            synced: Default::default(),
        };
        if !fs.is_dir(dir) {
            // The state exists before any hour file does, so files without
            // a state can only be damage, never a crash during creation.
            fs.create_dir_all(dir).map_err(io_at(dir))?;
            fs.sync_dir(disk::parent(dir)).map_err(io_at(dir))?;
            s.commit_text(&s.state_text()).map_err(|(e, _)| e)?;
            return Ok(s);
        }
        fs.restrict(dir).map_err(io_at(dir))?;
        let names = fs.list(dir).map_err(io_at(dir))?;
        if names.iter().any(|n| n == "state.tmp") {
            let _ = fs.remove(&dir.join("state.tmp"));
        }
        let mut hours: Vec<String> = names
            .into_iter()
            .filter(|n| n.ends_with(".ndjson") || n.ends_with(BLOCKS_EXT))
            .collect();
        let obs_dir = dir.join(OBSERVATIONS_DIR);
        if fs.is_dir(&obs_dir) {
            let names = fs.list(&obs_dir).map_err(io_at(&obs_dir))?;
            hours.extend(
                names
                    .into_iter()
                    .filter(|n| n.ends_with(".ndjson"))
                    .map(|n| format!("{OBSERVATIONS_DIR}{n}")),
            );
        }
        hours.sort();
        let damaged = |why: String| StoreError::Damaged {
            path: state.clone(),
            dir: dir.to_path_buf(),
            why,
        };
        let text = match fs.read(&state) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&state)(e)),
        };
        let parsed = match text {
            Some(b) if !b.is_empty() => {
                parse_state(&String::from_utf8_lossy(&b)).map_err(&damaged)?
            }
            other => {
                if !hours.is_empty() {
                    let what = if other.is_some() { "empty" } else { "missing" };
                    return Err(damaged(format!(
                        "the state is {what} but the directory holds {} hour files",
                        hours.len()
                    )));
                }
                s.commit_text(&s.state_text()).map_err(|(e, _)| e)?;
                return Ok(s);
            }
        };
        for name in &hours {
            let path = dir.join(name);
            let len = fs.len(&path).map_err(io_at(&path))?.unwrap_or(0);
            let committed = parsed.files.get(name).copied().unwrap_or(0);
            if len < committed {
                return Err(StoreError::Damaged {
                    path: path.clone(),
                    dir: dir.to_path_buf(),
                    why: format!(
                        "it holds {len} bytes but {committed} were committed: records were lost outside vmflow"
                    ),
                });
            }
            if len > committed {
                tracing::warn!(
                    "{}: discarding {} uncommitted bytes from an interrupted batch",
                    path.display(),
                    len - committed
                );
                fs.set_len(&path, committed).map_err(io_at(&path))?;
                fs.sync(&path).map_err(io_at(&path))?;
            }
            fs.restrict(&path).map_err(io_at(&path))?;
        }
        for (name, &len) in &parsed.files {
            if len > 0 && hours.binary_search(name).is_err() {
                return Err(StoreError::Damaged {
                    path: dir.join(name),
                    dir: dir.to_path_buf(),
                    why: format!("the file is missing but {len} bytes were committed to it"),
                });
            }
        }
        // A reopen after a failed write: whatever state is on disk now is
        // what counts, so make it durable before anything is acknowledged.
        fs.sync(&state).map_err(io_at(&state))?;
        fs.sync_dir(dir).map_err(io_at(dir))?;
        s.epochs = parsed.epochs;
        s.files = parsed.files;
        Ok(s)
    }

    /// Where an epoch of the stream stands (a new epoch: nothing held).
    pub fn epoch(&self, epoch: u64) -> EpochState {
        self.epochs.get(&epoch).copied().unwrap_or_default()
    }

    pub fn is_new_epoch(&self, epoch: u64) -> bool {
        !self.epochs.contains_key(&epoch)
    }

    pub fn epochs(&self) -> usize {
        self.epochs.len()
    }

    /// Every epoch's state: what the first group a connection prepares
    /// follows.
    pub fn states(&self) -> BTreeMap<u64, EpochState> {
        self.epochs.clone()
    }

    /// A write failed in a way that left the state on disk unknown: the
    /// store must be reopened before it takes another batch.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Makes a batch durable, or says why not.
    pub fn write_batch(
        &mut self,
        b: BatchInfo,
        records: &[FlowRecord],
    ) -> Result<Outcome, StoreError> {
        let mut out = self.write_batches(&[(b, records)])?;
        Ok(out.pop().unwrap_or(Outcome::Duplicate))
    }

    /// Makes consecutive batches durable with one commit (one set of syncs
    /// for all of them: group commit), or says why not. Returns one outcome
    /// per batch up to and including the first refused one; the ones after
    /// it are not looked at. On an error nothing of the group is written.
    pub fn write_batches(
        &mut self,
        batches: &[(BatchInfo, &[FlowRecord])],
    ) -> Result<Vec<Outcome>, StoreError> {
        if self.broken {
            return Err(StoreError::Broken {
                dir: self.dir.clone(),
            });
        }
        let mut pool = std::mem::take(&mut self.scratch);
        let mut states = self.epochs.clone();
        let group = batches
            .iter()
            .map(|&(b, records)| (b, Part::records(records)));
        let judged = judge_group(&mut states, group, &mut pool, self.format);
        let r = self.commit_judged(judged, &mut pool);
        self.scratch = pool;
        r
    }

    /// Commits a group made ready by [`prepare`] (outside this store's
    /// lock, while the group before it was being committed). If the store
    /// does not stand where the group was judged to follow (another
    /// connection of the stream wrote meanwhile), it is judged again here.
    /// The group's buffers go back to `pool`.
    pub fn commit(
        &mut self,
        p: Prepared,
        pool: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Outcome>, StoreError> {
        if self.broken {
            pool.extend(p.judged.by_hour.into_values());
            return Err(StoreError::Broken {
                dir: self.dir.clone(),
            });
        }
        let stands = p
            .judged
            .assumed
            .iter()
            .all(|(id, st)| self.epoch(*id) == *st);
        let judged = if stands {
            p.judged
        } else {
            pool.extend(p.judged.by_hour.into_values());
            let mut states = self.epochs.clone();
            let group = p.infos.iter().copied().zip(p.decoded.iter().map(Part::of));
            judge_group(&mut states, group, pool, self.format)
        };
        self.commit_judged(judged, pool)
    }

    /// Commits consecutive prepared groups of one connection with one set
    /// of syncs (the groups that queued while the commit before them
    /// synced): each group's outcomes, or an error and nothing of them
    /// written. Groups that do not chain (the store moved meanwhile) are
    /// committed one at a time.
    pub fn commit_all(
        &mut self,
        mut ps: Vec<Prepared>,
        pool: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        if ps.len() == 1 {
            let p = ps.remove(0);
            return self.commit(p, pool).map(|o| vec![o]);
        }
        let mut stands = self.epochs.clone();
        let mut chained = true;
        for p in &ps {
            chained &= p
                .judged
                .assumed
                .iter()
                .all(|(id, st)| stands.get(id).copied().unwrap_or_default() == *st);
            stands.extend(p.judged.after.iter().map(|(k, v)| (*k, *v)));
        }
        if !chained || self.broken {
            let mut out = Vec::with_capacity(ps.len());
            for p in ps {
                out.push(self.commit(p, pool)?);
            }
            return Ok(out);
        }
        let mut outcomes = Vec::with_capacity(ps.len());
        let mut by_hour: BTreeMap<FileKey, Vec<u8>> = BTreeMap::new();
        for p in ps {
            outcomes.push(p.judged.outcomes);
            for (hour, bytes) in p.judged.by_hour {
                match by_hour.get_mut(&hour) {
                    Some(b) => {
                        b.extend_from_slice(&bytes);
                        pool.push(bytes);
                    }
                    None => {
                        by_hour.insert(hour, bytes);
                    }
                }
            }
        }
        let r = if stands == self.epochs {
            Ok(())
        } else {
            self.commit_group(stands, &by_hour)
        };
        pool.extend(by_hour.into_values());
        pool.truncate(POOL);
        r.map(|_| outcomes)
    }

    fn commit_judged(
        &mut self,
        j: Judged,
        pool: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut epochs = self.epochs.clone();
        epochs.extend(j.after.iter().map(|(k, v)| (*k, *v)));
        let r = if epochs == self.epochs {
            // Repeats and a refusal only: nothing to write.
            Ok(())
        } else {
            self.commit_group(epochs, &j.by_hour)
        };
        // The buffers are kept for the next group: allocating megabytes of
        // fresh pages for every commit costs more than encoding into them.
        pool.extend(j.by_hour.into_values());
        pool.truncate(POOL);
        r.map(|_| j.outcomes)
    }

    fn commit_group(
        &mut self,
        epochs: BTreeMap<u64, EpochState>,
        by_hour: &BTreeMap<FileKey, Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut grown: Vec<(String, u64)> = Vec::with_capacity(by_hour.len());
        // Directories that gained an entry (a file, or the observations
        // directory itself): synced before the state names what is in them.
        let mut new_entries: Vec<PathBuf> = Vec::new();
        for (key, bytes) in by_hour {
            let name = key.file_name();
            let path = self.dir.join(&name);
            if !self.files.contains_key(&name) {
                let parent = disk::parent(&path).to_path_buf();
                if !self.fs.is_dir(&parent) {
                    if let Err(e) = self.fs.create_dir_all(&parent) {
                        self.undo(&grown);
                        return Err(io_at(&parent)(e));
                    }
                    new_entries.push(self.dir.clone());
                }
                new_entries.push(parent);
            }
            let r = match key {
                FileKey::Blocks(_) => {
                    // Entries are numbered by where they land, known only now.
                    let at = self.files.get(&name).copied().unwrap_or(0);
                    let header = blocks::file_header();
                    let mut file = Vec::with_capacity(header.len() + bytes.len());
                    if at == 0 {
                        file.extend_from_slice(&header);
                    }
                    let first = file.len();
                    file.extend_from_slice(bytes);
                    blocks::number_entries(&mut file[first..], at + first as u64);
                    self.fs.append(&path, &file).map(|_| file.len())
                }
                _ => self.fs.append(&path, bytes).map(|_| bytes.len()),
            };
            // Even a failed append may have written part: cut it back too.
            match r {
                Ok(n) => grown.push((name, n as u64)),
                Err(e) => {
                    grown.push((name, 0));
                    self.undo(&grown);
                    return Err(io_at(&path)(e));
                }
            }
        }
        for (name, _) in &grown {
            let path = self.dir.join(name);
            if let Err(e) = self.sync(&path) {
                self.undo(&grown);
                return Err(io_at(&path)(e));
            }
        }
        new_entries.sort();
        new_entries.dedup();
        // Deepest first: a new directory's entries before its own entry.
        for d in new_entries.iter().rev() {
            if let Err(e) = self.sync_dir(d) {
                self.undo(&grown);
                return Err(io_at(d)(e));
            }
        }
        let mut files = self.files.clone();
        for (name, len) in &grown {
            *files.entry(name.clone()).or_insert(0) += len;
        }
        let old = (
            std::mem::replace(&mut self.files, files),
            std::mem::replace(&mut self.epochs, epochs),
        );
        match self.commit_text(&self.state_text()) {
            Ok(()) => Ok(()),
            Err((e, renamed)) => {
                (self.files, self.epochs) = old;
                if renamed {
                    // The new state may or may not be durable; only a
                    // reopen can tell, and it decides the files' lengths.
                    self.broken = true;
                } else {
                    self.undo(&grown);
                }
                Err(e)
            }
        }
    }

    /// Cuts every file of a failed batch back to its committed length.
    fn undo(&mut self, grown: &[(String, u64)]) {
        for (name, _) in grown {
            let path = self.dir.join(name);
            let committed = self.files.get(name).copied().unwrap_or(0);
            let cut = match self.fs.len(&path) {
                // Not even created: nothing to cut.
                Ok(None) => Ok(()),
                _ => self
                    .fs
                    .set_len(&path, committed)
                    .and_then(|_| self.sync(&path)),
            };
            if let Err(e) = cut {
                tracing::error!(
                    "{}: cannot cut back to its committed {committed} bytes: {e}",
                    path.display()
                );
                // The next open cuts it back.
                self.broken = true;
            }
        }
    }

    fn state_text(&self) -> String {
        let mut t = format!("{HEADER}\n");
        for (id, e) in &self.epochs {
            t.push_str(&format!(
                "epoch {id} {} {} {}\n",
                e.last_seq, e.source_drops, e.agent_dropped
            ));
        }
        for (name, len) in &self.files {
            t.push_str(&format!("file {name} {len}\n"));
        }
        let crc = crc32fast::hash(t.as_bytes());
        t.push_str(&format!("end {crc:08x}\n"));
        t
    }

    /// Replaces the state durably. The error says whether the rename
    /// happened (then the state on disk is unknown until a reopen).
    fn commit_text(&self, text: &str) -> Result<(), (StoreError, bool)> {
        let path = self.dir.join("state");
        let tmp = disk::tmp_path(&path);
        let fs = &self.fs;
        let before = fs
            .write_new(&tmp, text.as_bytes())
            .and_then(|_| self.sync(&tmp))
            .and_then(|_| fs.rename(&tmp, &path));
        if let Err(e) = before {
            let _ = fs.remove(&tmp);
            return Err((io_at(&path)(e), false));
        }
        self.sync_dir(&self.dir)
            .map_err(|e| (io_at(&self.dir)(e), true))
    }

    fn sync(&self, path: &Path) -> std::io::Result<()> {
        let t = std::time::Instant::now();
        let r = self.fs.sync(path);
        self.synced.set(self.synced.get() + t.elapsed());
        r
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let t = std::time::Instant::now();
        let r = self.fs.sync_dir(dir);
        self.synced.set(self.synced.get() + t.elapsed());
        r
    }

    /// The time spent in fsync since the last call (the collector's
    /// `vmflow_collect_fsync_seconds`).
    pub fn take_synced(&self) -> std::time::Duration {
        self.synced.take()
    }
}

/// NDJSON buffers kept for reuse, at most.
const POOL: usize = 8;

/// A group of batches judged against the states of their epochs and
/// formatted: what a commit writes.
struct Judged {
    outcomes: Vec<Outcome>,
    /// The states the judging started from, of each epoch the group names.
    assumed: Vec<(u64, EpochState)>,
    /// Those epochs' states once the group is durable.
    after: BTreeMap<u64, EpochState>,
    /// NDJSON lines by file (records' or observations' hour): the file
    /// name is formatted once per file, not per record.
    by_hour: BTreeMap<FileKey, Vec<u8>>,
}

/// Which hour file lines go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FileKey {
    Records(u64),
    Blocks(u64),
    Observations(u64),
}

impl FileKey {
    /// Its name in the stream's directory.
    fn file_name(self) -> String {
        match self {
            FileKey::Records(h) => hour_file(h * HOUR_NS),
            FileKey::Blocks(h) => hour_blocks_file(h * HOUR_NS),
            FileKey::Observations(h) => format!("{OBSERVATIONS_DIR}{}", hour_file(h * HOUR_NS)),
        }
    }
}

/// Where a stream's observations go, under its directory.
pub const OBSERVATIONS_DIR: &str = "observations/";

/// A batch's block, decoded: its records, the observations shipped with
/// them (NDJSON lines) and each observation's hour.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<FlowRecord>,
    pub observations: Vec<u8>,
    pub hours: Vec<u64>,
}

/// What a batch gives the files (borrowed from a [`Decoded`]).
#[derive(Clone, Copy)]
struct Part<'r> {
    records: &'r [FlowRecord],
    observations: &'r [u8],
    hours: &'r [u64],
}

impl<'r> Part<'r> {
    fn records(records: &'r [FlowRecord]) -> Part<'r> {
        Part {
            records,
            observations: &[],
            hours: &[],
        }
    }

    fn of(d: &'r Decoded) -> Part<'r> {
        Part {
            records: &d.records,
            observations: &d.observations,
            hours: &d.hours,
        }
    }
}

/// Judges each batch against `states` (advancing them) and formats the
/// records of the ones to write, into buffers taken from `pool`.
fn judge_group<'r>(
    states: &mut BTreeMap<u64, EpochState>,
    batches: impl Iterator<Item = (BatchInfo, Part<'r>)>,
    pool: &mut Vec<Vec<u8>>,
    format: StoreFormat,
) -> Judged {
    let mut j = Judged {
        outcomes: Vec::new(),
        assumed: Vec::new(),
        after: BTreeMap::new(),
        by_hour: BTreeMap::new(),
    };
    let mut lines = NdjsonLines::default();
    for (b, part) in batches {
        let before = states.get(&b.epoch).copied().unwrap_or_default();
        if !j.assumed.iter().any(|(id, _)| *id == b.epoch) {
            j.assumed.push((b.epoch, before));
        }
        let after = match judge(before, &b) {
            Verdict::Repeat => {
                j.outcomes.push(Outcome::Duplicate);
                continue;
            }
            Verdict::Refuse(why) => {
                j.outcomes.push(Outcome::Refused(why));
                break;
            }
            Verdict::Next(after) => after,
        };
        let mut buffer = || -> Vec<u8> {
            let mut v = pool.pop().unwrap_or_default();
            v.clear();
            v
        };
        match format {
            StoreFormat::Ndjson => {
                for r in part.records {
                    let key = FileKey::Records(r.first_ns / HOUR_NS);
                    let out = j.by_hour.entry(key).or_insert_with(&mut buffer);
                    lines.append(r, out);
                }
            }
            StoreFormat::Blocks => {
                for (h, recs) in by_hour(part.records) {
                    let out = j
                        .by_hour
                        .entry(FileKey::Blocks(h))
                        .or_insert_with(&mut buffer);
                    blocks::push_entry(out, &recs);
                }
            }
        }
        let lines = part.observations.split_inclusive(|&b| b == b'\n');
        for (line, &hour) in lines.zip(part.hours) {
            let key = FileKey::Observations(hour);
            let out = j.by_hour.entry(key).or_insert_with(&mut buffer);
            out.extend_from_slice(line);
        }
        states.insert(b.epoch, after);
        j.after.insert(b.epoch, after);
        j.outcomes.push(Outcome::Written(before));
    }
    j
}

/// A batch's records by hour, in hour order: one entry each in a blocks
/// store. Borrowed when they share one hour, as nearly every batch's do.
fn by_hour(records: &[FlowRecord]) -> Vec<(u64, Cow<'_, [FlowRecord]>)> {
    let hour = |r: &FlowRecord| r.first_ns / HOUR_NS;
    let Some(first) = records.first().map(hour) else {
        return Vec::new();
    };
    if records.iter().all(|r| hour(r) == first) {
        return vec![(first, Cow::Borrowed(records))];
    }
    let mut hours: BTreeMap<u64, Vec<FlowRecord>> = BTreeMap::new();
    for r in records {
        hours.entry(hour(r)).or_default().push(r.clone());
    }
    hours.into_iter().map(|(h, v)| (h, Cow::Owned(v))).collect()
}

/// A group made ready to commit without the store: its batches decoded,
/// judged against where the groups before it will leave the stream, and
/// formatted. [`StreamStore::commit`] writes it.
pub struct Prepared {
    infos: Vec<BatchInfo>,
    /// Kept for judging the group again if the store moved meanwhile.
    decoded: Vec<Decoded>,
    judged: Judged,
}

impl Prepared {
    /// Whether the group ends in a refusal: nothing after it is written.
    pub fn refuses(&self) -> bool {
        matches!(self.judged.outcomes.last(), Some(Outcome::Refused(_)))
    }
}

/// Prepares a group of decoded batches (`decoded[i]` is `infos[i]`'s) to
/// follow `states`, the stream's epochs as the groups before it leave them
/// (advanced to where this one leaves them).
pub fn prepare(
    states: &mut BTreeMap<u64, EpochState>,
    infos: Vec<BatchInfo>,
    decoded: Vec<Decoded>,
    pool: &mut Vec<Vec<u8>>,
    format: StoreFormat,
) -> Prepared {
    let group = infos.iter().copied().zip(decoded.iter().map(Part::of));
    let judged = judge_group(states, group, pool, format);
    Prepared {
        infos,
        decoded,
        judged,
    }
}

pub const HOUR_NS: u64 = 3_600_000_000_000;

/// `YYYY-MM-DDTHH.ndjson` (UTC) of a timestamp.
pub fn hour_file(ns: u64) -> String {
    format!("{}.ndjson", hour_stem(ns))
}

/// `YYYY-MM-DDTHH.blocks` (UTC) of a timestamp.
pub fn hour_blocks_file(ns: u64) -> String {
    format!("{}{BLOCKS_EXT}", hour_stem(ns))
}

fn hour_stem(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (y, m, d) = crate::calendar::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}", secs % 86_400 / 3_600)
}

/// The name ending of hour files in the compact format.
pub const BLOCKS_EXT: &str = ".blocks";

#[cfg(test)]
mod tests;
