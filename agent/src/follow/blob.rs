//! Capture files in a Blob storage container (where Network Watcher uploads
//! them): listed by prefix, taken in capture order, downloaded one at a time,
//! read, and then kept or deleted. Which blobs are finished, and how far into
//! the current one the engine got, goes into the agent's checkpoint; a blob
//! is deleted only once a checkpoint that records it as read is on disk.
//!
//! Uploads need not arrive in capture order. A newly listed blob is read only
//! once a listing made `reorder_window` after the one that first showed it
//! has been seen, so an older blob uploaded up to that much later is still
//! read first. One that arrives later still — older than a blob already
//! read — is not fed to the flow engine: its packets predate flows that were
//! already exported, and taking them in would give those flows a second set
//! of records (segment 0 again, a second `final`) that no consumer can tell
//! from two flows. Someone running this wants the data kept and the loss
//! said loudly, not a silently wrong flow table: it is a reported coverage
//! gap (blob name, packet count, time span; `late` counters), left in the
//! container even with `after = "delete"`, so that `vmflow replay` can turn
//! it into records.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::growing::GrowingFile;
use super::sequence::Sequence;
use super::source::{FollowedSource, Step};
use super::FollowError;
use crate::azure::blob::{bare_etag, BlobClient, BlobItem, Get};
use crate::azure::AzureError;
use crate::capture::filter::{FilteredFeed, PacketFilter};
use crate::capture::SourceError;
use crate::config::{AfterRead, BlobConfig};
use crate::pipeline::Feed;

/// A blob's content: its name and ETag (an overwritten blob is new content),
/// and what was read of it: a blob that has grown since (its ETag changed,
/// the bytes read are still its beginning) is read on from there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobId {
    pub name: String,
    pub etag: String,
    /// Bytes downloaded (0 in checkpoints from before this was kept).
    #[serde(default)]
    pub len: u64,
    /// Digest of the last [`TAIL`] bytes of those.
    #[serde(default)]
    pub tail: u64,
    /// Packets in them (once read to the end).
    #[serde(default)]
    pub packets: u64,
}

#[derive(Serialize, Deserialize)]
pub struct BlobPosition {
    /// The blob being read and how many of its packets were handled.
    pub current: Option<(BlobId, u64)>,
    /// Finished blobs still in the container.
    pub done: Vec<BlobId>,
    /// Finished blobs to delete once this position is on disk.
    pub to_delete: Vec<String>,
    pub sequence: Sequence,
    /// Capture order (time, name) of the newest blob read: a new blob before
    /// it came too late to be read in order.
    #[serde(default)]
    pub newest: Option<(u64, String)>,
    /// Blobs that came too late (reported, not read), while they exist.
    #[serde(default)]
    pub late: Vec<BlobId>,
}

impl BlobPosition {
    pub fn new(cfg: &BlobConfig) -> Self {
        BlobPosition {
            current: None,
            done: Vec::new(),
            to_delete: Vec::new(),
            sequence: Sequence::new(cfg.overlap_window.ns(), cfg.max_silence.ns()),
            newest: None,
            late: Vec::new(),
        }
    }
}

/// How much of the end of what was read is compared with a grown blob's
/// bytes at the same place, to tell an append from a rewrite.
const TAIL: u64 = 4096;

pub struct BlobSource {
    cfg: BlobConfig,
    client: BlobClient,
    pub pos: BlobPosition,
    dir: PathBuf,
    /// Local files get a fresh name each (one may be kept while another is read).
    files: u64,
    /// The blob being read: its local copy.
    local: PathBuf,
    follower: Option<GrowingFile>,
    /// The last blob read to its end, with its local copy and reader: if it
    /// grows, only its new bytes are fetched and read on.
    kept: Option<Kept>,
    queue: Vec<Queued>,
    /// New blobs older than the newest read, to report.
    too_late: Vec<BlobItem>,
    /// When each blob waiting to be read was first listed.
    seen: HashMap<String, Instant>,
    listed: Option<Instant>,
    backoff: Backoff,
    pub stats: BlobStats,
    /// Only packets this passes reach the engine (`source.blob.filter`).
    pub filter: Option<PacketFilter>,
}

struct Kept {
    name: String,
    path: PathBuf,
    follower: GrowingFile,
}

