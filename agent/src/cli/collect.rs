//! `vmflow collect`: the collector's flags, bounded before they reach the
//! collector job (`run::run_collector`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::collect::store::StoreFormat;
use crate::error::Error;

#[derive(Args)]
pub(super) struct CollectCmd {
    /// Address to listen on, host:port (a name such as localhost:7000 is
    /// resolved; port 0 picks one; the bound address is printed).
    #[arg(long)]
    listen: String,
    /// The collector's certificate chain (PEM), e.g. collector.pem from
    /// `vmflow certs init`.
    #[arg(long)]
    cert: PathBuf,
    /// The certificate's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Only agents with a certificate from this CA are accepted.
    #[arg(long = "client-ca")]
    client_ca: PathBuf,
    /// Output directory: one subdirectory per agent, hourly NDJSON files.
    #[arg(
        long,
        required_unless_present = "jetstream",
        conflicts_with = "jetstream"
    )]
    out: Option<PathBuf>,
    /// How the hour files under --out hold records: `ndjson` (a JSON
    /// object a line, ~420 bytes a record) or `blocks` (the spool's
    /// compressed blocks, ~17 bytes a record, read by `vmflow cat` and
    /// `vmflow query`).
    #[arg(long, value_enum, default_value_t = Store::Ndjson, conflicts_with = "jetstream")]
    store: Store,
    /// Instead of --out: publish each batch to a JetStream stream on these
    /// NATS servers (nats://HOST:PORT[,…]); the collector keeps no state,
    /// so several can serve the same agents. `vmflow sink` writes the files.
    #[arg(long, value_name = "URLS")]
    jetstream: Option<String>,
    #[command(flatten)]
    jetstream_args: super::jetstream::JetStreamArgs,
    /// Connections at once (default: the descriptor limit less 64); more
    /// wait in the listen backlog.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections still in their TLS handshake or hello; more are closed
    /// at once, so unauthenticated peers cannot crowd out agents.
    #[arg(long, default_value_t = 64)]
    max_handshakes: usize,
    /// Seconds an unauthenticated connection has for TLS and hello.
    #[arg(long, default_value_t = 5.0)]
    handshake_timeout: f64,
    /// MiB of incoming frames buffered across all connections.
    #[arg(long, default_value_t = 64)]
    max_buffer_mib: usize,
    /// Seconds a connection may go without a complete frame (agents send a
    /// heartbeat every 10 s).
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    #[command(flatten)]
    observe: super::observe_args::ObserveArgs,
}

/// `--store` of `collect` and `sink`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum Store {
    Ndjson,
    Blocks,
}

impl From<Store> for StoreFormat {
    fn from(s: Store) -> StoreFormat {
        match s {
            Store::Ndjson => StoreFormat::Ndjson,
            Store::Blocks => StoreFormat::Blocks,
        }
    }
}

pub(super) fn cmd(a: CollectCmd) -> Result<ExitCode, Error> {
    let listen = crate::config::listen_addr("--listen", &a.listen)?;
    if let Some(out) = a.out.as_ref().filter(|o| o.exists() && !o.is_dir()) {
        return Err(Error::io(
            out,
            std::io::Error::other("--out is not a directory"),
        ));
    }
    let jetstream = match &a.jetstream {
        Some(urls) => Some(a.jetstream_args.options(urls)?),
        None => None,
    };
    let observer = a.observe.start(&crate::config::Config::default())?;
    crate::run::run_collector(crate::run::CollectArgs {
        listen,
        cert: a.cert,
        key: a.key,
        client_ca: a.client_ca,
        out: a.out,
        store: a.store.into(),
        jetstream,
        max_connections: a.max_connections,
        max_handshakes: a.max_handshakes,
        handshake_timeout: Duration::from_secs_f64(a.handshake_timeout.clamp(0.1, 3600.0)),
        frame_budget: a.max_buffer_mib.clamp(17, 1 << 16) << 20,
        idle_timeout: Duration::from_secs_f64(a.idle_timeout.clamp(1.0, 86_400.0)),
        board: Some(observer.board.clone()),
    })
    .map(|_| ExitCode::SUCCESS)
}
