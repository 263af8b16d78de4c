//! The error a command ends with: each layer's own error, wrapped as it is
//! (their messages already name the file, key or peer), plus what the jobs
//! that wire the layers together can fail at. Only the jobs (`run`) and
//! the command line use it; the layers below return their own.

use std::io;
use std::path::PathBuf;

use crate::azure::AzureError;
use crate::capture::filter::FilterError;
use crate::capture::live::LiveError;
use crate::capture::SourceError;
use crate::certs::CertsError;
use crate::collect::jetstream::consume::SinkError;
use crate::collect::jetstream::JetStreamError;
use crate::collect::ServeError;
use crate::config::ConfigError;
use crate::export::blocks::BlockFileError;
use crate::export::ipfix_sender::IpfixError;
use crate::export::spool::SpoolError;
use crate::extension::ExtensionError;
use crate::follow::checkpoint::CheckpointError;
use crate::follow::FollowError;
use crate::pipeline::PipelineError;
use crate::query::QueryError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Certs(#[from] CertsError),
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Ipfix(#[from] IpfixError),
    #[error(transparent)]
    Blocks(#[from] BlockFileError),
    #[error(transparent)]
    Watchlist(#[from] crate::observe::WatchlistError),
    #[error(transparent)]
    Enrich(#[from] crate::observe::EnrichError),
    #[error("azure: {0}")]
    Azure(#[from] AzureError),
    #[error("live capture: {0}")]
    Live(#[from] LiveError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("extension: {0}")]
    Extension(#[from] ExtensionError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A command line or configuration that asks for something the job
    /// cannot do (the message names the option or section).
    #[error("config: {0}")]
    Usage(&'static str),
    /// The Windows service could not be installed, started, stopped or run.
    #[error("service: {0}")]
    Service(String),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("query: {0}")]
    Query(#[from] QueryError),
    #[error("collector: bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("collector: {0}")]
    Listener(#[source] io::Error),
    /// The process could not set up what a job runs on (runtime, signals).
    #[error("pipeline stage failed: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("pipeline stage failed: source {0} panicked")]
    Panicked(String),
    #[error("pipeline stage failed: no source ran")]
    NoSource,
    /// One of several sources failed (the others ran on).
    #[error("pipeline stage failed: source {name}: {source}")]
    Lane {
        name: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn setup(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Setup { what, source }
    }
}
