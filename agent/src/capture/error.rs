//! Why reading captures stopped: a file, the ring, or the engine they feed.
//! Each names the file it concerns.

use std::io;
use std::path::{Path, PathBuf};

use super::filter::FilterError;
use super::live::LiveError;
use super::CaptureError;
use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: {source}", path.display())]
    Capture {
        path: PathBuf,
        #[source]
        source: CaptureError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A capture filter that cannot be compiled (for this file's link type).
    #[error("{}: {source}", path.display())]
    Filter {
        path: PathBuf,
        #[source]
        source: FilterError,
    },
    #[error("live capture: {0}")]
    Live(#[from] LiveError),
}

impl SourceError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn filter(path: &Path, source: FilterError) -> Self {
        SourceError::Filter {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn capture(path: &Path) -> impl Fn(CaptureError) -> SourceError + '_ {
        move |source| SourceError::Capture {
            path: path.to_path_buf(),
            source,
        }
    }
}
