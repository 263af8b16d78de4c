//! Seeing what a running job does: a Prometheus endpoint (`/metrics`), a
//! readiness check (`/healthz`) on the same listener, and a one-line stats
//! log every so often. The rooms below publish plain atomics as they go
//! (the engine's counts a few times a second, spool and shipper per batch,
//! the collector per batch and connection); this room only reads them when
//! asked. prometheus-client (the Prometheus authors' crate) encodes them.

mod board;
mod encode;
mod health;
mod http;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use board::{Board, LaneView};
pub use health::{Health, SourceState};

/// The endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: cannot start its thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What a job shows while it runs: the board the rooms publish on, the
/// endpoint serving it (if asked for) and the stats line (if not off).
/// Dropping it stops both.
pub struct Observer {
    pub board: Arc<Board>,
    server: Option<http::Server>,
    stats: Option<stats::StatsLine>,
}

impl Observer {
    /// Serves `/metrics` and `/healthz` on `listen` (the bound address is
    /// logged: port 0 picks one) and logs a stats line every `stats_every`.
    pub fn start(
        listen: Option<SocketAddr>,
        stats_every: Option<Duration>,
    ) -> Result<Observer, MetricsError> {
        let board = Arc::new(Board::default());
        let server = listen
            .map(|a| http::Server::start(a, board.clone()))
            .transpose()?;
        let stats = stats_every
            .map(|every| stats::StatsLine::start(every, board.clone()))
            .transpose()?;
        Ok(Observer {
            board,
            server,
            stats,
        })
    }

    /// Where the endpoint listens, if it does.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stats.take();
        self.server.take();
    }
}
