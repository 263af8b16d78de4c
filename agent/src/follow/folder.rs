//! The capture folder (`/var/captures`): picks capture files up as they are
//! written, in capture order (first packet time, then name), follows the file
//! being written, moves on when a newer file has begun, and knows which files
//! it has finished. Its [`FolderPosition`] goes into the agent's checkpoint.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::growing::GrowingFile;
use super::sequence::Sequence;
use super::source::{FollowedSource, Step};
use super::FollowError;
use crate::capture::filter::{FilteredFeed, PacketFilter};
use crate::capture::{CaptureReader, SourceError};
use crate::config::FolderConfig;
use crate::pipeline::Feed;

/// Which file: its name and first packet (a rolling writer may reuse a name
/// for new content; the first packet tells them apart).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub name: String,
    pub first_ns: u64,
    pub first_len: u32,
}

/// Where the folder source is: survives restarts inside the checkpoint.
#[derive(Serialize, Deserialize)]
pub struct FolderPosition {
    /// The file being read, and how many of its packets were handled.
    pub current: Option<(FileId, u64)>,
    /// Finished files that are still in the folder.
    pub done: Vec<FileId>,
    pub sequence: Sequence,
}

impl FolderPosition {
    pub fn new(cfg: &FolderConfig) -> Self {
        FolderPosition {
            current: None,
            done: Vec::new(),
            sequence: Sequence::new(cfg.overlap_window.ns(), cfg.max_silence.ns()),
        }
    }
}

pub struct FolderSource {
    cfg: FolderConfig,
    pub pos: FolderPosition,
    follower: Option<GrowingFile>,
    /// First packet of each file, by path and file key (`platform::file_key`:
    /// the inode on Unix), so files are opened once.
    ids: HashMap<PathBuf, (u64, u64, FileId)>,
    /// Since when the current file has been cut at its end with a newer file waiting.
    stuck_since: Option<Instant>,
    warned: HashMap<PathBuf, String>,
    /// Only packets this passes reach the engine (`source.folder.filter`).
    pub filter: Option<PacketFilter>,
}

impl FolderSource {
    pub fn new(cfg: FolderConfig, pos: FolderPosition) -> Self {
        let mut pos = pos;
        pos.sequence
            .set_limits(cfg.overlap_window.ns(), cfg.max_silence.ns());
        FolderSource {
            cfg,
            pos,
            follower: None,
            ids: HashMap::new(),
            stuck_since: None,
            warned: HashMap::new(),
            filter: None,
        }
    }

