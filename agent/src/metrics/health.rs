//! Readiness: the source is open, every directory the job writes to takes
//! a write, and each lane's collector is reachable. `/healthz` answers 200
//! `ok` when nothing is wrong, else 503 with one reason a line.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::board::Board;

/// Where the job's source is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SourceState {
    /// Not open yet (rings, files or the collector's listener).
    #[default]
    NotOpen,
    Open,
    /// Read to its end (capture files): nothing more is coming, which is
    /// not a fault.
    Ended,
    /// Stopped by an error.
    Failed(String),
}

#[derive(Default)]
pub struct Health {
    source: Mutex<SourceState>,
    /// Directories that must take writes: what they are ("spool",
    /// "output") and where.
    dirs: Mutex<Vec<(&'static str, PathBuf)>>,
}

impl Health {
    pub fn source(&self, s: SourceState) {
        if let Ok(mut g) = self.source.lock() {
            *g = s;
        }
    }

    pub fn writable(&self, what: &'static str, dir: &Path) {
        if let Ok(mut g) = self.dirs.lock() {
            g.push((what, dir.to_path_buf()));
        }
    }

    /// Why the job is not ready (empty: it is). Probes each directory with
    /// a small file, created and removed: a read-only or full filesystem
    /// fails that even for root, where permission bits would not.
    pub fn problems(&self, board: &Board) -> Vec<String> {
        let mut out = Vec::new();
        match self.source.lock().map(|g| g.clone()) {
            Ok(SourceState::Open) | Ok(SourceState::Ended) => {}
            Ok(SourceState::NotOpen) => out.push("source: not open yet".to_string()),
            Ok(SourceState::Failed(why)) => out.push(format!("source: failed: {why}")),
            Err(_) => out.push("source: state unknown (lock poisoned)".to_string()),
        }
        let dirs = self.dirs.lock().map(|g| g.clone()).unwrap_or_default();
        for (what, dir) in dirs {
            if let Err(e) = probe(&dir) {
                out.push(format!("{what}: {} is not writable: {e}", dir.display()));
            }
        }
        for l in board.lanes() {
            let s = l.ship.now();
            if !s.connected && s.failing > 0 {
                let name = if l.stream.is_empty() {
                    String::new()
                } else {
                    format!(" (stream {})", l.stream)
                };
                out.push(format!(
                    "collector not connected{name}: {} failed attempts; last: {}",
                    s.failing,
                    s.last_error.as_deref().unwrap_or("unknown")
                ));
            }
        }
        out
    }
}

fn probe(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let p = dir.join(format!(".healthz-{}", std::process::id()));
    let r = std::fs::File::create(&p).and_then(|mut f| f.write_all(b"ok"));
    let _ = std::fs::remove_file(&p);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_source_and_the_directory() {
        let board = Board::default();
        let dir = tempfile::tempdir().unwrap();
        board.health.writable("spool", dir.path());
        assert_eq!(board.health.problems(&board), vec!["source: not open yet"]);
        board.health.source(SourceState::Open);
        assert!(board.health.problems(&board).is_empty());
        board
            .health
            .writable("output", &dir.path().join("missing/dir"));
        let p = board.health.problems(&board);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("output: ") && p[0].contains("missing/dir"),
            "{p:?}"
        );
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
