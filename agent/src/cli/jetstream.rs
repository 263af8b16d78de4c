//! The JetStream flags `collect` and `sink` share: where the NATS servers
//! are and what the stream must look like (both check it, and the first to
//! come creates it).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::collect::jetstream::{JetStreamOptions, NatsAuth};
use crate::error::Error;

#[derive(Args)]
pub(super) struct JetStreamArgs {
    /// The stream's name.
    #[arg(
        long = "jetstream-stream",
        default_value = "VMFLOW",
        value_name = "NAME"
    )]
    js_stream: String,
    /// Subject prefix: batches go to PREFIX.<agent>.<stream>.<epoch>.
    #[arg(
        long = "jetstream-prefix",
        default_value = "vmflow",
        value_name = "PREFIX"
    )]
    js_prefix: String,
    /// Replicas of the stream (1, 3 or 5 in a cluster).
    #[arg(long = "jetstream-replicas", default_value_t = 1, value_name = "N")]
    js_replicas: usize,
    /// Seconds a message is kept; 0: no age limit. Must exceed the longest
    /// an agent may go without a batch: where each agent stream stands is
    /// its last message.
    #[arg(
        long = "jetstream-max-age",
        default_value_t = 0.0,
        value_name = "SECONDS"
    )]
    js_max_age: f64,
    /// MiB the stream may hold, oldest messages removed first; 0: no limit.
    #[arg(long = "jetstream-max-mib", default_value_t = 0, value_name = "MIB")]
    js_max_mib: u64,
    /// CA that issued the NATS servers' certificates (turns TLS on).
    #[arg(long = "jetstream-ca", value_name = "FILE")]
    js_ca: Option<PathBuf>,
    /// This client's certificate for NATS (PEM), with --jetstream-key.
    #[arg(long = "jetstream-cert", value_name = "FILE", requires = "js_key")]
    js_cert: Option<PathBuf>,
    /// The key of --jetstream-cert (PEM).
    #[arg(long = "jetstream-key", value_name = "FILE", requires = "js_cert")]
    js_key: Option<PathBuf>,
    /// A NATS credentials file (user JWT and nkey seed, as `nsc` writes it);
    /// read again at every reconnect, so a renewed one needs no restart.
    #[arg(long = "jetstream-creds", value_name = "FILE", group = "js_auth")]
    js_creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`): the server knows the user by its
    /// public key.
    #[arg(long = "jetstream-nkey", value_name = "FILE", group = "js_auth")]
    js_nkey: Option<PathBuf>,
    /// A file holding `user:password`, or a token: kept off the command
    /// line (and out of `ps`), unlike `nats://user:password@host`.
    #[arg(long = "jetstream-auth-file", value_name = "FILE", group = "js_auth")]
    js_auth_file: Option<PathBuf>,
}

impl JetStreamArgs {
    /// The options for servers `urls` (`nats://HOST:PORT[,…]`).
    pub(super) fn options(&self, urls: &str) -> Result<JetStreamOptions, Error> {
        let servers: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(Error::Usage("--jetstream: no server address"));
        }
        if !(1..=5).contains(&self.js_replicas) {
            return Err(Error::Usage("--jetstream-replicas: must be in 1..=5"));
        }
        if !(self.js_max_age.is_finite() && self.js_max_age >= 0.0) {
            return Err(Error::Usage(
                "--jetstream-max-age: must be seconds, 0 or more",
            ));
        }
        let mut o = JetStreamOptions::new(servers);
        o.stream = self.js_stream.clone();
        o.prefix = self.js_prefix.clone();
        o.replicas = self.js_replicas;
        o.max_age = Duration::from_secs_f64(self.js_max_age.min(1e10));
        o.max_bytes = self.js_max_mib.saturating_mul(1 << 20);
        o.ca = self.js_ca.clone();
        o.cert = self.js_cert.clone().zip(self.js_key.clone());
        o.auth = match (&self.js_creds, &self.js_nkey, &self.js_auth_file) {
            (Some(f), _, _) => Some(NatsAuth::Creds(f.clone())),
            (_, Some(f), _) => Some(NatsAuth::Nkey(f.clone())),
            (_, _, Some(f)) => Some(NatsAuth::File(f.clone())),
            _ => None,
        };
        Ok(o)
    }
}
