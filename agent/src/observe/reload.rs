//! The watchlists and databases of a long-running capture, read again when
//! one of their files changes or a reload is asked for (SIGHUP). A file that
//! no longer reads is a warning and the old lists stay: a capture that runs
//! for weeks must not stop because a feed was half written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{load_watchlists, Enricher, Watchlist};
use crate::config::WatchlistConfig;

/// What a file looked like when last read: changed means reread.
type Stamp = Option<(SystemTime, u64)>;

pub struct Reload {
    lists: Vec<WatchlistConfig>,
    mmdb: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    asked: Arc<AtomicBool>,
    every: Duration,
    checked: Instant,
}

/// New lists and databases, or why they could not be read.
pub type Reloaded = Result<(Vec<Watchlist>, Option<Enricher>), String>;

impl Reload {
    /// Files are looked at no more often than `every`; the flag, once set,
    /// makes the next look read them whether they changed or not.
    pub fn new(
        lists: Vec<WatchlistConfig>,
        mmdb: Vec<PathBuf>,
        every: Duration,
    ) -> (Reload, Arc<AtomicBool>) {
        let asked = Arc::new(AtomicBool::new(false));
        let mut r = Reload {
            lists,
            mmdb,
            stamps: Vec::new(),
            asked: asked.clone(),
            every,
            checked: Instant::now(),
        };
        r.stamps = r.current();
        (r, asked)
    }

    fn current(&self) -> Vec<Stamp> {
        self.lists
            .iter()
            .map(|w| &w.file)
            .chain(&self.mmdb)
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// `Some` when due and something changed (or a reload was asked for).
    pub fn poll(&mut self) -> Option<Reloaded> {
        let asked = self.asked.swap(false, Ordering::Relaxed);
        if !asked && self.checked.elapsed() < self.every {
            return None;
        }
        self.checked = Instant::now();
        let now = self.current();
        if !asked && now == self.stamps {
            return None;
        }
        // Remembered even when reading fails: the same broken file is
        // reported once, not at every look.
        self.stamps = now;
        Some(self.read())
    }

    fn read(&self) -> Reloaded {
        let lists = load_watchlists(&self.lists).map_err(|e| e.to_string())?;
        let enricher = (!self.mmdb.is_empty())
            .then(|| Enricher::open(&self.mmdb))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok((lists, enricher))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(dir: &std::path::Path, text: &str) -> Vec<WatchlistConfig> {
        let file = dir.join("w.txt");
        std::fs::write(&file, text).unwrap();
        vec![WatchlistConfig {
            name: "w".into(),
            file,
        }]
    }

    fn listed(r: Option<Reloaded>, ip: &str) -> bool {
        let (lists, _) = r.expect("a reload").expect("readable");
        lists[0].contains(ip.parse().unwrap())
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = list(dir.path(), "192.0.2.1\n");
        let (mut r, asked) = Reload::new(cfg, Vec::new(), Duration::ZERO);
        assert!(r.poll().is_none(), "unchanged: nothing to do");
        // A different length, so the stamp differs even within one mtime tick.
        list(dir.path(), "198.51.100.0/24\n");
        assert!(listed(r.poll(), "198.51.100.7"));
        assert!(r.poll().is_none());
        list(dir.path(), "198.51.100.0/24\nnot an address\n");
        let e = r.poll().expect("a reload").err().expect("an error");
        assert!(e.contains("w.txt:2"), "{e}");
        assert!(r.poll().is_none(), "the same broken file is reported once");
        // Asked for (SIGHUP): read even though nothing changed.
        list(dir.path(), "203.0.113.9\n");
        r.poll();
        asked.store(true, Ordering::Relaxed);
        assert!(listed(r.poll(), "203.0.113.9"));
    }
}
