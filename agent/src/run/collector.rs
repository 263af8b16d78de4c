//! `vmflow collect` as a job: the listener, the runtime, the signals that
//! stop it; the collector itself is `collect::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::runtime;
use super::signals::wait_for_signal;
use crate::collect::jetstream::{self, JetStreamOptions};
use crate::collect::sink::Sink;
use crate::collect::{self, CollectorOptions};
use crate::error::Error;
use crate::metrics::{Board, SourceState};

pub struct CollectArgs {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// The file store's directory; `None` with `jetstream`.
    pub out: Option<PathBuf>,
    /// How the file store writes records.
    pub store: crate::collect::store::StoreFormat,
    pub jetstream: Option<JetStreamOptions>,
    pub max_connections: Option<usize>,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    pub frame_budget: usize,
    pub idle_timeout: Duration,
    /// Where the collector shows what it does (metrics, stats, /healthz).
    pub board: Option<Arc<Board>>,
}

/// Runs the collector until SIGTERM / SIGINT. Prints the bound address on
/// stderr first (so `--listen 127.0.0.1:0` can be used).
pub fn run_collector(a: CollectArgs) -> Result<(), Error> {
    let tls = crate::tls::server_config(&a.cert, &a.key, &a.client_ca)?;
    let fs = crate::disk::real();
    if let Some(out) = &a.out {
        fs.create_dir_all(out)
            .and_then(|_| fs.restrict(out))
            .map_err(|e| Error::io(out, e))?;
    }
    let rt = runtime()?;
    rt.block_on(async move {
        // The stream is checked (or created) before agents are taken.
        let sink: Option<Arc<dyn Sink>> = match a.jetstream {
            Some(o) => {
                let shown = o.shown();
                let c = jetstream::connect(o).await?;
                tracing::info!(
                    "publishing to JetStream stream {} on {shown}",
                    c.opts.stream
                );
                Some(Arc::new(jetstream::JetStreamSink::new(c)))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: a.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Listener)?;
        eprintln!("collect: listening on {addr}");
        let mut opts = CollectorOptions::new(tls, a.out.clone().unwrap_or_default());
        opts.sink = sink;
        opts.store = a.store;
        if let Some(b) = &a.board {
            b.collector(opts.live.clone());
            // With JetStream the collector writes no files of its own.
            if let Some(out) = &a.out {
                b.health.writable("output", out);
            }
            b.health.source(SourceState::Open);
        }
        if let Some(n) = a.max_connections {
            opts.max_connections = n;
        }
        opts.max_handshakes = a.max_handshakes;
        opts.handshake_timeout = a.handshake_timeout;
        opts.frame_budget = a.frame_budget;
        opts.idle_timeout = a.idle_timeout;
        tokio::select! {
            r = collect::serve(listener, opts) => r.map_err(Error::from),
            _ = wait_for_signal() => Ok(()),
        }
    })
}

/// Starts a collector on a background thread (for `vmflow demo`); returns the
/// address it listens on. It runs until the process exits.
pub fn spawn_collector(
    listen: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    out: PathBuf,
) -> Result<SocketAddr, Error> {
    let rt = runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|source| Error::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Listener)?;
    std::thread::spawn(move || {
        if let Err(e) = rt.block_on(collect::serve(listener, CollectorOptions::new(tls, out))) {
            tracing::error!("collector: {e}");
        }
    });
    Ok(addr)
}
