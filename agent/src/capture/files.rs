//! Several capture files read as one continuous packet stream, in order.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::SourceError;
use super::{CaptureReader, RawPacket};
use crate::config::Config;
use crate::pipeline::{self, FileWarning, Report};
use crate::sink::RecordSink;

/// Replays capture files through the engine into `sink`.
pub fn replay<S: RecordSink>(paths: Vec<PathBuf>, cfg: &Config, sink: S) -> Report<SourceError> {
    let mut files = CaptureFiles::new(paths);
    let mut report = pipeline::run(cfg, sink, |feed| files.for_each(|p| feed.packet(p)));
    report.summary.warnings = files.warnings;
    report
}

/// Every file opens and starts like a capture: checked before a run starts,
/// so a wrong path or a file that is no capture is an error on its own
/// rather than after an empty run's summary.
pub fn check_readable(paths: &[PathBuf]) -> Result<(), SourceError> {
    for p in paths {
        if p.is_dir() {
            return Err(SourceError::io(
                p,
                std::io::Error::other("is a directory, not a capture file"),
            ));
        }
        let file = File::open(p).map_err(|e| SourceError::io(p, e))?;
        let cap = SourceError::capture(p);
        if let CaptureReader::Empty(t) = CaptureReader::open(file).map_err(&cap)? {
            return Err(cap(super::CaptureError::TooShort(t.what)));
        }
    }
    Ok(())
}

pub struct CaptureFiles {
    paths: Vec<PathBuf>,
    pub warnings: Vec<FileWarning>,
}

impl CaptureFiles {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        CaptureFiles {
            paths,
            warnings: Vec::new(),
        }
    }

    /// Feeds every packet of every file, in order, to `f`. Stops at the first
    /// corrupt file with an error naming it; packets before the corruption have
    /// already been delivered.
    pub fn for_each(&mut self, mut f: impl FnMut(RawPacket<'_>)) -> Result<(), SourceError> {
        for path in self.paths.clone() {
            self.read_one(&path, &mut f)?;
        }
        Ok(())
    }

    fn read_one(
        &mut self,
        path: &Path,
        f: &mut impl FnMut(RawPacket<'_>),
    ) -> Result<(), SourceError> {
        let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
        let cap = SourceError::capture(path);
        let mut reader = CaptureReader::open(file).map_err(&cap)?;
        if let CaptureReader::Empty(t) = &reader {
            return Err(cap(super::CaptureError::TooShort(t.what.clone())));
        }
        tracing::debug!("{}: {} capture", path.display(), reader.format());
        while let Some(p) = reader.next_packet().map_err(&cap)? {
            f(p);
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
}