    /// Capture files in the folder with their identity, in capture order.
    fn scan(&mut self) -> Result<Vec<(FileId, PathBuf)>, SourceError> {
        use crate::platform::file_key;
        let dir = &self.cfg.path;
        let entries = std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))?;
        let mut found = Vec::new();
        let mut present = HashMap::new();
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            let ext_ok = self.cfg.extensions.iter().any(|x| {
                name.len() > x.len() + 1
                    && name[name.len() - x.len()..].eq_ignore_ascii_case(x)
                    && name.as_bytes()[name.len() - x.len() - 1] == b'.'
            });
            let Ok(meta) = e.metadata() else { continue };
            if !ext_ok || !meta.is_file() {
                continue;
            }
            present.insert(name.clone(), ());
            let cached = self
                .ids
                .get(&path)
                .filter(|(ino, len, _)| *ino == file_key(&meta) && *len <= meta.len());
            let id = match cached {
                Some((_, _, id)) => id.clone(),
                None => match identify(&path, &name) {
                    Ok(Some(id)) => {
                        self.ids
                            .insert(path.clone(), (file_key(&meta), meta.len(), id.clone()));
                        self.warned.remove(&path);
                        id
                    }
                    // No whole first packet yet.
                    Ok(None) => continue,
                    Err(e) => {
                        let msg = e.to_string();
                        if self.warned.get(&path) != Some(&msg) {
                            tracing::error!("{}: not read: {msg}", path.display());
                            self.warned.insert(path.clone(), msg);
                        }
                        continue;
                    }
                },
            };
            found.push((id, path));
        }
        self.ids.retain(|p, _| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| present.contains_key(n))
        });
        // Forget finished files once they are gone; the list stays as long
        // as the folder.
        self.pos.done.retain(|d| present.contains_key(&d.name));
        found.sort_by(|a, b| (a.0.first_ns, &a.0.name).cmp(&(b.0.first_ns, &b.0.name)));
        Ok(found)
    }

    fn next_file(&self, files: &[(FileId, PathBuf)]) -> Option<(FileId, PathBuf)> {
        let current = self.pos.current.as_ref().map(|c| &c.0);
        files
            .iter()
            .find(|(id, _)| Some(id) != current && !self.pos.done.contains(id))
            .cloned()
    }

    fn finish_current(&mut self, lost: Option<String>) {
        if let Some((id, _)) = self.pos.current.take() {
            if let Some(why) = &lost {
                tracing::warn!("{}: {why}", id.name);
            }
            self.pos.sequence.end_file(lost);
            self.pos.done.push(id);
        }
        self.follower = None;
        self.stuck_since = None;
    }

    /// One look at the folder: read what is new, move between files.
    fn look(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        let files = self.scan()?;
        if self.follower.is_none() {
            match self.pos.current.clone() {
                Some((id, handled)) => match files.iter().find(|(f, _)| *f == id) {
                    Some((_, path)) => {
                        tracing::info!("{}: resuming after packet {handled}", path.display());
                        self.follower = Some(GrowingFile::resume_at(path, handled));
                    }
                    None => {
                        self.finish_current(Some(format!(
                            "removed or replaced before it was read to the end ({handled} packets read)"
                        )));
                        return Ok(Step::Progress);
                    }
                },
                None => match self.next_file(&files) {
                    Some((id, path)) => {
                        tracing::info!("{}: reading", path.display());
                        self.pos.current = Some((id, 0));
                        self.follower = Some(GrowingFile::new(&path));
                    }
                    None => return Ok(Step::Idle),
                },
            }
        }
        let newer = self.next_file(&files).is_some();
        let stuck_long = self
            .stuck_since
            .is_some_and(|t| t.elapsed() >= self.cfg.settle.duration());
        let Some(follower) = self.follower.as_mut() else {
            return Ok(Step::Idle);
        };
        let seq = &mut self.pos.sequence;
        let mut feed = FilteredFeed {
            feed,
            filter: self.filter.as_mut(),
        };
        let res = follower.poll_with(newer && stuck_long, &mut |p| seq.packet(p, &mut feed));
        let poll = match res {
            Ok(p) => p,
            Err(SourceError::Io { ref source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.finish_current(Some("removed before it was read to the end".into()));
                return Ok(Step::Progress);
            }
            Err(e) => {
                // A corrupt record: everything before it was used; the rest
                // of this file cannot be trusted.
                tracing::error!("{e}");
                self.finish_current(Some(format!("unreadable after a corrupt record: {e}")));
                return Ok(Step::Progress);
            }
        };
        if let Some((_, handled)) = self.pos.current.as_mut() {
            *handled = follower.position();
        }
        if poll.packets > 0 {
            self.stuck_since = None;
            return Ok(Step::Progress);
        }
        if !newer {
            return Ok(Step::Idle);
        }
        // A newer file has begun, so the writer has moved on from this one.
        if !poll.partial && !poll.unfinished {
            self.finish_current(None);
            return Ok(Step::Progress);
        }
        if stuck_long {
            let what = if poll.unfinished {
                "a NetMon file without its frame table"
            } else {
                "ends in a cut record"
            };
            self.finish_current(Some(format!(
                "{what} {} s after a newer file began; taken as ended",
                self.cfg.settle
            )));
            return Ok(Step::Progress);
        }
        self.stuck_since.get_or_insert_with(Instant::now);
        Ok(Step::Idle)
    }
}

impl FollowedSource for FolderSource {
    type Position = FolderPosition;

    fn step(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError> {
        self.look(feed)
    }

    fn position(&self) -> &FolderPosition {
        &self.pos
    }

    fn sequence(&self) -> &Sequence {
        &self.pos.sequence
    }
}

/// The identity of a capture file: its first packet, once it is whole.
fn identify(path: &Path, name: &str) -> Result<Option<FileId>, SourceError> {
    let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
    let mut r = CaptureReader::open(file).map_err(SourceError::capture(path))?;
    let first = r.next_packet().map_err(SourceError::capture(path))?;
    Ok(first.map(|p| FileId {
        name: name.to_owned(),
        first_ns: p.ts_ns,
        first_len: p.orig_len,
    }))
}
