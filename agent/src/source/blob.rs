//! Capture files in a Blob storage container (where Network Watcher uploads
//! them): listed by prefix, taken in capture order, downloaded one at a time,
//! read, and then kept or deleted. Which blobs are finished, and how far into
//! the current one the engine got, goes into the agent's checkpoint; a blob
//! is deleted only once a checkpoint that records it as read is on disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::follow::Follower;
use super::sequence::Sequence;
use crate::azure::blob::{BlobClient, BlobItem};
use crate::config::{AfterRead, BlobConfig};
use crate::error::Error;
use crate::pipeline::Feed;
use crate::tail::{Step, Tailed};

/// A blob's content: its name and ETag (an overwritten blob is new content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobId {
    pub name: String,
    pub etag: String,
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
}

impl BlobPosition {
    pub fn new(cfg: &BlobConfig) -> Self {
        BlobPosition {
            current: None,
            done: Vec::new(),
            to_delete: Vec::new(),
            sequence: Sequence::new(secs(cfg.overlap_window), secs(cfg.max_silence)),
        }
    }
}

fn secs(s: f64) -> u64 {
    (s * 1e9) as u64
}

pub struct BlobSource {
    cfg: BlobConfig,
    client: BlobClient,
    pub pos: BlobPosition,
    local: PathBuf,
    follower: Option<Follower>,
    queue: Vec<BlobItem>,
    listed: Option<Instant>,
    backoff: Backoff,
    pub stats: BlobStats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobStats {
    pub listings: u64,
    pub downloaded: u64,
    pub bytes: u64,
    pub deleted: u64,
    /// Listed, but gone before they could be downloaded.
    pub vanished: u64,
    /// Failed attempts to list or download (each followed by a wait).
    pub errors: u64,
}

impl BlobSource {
    pub fn new(
        cfg: BlobConfig,
        client: BlobClient,
        pos: BlobPosition,
        download_dir: PathBuf,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&download_dir).map_err(|e| Error::io(&download_dir, e))?;
        let mut pos = pos;
        pos.sequence
            .set_limits(secs(cfg.overlap_window), secs(cfg.max_silence));
        Ok(BlobSource {
            local: download_dir.join("current.cap"),
            backoff: Backoff::new(cfg.poll_interval),
            cfg,
            client,
            pos,
            follower: None,
            queue: Vec::new(),
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

    /// Lists the container: the blobs not read yet, in capture order.
    fn list(&mut self) -> Result<(), Error> {
        let items = self
            .client
            .list(&self.cfg.prefix, self.cfg.page_size)
            .map_err(Error::Azure)?;
        self.stats.listings += 1;
        self.listed = Some(Instant::now());
        let names: std::collections::HashSet<&str> =
            items.iter().map(|b| b.name.as_str()).collect();
        // Finished blobs are remembered while they exist.
        self.pos.done.retain(|d| names.contains(d.name.as_str()));
        let current = self.pos.current.as_ref().map(|c| c.0.name.clone());
        let mut q: Vec<BlobItem> = items
            .into_iter()
            .filter(|b| self.wanted(&b.name))
            .filter(|b| Some(&b.name) != current.as_ref())
            .filter(|b| {
                !self
                    .pos
                    .done
                    .iter()
                    .any(|d| d.name == b.name && d.etag == b.etag)
            })
            .collect();
        q.sort_by_cached_key(|b| (capture_time(b), b.name.clone()));
        q.reverse();
        self.queue = q;
        Ok(())
    }

    fn start(&mut self, name: &str, handled: u64, expect: Option<&str>) -> Result<Step, Error> {
        match self
            .client
            .download(name, &self.local)
            .map_err(Error::Azure)?
        {
            None => {
                self.stats.vanished += 1;
                let why = format!("blob {name} was deleted before it was read");
                tracing::warn!("{why}");
                if handled > 0 || expect.is_some() {
                    // Part of it was used: its end is lost.
                    self.pos.current = None;
                    self.pos.sequence.end_file(Some(why));
                } else {
                    self.pos.sequence.note_loss(why);
                }
                Ok(Step::Progress)
            }
            Some(etag) => {
                self.stats.downloaded += 1;
                self.stats.bytes += std::fs::metadata(&self.local).map_or(0, |m| m.len());
                let same = expect.is_none_or(|e| e == etag);
                let skip = if same { handled } else { 0 };
                if !same {
                    tracing::warn!(
                        "blob {name} changed since the checkpoint; reading it again (packets already counted are recognised as duplicates)"
                    );
                }
                tracing::info!("blob {name}: reading");
                self.pos.current = Some((
                    BlobId {
                        name: name.to_string(),
                        etag,
                    },
                    skip,
                ));
                self.follower = Some(Follower::resume_at(&self.local, skip));
                Ok(Step::Progress)
            }
        }
    }

    fn look(&mut self, feed: &mut dyn Feed) -> Result<Step, Error> {
        if let Some(f) = self.follower.as_mut() {
            // A downloaded blob is whole: read it to the end.
            let seq = &mut self.pos.sequence;
            let res = f.poll_with(true, &mut |p| seq.packet(p, feed));
            let lost = match res {
                Ok(p) if p.partial => Some("ends in a cut record".to_string()),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!("{e}");
                    Some(format!("unreadable after a corrupt record: {e}"))
                }
            };
            let (id, _) = self
                .pos
                .current
                .take()
                .ok_or_else(|| Error::Pipeline("blob source: a file without a blob".into()))?;
            if let Some(why) = &lost {
                tracing::warn!("blob {}: {why}", id.name);
            }
            self.pos.sequence.end_file(lost);
            if self.cfg.after == AfterRead::Delete {
                self.pos.to_delete.push(id.name.clone());
            }
            self.pos.done.push(id);
            self.follower = None;
            let _ = std::fs::remove_file(&self.local);
            return Ok(Step::Progress);
        }
        let now = Instant::now();
        if !self.backoff.ready(now) {
            return Ok(Step::Idle);
        }
        match self.fetch() {
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
    fn fetch(&mut self) -> Result<Step, Error> {
        if let Some((id, handled)) = self.pos.current.clone() {
            // Resuming: the blob the checkpoint was inside.
            return self.start(&id.name, handled, Some(&id.etag));
        }
        if self.queue.is_empty() {
            let due = self
                .listed
                .is_none_or(|t| t.elapsed() >= Duration::from_secs_f64(self.cfg.poll_interval));
            if !due {
                return Ok(Step::Idle);
            }
            self.list()?;
        }
        match self.queue.pop() {
            Some(b) => {
                let r = self.start(&b.name, 0, None);
                if r.is_err() {
                    // Still next in capture order: taking a later blob first
                    // would make this one's packets look like duplicates.
                    self.queue.push(b);
                }
                r
            }
            None => Ok(Step::Idle),
        }
    }
}

impl Tailed for BlobSource {
    type Position = BlobPosition;

    fn step(&mut self, feed: &mut dyn Feed) -> Result<Step, Error> {
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
    first: Duration,
    cap: Duration,
    failures: u32,
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
            first,
            cap: BACKOFF_CAP.max(first),
            failures: 0,
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
        let wait = self
            .first
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
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
        self.failures = 0;
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