/// A blob to read: new, or read before and changed since.
struct Queued {
    item: BlobItem,
    before: Option<BlobId>,
    /// First listed.
    seen: Instant,
}

/// What is known of a blob about to be downloaded.
enum Before<'a> {
    New,
    /// The checkpoint was inside it, this many packets in.
    Resume(&'a BlobId, u64),
    /// Read to its end before; its ETag changed since.
    Read(&'a BlobId),
    /// Read before, and its bytes are no longer what was read.
    Rewritten,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobStats {
    pub listings: u64,
    /// GETs of blob content (whole, or the new part of a grown blob).
    pub downloaded: u64,
    /// Bytes those transferred.
    pub bytes: u64,
    pub deleted: u64,
    /// Listed, but gone before they could be downloaded.
    pub vanished: u64,
    /// Failed attempts to list or download (each followed by a wait).
    pub errors: u64,
    /// Blobs that arrived after a newer one was read (reported, not read),
    /// and their packets.
    pub late: u64,
    pub late_packets: u64,
}

impl BlobSource {
    pub fn new(
        cfg: BlobConfig,
        client: BlobClient,
        pos: BlobPosition,
        download_dir: PathBuf,
    ) -> Result<Self, FollowError> {
        std::fs::create_dir_all(&download_dir).map_err(|e| SourceError::io(&download_dir, e))?;
        // Local copies are of this run only.
        if let Ok(entries) = std::fs::read_dir(&download_dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let ours = name == "current.cap"
                    || name == "late.cap"
                    || name.ends_with(".part")
                    || (name.starts_with("blob-") && name.ends_with(".cap"));
                if ours {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut pos = pos;
        pos.sequence
            .set_limits(cfg.overlap_window.ns(), cfg.max_silence.ns());
        // Checkpoints from before ETags were compared bare.
        for id in pos
            .done
            .iter_mut()
            .chain(pos.current.as_mut().map(|c| &mut c.0))
        {
            id.etag = bare_etag(&id.etag);
        }
        Ok(BlobSource {
            local: download_dir.join("blob-0.cap"),
            dir: download_dir,
            files: 0,
            backoff: Backoff::new(cfg.poll_interval.get()),
            cfg,
            client,
            pos,
            follower: None,
            kept: None,
            filter: None,
            queue: Vec::new(),
            too_late: Vec::new(),
            seen: HashMap::new(),
            listed: None,
            stats: BlobStats::default(),
        })
    }

    fn wanted(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.cfg
            .extensions
            .iter()
            .any(|x| lower.ends_with(&format!(".{}", x.to_ascii_lowercase())))
    }

    fn new_path(&mut self) -> PathBuf {
        self.files += 1;
        self.dir.join(format!("blob-{}.cap", self.files))
    }

    fn drop_kept(&mut self) {
        if let Some(k) = self.kept.take() {
            let _ = std::fs::remove_file(&k.path);
        }
    }

    /// A blob read to its end is gone: nothing of it is missing.
    fn forget(&mut self, name: &str) {
        tracing::info!("blob {name}: deleted since it was read");
        self.pos.done.retain(|d| d.name != name);
        if self.kept.as_ref().is_some_and(|k| k.name == name) {
            self.drop_kept();
        }
    }

    /// Lists the container: the blobs not read yet, and those read whose
    /// ETag has changed since, in capture order. A blob whose ETag is the
    /// one read is never fetched again.
    fn list(&mut self) -> Result<(), FollowError> {
        let items = self
            .client
            .list(&self.cfg.prefix, self.cfg.page_size)
            .map_err(FollowError::Azure)?;
        self.stats.listings += 1;
        let now = Instant::now();
        self.listed = Some(now);
        let names: std::collections::HashSet<&str> =
            items.iter().map(|b| b.name.as_str()).collect();
        // Finished blobs are remembered while they exist.
        self.pos.done.retain(|d| names.contains(d.name.as_str()));
        self.pos.late.retain(|d| names.contains(d.name.as_str()));
        if self
            .kept
            .as_ref()
            .is_some_and(|k| !names.contains(k.name.as_str()))
        {
            self.drop_kept();
        }
        let current = self.pos.current.as_ref().map(|c| c.0.name.clone());
        let mut seen = HashMap::new();
        let mut q: Vec<Queued> = Vec::new();
        self.too_late.clear();
        for b in items {
            let reported = self.pos.late.iter().any(|d| d.name == b.name);
            if !self.wanted(&b.name) || Some(&b.name) == current.as_ref() || reported {
                continue;
            }
            let before = self.pos.done.iter().find(|d| d.name == b.name);
            match before {
                Some(d) if d.etag == b.etag => continue,
                None if self
                    .pos
                    .newest
                    .as_ref()
                    .is_some_and(|n| (capture_time(&b), &b.name) < (n.0, &n.1)) =>
                {
                    self.too_late.push(b);
                    continue;
                }
                _ => {}
            }
            let first = match self.seen.get(&b.name) {
                Some(t) => *t,
                None => {
                    if before.is_none() && self.cfg.reorder_window.get() > 0.0 {
                        tracing::debug!(
                            "blob {}: listed; read in capture order after the reorder window ({} s)",
                            b.name,
                            self.cfg.reorder_window
                        );
                    }
                    now
                }
            };
            seen.insert(b.name.clone(), first);
            q.push(Queued {
                before: before.cloned(),
                item: b,
                seen: first,
            });
        }
        q.sort_by_cached_key(|b| (capture_time(&b.item), b.item.name.clone()));
        self.too_late
            .sort_by_cached_key(|b| (capture_time(b), b.name.clone()));
        self.queue = q;
        self.seen = seen;
        Ok(())
    }

    /// A new blob older than one already read: downloaded to count its
    /// packets and reported as a coverage gap, not read (see the module's
    /// comment for why). It stays in the container.
    fn late(&mut self, b: &BlobItem, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        let path = self.dir.join("late.cap");
        let got = self
            .client
            .download(&b.name, &path)
            .map_err(FollowError::Azure)?;
        self.stats.late += 1;
        let Some(etag) = got else {
            self.stats.vanished += 1;
            tracing::warn!(
                "blob {}: arrived after newer blobs were read, and was deleted before its packets could be counted",
                b.name
            );
            return Ok(Step::Progress);
        };
        let io = |e| SourceError::io(&path, e);
        let len = std::fs::metadata(&path).map_err(io)?.len();
        self.stats.downloaded += 1;
        self.stats.bytes += len;
        let (mut n, mut first, mut last) = (0u64, u64::MAX, 0u64);
        let mut f = GrowingFile::new(&path);
        let cut = match f.poll_with(true, &mut |p| {
            n += 1;
            first = first.min(p.ts_ns);
            last = last.max(p.ts_ns);
        }) {
            Ok(p) => p.partial.then(|| "; it ends in a cut record".to_string()),
            Err(e) => Some(format!("; unreadable after a corrupt record: {e}")),
        };
        let tail = tail_digest(&path, len).map_err(io)?;
        drop(f);
        let _ = std::fs::remove_file(&path);
        self.stats.late_packets += n;
        let why = format!(
            "blob {} arrived after newer blobs were read: its {n} packets are not in the records{} (kept in the container; `vmflow replay` reads it)",
            b.name,
            cut.unwrap_or_default()
        );
        tracing::warn!(
            "blob {}: arrived after newer blobs were read: {n} packets not read",
            b.name
        );
        if n > 0 {
            self.pos.sequence.gap(first, last, why, feed);
        }
        self.pos.late.push(BlobId {
            name: b.name.clone(),
            etag,
            len,
            tail,
            packets: n,
        });
        Ok(Step::Progress)
    }

    /// Downloads `name` whole and starts reading it.
    fn start(&mut self, name: &str, before: Before<'_>) -> Result<Step, FollowError> {
        let path = self.new_path();
        let got = self
            .client
            .download(name, &path)
            .map_err(FollowError::Azure)?;
        let Some(etag) = got else {
            self.stats.vanished += 1;
            match before {
                Before::New => {
                    let why = format!("blob {name} was deleted before it was read");
                    tracing::warn!("{why}");
                    self.pos.sequence.note_loss(why);
                }
                Before::Resume(..) => {
                    // Part of it was used: its end is lost.
                    let why = format!("blob {name} was deleted before it was read to its end");
                    tracing::warn!("{why}");
                    self.pos.current = None;
                    self.pos.sequence.end_file(Some(why));
                }
                Before::Read(_) | Before::Rewritten => self.forget(name),
            }
            return Ok(Step::Progress);
        };
        let io = |e| SourceError::io(&path, e);
        let len = std::fs::metadata(&path).map_err(io)?.len();
        self.stats.downloaded += 1;
        self.stats.bytes += len;
        // A blob read before that only grew: the packets handled then are
        // its first ones still.
        let grew = |id: &BlobId| -> Result<bool, FollowError> {
            Ok(id.len > 0 && len >= id.len && tail_digest(&path, id.len).map_err(io)? == id.tail)
        };
        let skip = match before {
            Before::New | Before::Rewritten => 0,
            Before::Resume(id, handled) if id.etag == etag || grew(id)? => handled,
            Before::Read(id) if id.etag == etag || grew(id)? => id.packets,
            Before::Resume(..) | Before::Read(_) => {
                tracing::warn!(
                    "blob {name} changed since it was read; reading it again (packets already counted are recognised as duplicates)"
                );
                0
            }
        };
        tracing::info!("blob {name}: reading");
        self.pos.current = Some((
            BlobId {
                name: name.to_string(),
                etag,
                len,
                tail: tail_digest(&path, len).map_err(io)?,
                packets: 0,
            },
            skip,
        ));
        // The kept blob is no longer the last one read (or is read again).
        self.drop_kept();
        let _ = std::fs::remove_file(&self.local);
        self.follower = Some(GrowingFile::resume_at(&path, skip));
        self.local = path;
        Ok(Step::Progress)
    }

    /// A blob read before whose ETag changed. When it is the last one read
    /// and still on disk, only what follows the bytes read is fetched (a
    /// ranged GET for the ETag the listing showed), and read on with the
    /// same reader — if it grew: the end of what was read must come back
    /// unchanged, else it was rewritten and is read again whole.
    fn changed(&mut self, b: &BlobItem, before: &BlobId) -> Result<Step, FollowError> {
        let kept = self.kept.as_ref().is_some_and(|k| k.name == b.name);
        if !kept || before.len == 0 || b.size < before.len {
            return if b.size < before.len {
                self.start(&b.name, Before::Rewritten)
            } else {
                self.start(&b.name, Before::Read(before))
            };
        }
        let overlap = before.len.min(TAIL);
        let got = self
            .client
            .get(&b.name, before.len - overlap, Some(&b.etag))
            .map_err(FollowError::Azure)?;
        let (etag, mut reader) = match got {
            Get::Body { etag, reader } => (etag, reader),
            Get::Gone => {
                self.forget(&b.name);
                return Ok(Step::Progress);
            }
            // Changed again since the listing: the next listing tells.
            Get::Changed => return Ok(Step::Progress),
        };
        self.stats.downloaded += 1;
        let net = |e: std::io::Error| {
            FollowError::Azure(AzureError::Transport {
                op: format!("download {}", b.name),
                msg: e.to_string(),
            })
        };
        let mut end = vec![0u8; overlap as usize];
        reader.read_exact(&mut end).map_err(net)?;
        self.stats.bytes += overlap;
        if digest(&end) != before.tail {
            drop(reader);
            tracing::warn!(
                "blob {} was rewritten since it was read; reading it again (packets already counted are recognised as duplicates)",
                b.name
            );
            return self.start(&b.name, Before::Rewritten);
        }
        let Some(k) = self.kept.take() else {
            return Ok(Step::Progress);
        };
        let io = |e| SourceError::io(&k.path, e);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&k.path)
            .map_err(io)?;
        let added = std::io::copy(&mut reader, &mut f).map_err(net)?;
        f.flush().map_err(io)?;
        drop(f);
        self.stats.bytes += added;
        let len = before.len + added;
        tracing::info!(
            "blob {}: reading the {added} bytes it grew by since it was read",
            b.name
        );
        self.pos.current = Some((
            BlobId {
                name: b.name.clone(),
                etag,
                len,
                tail: tail_digest(&k.path, len).map_err(io)?,
                packets: 0,
            },
            before.packets,
        ));
        self.follower = Some(k.follower);
        self.local = k.path;
        Ok(Step::Progress)
    }

    /// Reads the downloaded blob to its end.
    fn read(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        let Some(mut f) = self.follower.take() else {
            return Ok(Step::Idle);
        };
        // A downloaded blob is whole: read it to the end.
        let seq = &mut self.pos.sequence;
        let mut feed = FilteredFeed {
            feed,
            filter: self.filter.as_mut(),
        };
        let res = f.poll_with(true, &mut |p| seq.packet(p, &mut feed));
        let lost = match res {
            Ok(p) if p.partial => Some("ends in a cut record".to_string()),
            Ok(_) => None,
            Err(e) => {
                tracing::error!("{e}");
                Some(format!("unreadable after a corrupt record: {e}"))
            }
        };
        let (mut id, _) = self
            .pos
            .current
            .take()
            .ok_or(FollowError::Invariant("blob source: a file without a blob"))?;
        if let Some(why) = &lost {
            tracing::warn!("blob {}: {why}", id.name);
        }
        self.pos.sequence.end_file(lost.clone());
        if self.cfg.after == AfterRead::Delete {
            self.pos.to_delete.push(id.name.clone());
        }
        id.packets = f.position();
        if lost.is_none() {
            self.kept = Some(Kept {
                name: id.name.clone(),
                path: self.local.clone(),
                follower: f,
            });
        } else {
            let _ = std::fs::remove_file(&self.local);
        }
        self.pos.done.retain(|d| d.name != id.name);
        self.pos.done.push(id);
        Ok(Step::Progress)
    }

    fn look(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        if self.follower.is_some() {
            return self.read(feed);
        }
        let now = Instant::now();
        if !self.backoff.ready(now) {
            return Ok(Step::Idle);
        }
        match self.fetch(feed) {
            Ok(step) => {
                if let Some(r) = self.backoff.succeeded(now) {
                    tracing::info!(
                        "blob storage answers again: recovered after {} failed attempts over {:.1} s",
                        r.attempts,
                        r.lasted.as_secs_f64()
                    );
                }
                Ok(step)
            }
            Err(e) => {
                self.stats.errors += 1;
                let msg = e.to_string();
                let (wait, note) = self.backoff.failed(&msg, now);
                let wait = wait.as_secs_f64();
                match note {
                    Note::First => tracing::error!("{msg}; retrying in {wait:.1} s"),
                    Note::Changed(r) => tracing::error!(
                        "{msg}; retrying in {wait:.1} s (the previous error: {} failed attempts over {:.1} s)",
                        r.attempts,
                        r.lasted.as_secs_f64()
                    ),
                    Note::Reminder(r) => tracing::warn!(
                        "still failing: {} attempts over {:.0} s, last: {msg}; retrying in {wait:.1} s",
                        r.attempts,
                        r.lasted.as_secs_f64()
                    ),
                    Note::Repeat => {}
                }
                Ok(Step::Idle)
            }
        }
    }

    /// The part of a look that talks to the service: its errors are retried
    /// after a backoff.
    fn fetch(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        if let Some((id, handled)) = self.pos.current.clone() {
            // Resuming: the blob the checkpoint was inside.
            return self.start(&id.name, Before::Resume(&id, handled));
        }
        let now = Instant::now();
        let window = self.cfg.reorder_window.duration();
        let poll = self.cfg.poll_interval.duration();
        // A new blob is read once a listing made a window after it was first
        // seen is in: whatever older blob was uploaded meanwhile is then
        // known and read first, at any poll_interval. Listings go on while
        // it waits, so that an older one's own window starts early.
        let held = |q: &Queued, now: Instant| q.before.is_none() && now < q.seen + window;
        let due = match self.listed {
            None => true,
            Some(t) => match self.queue.first() {
                None => self.too_late.is_empty() && now.duration_since(t) >= poll,
                Some(q) if held(q, now) => now.duration_since(t) >= poll,
                Some(q) => q.before.is_none() && t < q.seen + window,
            },
        };
        if due {
            self.list()?;
        }
        if let Some(b) = self.too_late.first().cloned() {
            let step = self.late(&b, feed)?;
            self.too_late.remove(0);
            return Ok(step);
        }
        let Some(next) = self.queue.first() else {
            return Ok(Step::Idle);
        };
        if held(next, Instant::now()) {
            return Ok(Step::Idle);
        }
        let (item, before) = (next.item.clone(), next.before.clone());
        // Still next in capture order until it is taken: a later blob taken
        // first would make this one's packets look like duplicates.
        let step = match &before {
            None => {
                let step = self.start(&item.name, Before::New)?;
                let key = (capture_time(&item), item.name.clone());
                if self.pos.newest.as_ref().is_none_or(|n| *n < key) {
                    self.pos.newest = Some(key);
                }
                step
            }
            Some(b) => self.changed(&item, b)?,
        };
        self.queue.remove(0);
        self.seen.remove(&item.name);
        Ok(step)
    }
}

/// FNV-1a: tells whether bytes came back the same.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Digest of the [`TAIL`] bytes before offset `len` of `path`.
fn tail_digest(path: &Path, len: u64) -> std::io::Result<u64> {
    let n = len.min(TAIL);
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(len - n))?;
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)?;
    Ok(digest(&buf))
}

impl FollowedSource for BlobSource {
    type Position = BlobPosition;

    fn step(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        self.look(feed)
    }

    fn position(&self) -> &BlobPosition {
        &self.pos
    }

    fn sequence(&self) -> &Sequence {
        &self.pos.sequence
    }

    fn checkpointed(&mut self) {
        let names = std::mem::take(&mut self.pos.to_delete);
        for name in names {
            match self.client.delete(&name) {
                Ok(_) => {
                    self.stats.deleted += 1;
                    self.pos.done.retain(|d| d.name != name);
                }
                Err(e) => {
                    tracing::warn!("{e}; deleting it again after the next checkpoint");
                    self.pos.to_delete.push(name);
                }
            }
        }
    }
}

/// Waiting after failed requests. A server that refuses (403, 500) or a port
/// that is closed answers at once, so retrying at the loop's pace would be
/// hundreds of requests a minute and a log line each: the wait starts at
/// `poll_interval` (at least a second), doubles up to five minutes (or
/// `poll_interval` if longer), and a success resets it. An error is logged
/// when it first appears or changes, then only as an hourly reminder, and
/// the recovery says how many attempts failed.
struct Backoff {
    wait: crate::episode::Backoff,
    next: Option<Instant>,
    error: Option<String>,
    attempts: u64,
    since: Option<Instant>,
    logged: Option<Instant>,
}

/// What a failure is worth saying.
#[derive(Debug, PartialEq)]
enum Note {
    First,
    Repeat,
    /// Another error than the one before, which lasted so long.
    Changed(Run),
    /// The same error for another hour.
    Reminder(Run),
}

/// A stretch of failures with one error.
#[derive(Debug, PartialEq)]
struct Run {
    attempts: u64,
    lasted: Duration,
}

const BACKOFF_CAP: Duration = Duration::from_secs(300);
const REMINDER: Duration = Duration::from_secs(3600);

impl Backoff {
    fn new(poll_interval: f64) -> Self {
        let first = Duration::from_secs_f64(poll_interval.max(1.0));
        Backoff {
            wait: crate::episode::Backoff::new(first, BACKOFF_CAP),
            next: None,
            error: None,
            attempts: 0,
            since: None,
            logged: None,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// A failed attempt: how long to wait, and what to say about it.
    fn failed(&mut self, msg: &str, now: Instant) -> (Duration, Note) {
        let wait = self.wait.fail();
        self.next = Some(now + wait);
        let note = match &self.error {
            None => Note::First,
            Some(e) if e != msg => Note::Changed(self.run(now)),
            Some(_)
                if self
                    .logged
                    .is_some_and(|t| now.duration_since(t) >= REMINDER) =>
            {
                self.attempts += 1;
                self.logged = Some(now);
                return (wait, Note::Reminder(self.run(now)));
            }
            Some(_) => {
                self.attempts += 1;
                return (wait, Note::Repeat);
            }
        };
        self.error = Some(msg.to_string());
        self.attempts = 1;
        self.since = Some(now);
        self.logged = Some(now);
        (wait, note)
    }

    /// A successful request: the failures before it, if any.
    fn succeeded(&mut self, now: Instant) -> Option<Run> {
        self.wait.reset();
        self.next = None;
        self.error.take()?;
        let run = self.run(now);
        self.attempts = 0;
        self.since = None;
        self.logged = None;
        Some(run)
    }

    fn run(&self, now: Instant) -> Run {
        Run {
            attempts: self.attempts,
            lasted: self.since.map_or(Duration::ZERO, |t| now.duration_since(t)),
        }
    }
}

/// Capture order: the time in Network Watcher's blob name
/// (`…/YYYY/MM/DD/packetcapture_HH_MM_SS_mmm.cap`), else the blob's creation
/// time, else nothing (then the name decides).
pub fn capture_time(b: &BlobItem) -> u64 {
    name_time(&b.name)
        .or_else(|| b.created.as_deref().and_then(rfc1123_ns))
        .unwrap_or(0)
}

fn name_time(name: &str) -> Option<u64> {
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let n = parts.len();
    if n < 4 {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (y, mo, d) = (num(parts[n - 4])?, num(parts[n - 3])?, num(parts[n - 2])?);
    let file = parts[n - 1].strip_prefix("packetcapture_")?;
    let stem = file.split('.').next()?;
    let t: Vec<i64> = stem.split('_').map(num).collect::<Option<_>>()?;
    if t.len() < 3 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let ms = t.get(3).copied().unwrap_or(0);
    let days = crate::calendar::days_from_civil(y, mo, d);
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    u64::try_from(secs)
        .ok()
        .map(|s| s * 1_000_000_000 + (ms as u64) * 1_000_000)
}

/// `Fri, 31 Jan 2025 16:39:41 GMT` → ns since the epoch.
fn rfc1123_ns(s: &str) -> Option<u64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() < 5 {
        return None;
    }
    let d: i64 = f[1].parse().ok()?;
    let months = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let m = months.iter().position(|x| f[2].eq_ignore_ascii_case(x))? as i64 + 1;
    let y: i64 = f[3].parse().ok()?;
    let hms: Vec<i64> = f[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    let secs =
        crate::calendar::days_from_civil(y, m, d) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    u64::try_from(secs).ok().map(|s| s * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, created: Option<&str>) -> BlobItem {
        BlobItem {
            name: name.into(),
            etag: "e".into(),
            size: 1,
            created: created.map(str::to_string),
            modified: None,
        }
    }

    #[test]
    fn failures_back_off_doubling_to_a_cap_and_are_noted_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Backoff::new(0.05);
        assert!(b.ready(t0));
        let (w, n) = b.failed("HTTP 500", t0);
        assert_eq!((w, n), (s(1), Note::First));
        assert!(!b.ready(t0 + Duration::from_millis(999)));
        assert!(b.ready(t0 + s(1)));
        let waits: Vec<u64> = (0..10)
            .map(|_| {
                let (w, n) = b.failed("HTTP 500", t0 + s(1));
                assert_eq!(n, Note::Repeat);
                w.as_secs()
            })
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        let (_, n) = b.failed("connection refused", t0 + s(10));
        assert_eq!(
            n,
            Note::Changed(Run {
                attempts: 11,
                lasted: s(10)
            })
        );
        let (_, n) = b.failed("connection refused", t0 + s(10) + REMINDER);
        assert!(
            matches!(n, Note::Reminder(Run { attempts: 2, .. })),
            "{n:?}"
        );
        // A success resets the wait and reports the stretch of failures.
        let r = b.succeeded(t0 + s(20) + REMINDER).unwrap();
        assert_eq!(r.attempts, 2);
        assert!(b.ready(t0));
        assert_eq!(b.succeeded(t0), None);
        assert_eq!(b.failed("HTTP 403", t0).0, s(1));
        // A long poll interval is where the wait starts, and at least the cap.
        let mut slow = Backoff::new(600.0);
        assert_eq!(slow.failed("x", t0).0, s(600));
        assert_eq!(slow.failed("x", t0).0, s(600));
        assert_eq!(Backoff::new(30.0).failed("x", t0).0, s(30));
    }

    #[test]
    fn capture_order_from_names_then_creation_time() {
        let a = item(
            "subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm/2025/01/31/packetcapture_16_39_41_077.cap",
            None,
        );
        assert_eq!(capture_time(&a), 1_738_341_581_077_000_000);
        let b = item("x/2025/01/31/PacketCapture_09_00_00_000.CAP", None);
        assert!(capture_time(&b) < capture_time(&a));
        let c = item("other.cap", Some("Fri, 31 Jan 2025 16:39:41 GMT"));
        assert_eq!(capture_time(&c), 1_738_341_581_000_000_000);
        assert_eq!(capture_time(&item("other.cap", None)), 0);
        assert_eq!(
            capture_time(&item("2025/13/01/packetcapture_1_2_3.cap", None)),
            0
        );
    }
}
