//! Why a source stopped: its files, the engine it feeds, its checkpoint, the
//! service it reads from. Each names the file (or service) it concerns.

use std::io;
use std::path::{Path, PathBuf};

use super::live::LiveError;
use super::CaptureError;
use crate::azure::AzureError;
use crate::checkpoint::CheckpointError;
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
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("azure: {0}")]
    Azure(#[from] AzureError),
    #[error("live capture: {0}")]
    Live(#[from] LiveError),
    /// A state the source's own bookkeeping should make impossible.
    #[error("pipeline stage failed: {0}")]
    Invariant(&'static str),
}

impl SourceError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn capture(path: &Path) -> impl FnOnce(CaptureError) -> SourceError + '_ {
        move |source| SourceError::Capture {
            path: path.to_path_buf(),
            source,
        }
    }
}
