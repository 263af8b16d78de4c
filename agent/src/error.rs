//! The agent's error type.

use std::io;
use std::path::PathBuf;

use crate::source::CaptureError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("config: {0}")]
    Config(String),
    #[error("writing records: {0}")]
    Output(#[source] io::Error),
    #[error("pipeline stage failed: {0}")]
    Pipeline(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("spool: {0}")]
    Spool(#[from] crate::export::spool::SpoolError),
    #[error("collector: {0}")]
    Collector(String),
    #[error("azure: {0}")]
    Azure(#[from] crate::azure::AzureError),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("live capture: {0}")]
    Live(#[from] crate::source::live::LiveError),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
