//! `--metrics-listen` and `--stats-interval`, shared by `capture` and
//! `collect` (`run` takes `[metrics]` and `[log]` from its file).

use std::time::Duration;

use clap::Args;

use crate::error::Error;
use crate::metrics::Observer;

#[derive(Args)]
pub(super) struct ObserveArgs {
    /// Serve Prometheus metrics (/metrics) and readiness (/healthz) on
    /// this host:port (port 0 picks one; the address is logged). Default:
    /// `[metrics] listen` of --config if any, else off.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Seconds between one-line stats in the log; 0: none. Default:
    /// `[log] stats_interval` of --config if any, else 60.
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<f64>,
}

impl ObserveArgs {
    /// Starts what was asked for; `cfg` gives the defaults.
    pub(super) fn start(&self, cfg: &crate::config::Config) -> Result<Observer, Error> {
        let listen = match &self.metrics_listen {
            Some(l) => Some(crate::config::listen_addr("--metrics-listen", l)?),
            None => cfg.metrics.addr()?,
        };
        let every = match self.stats_interval {
            Some(s) if !(s.is_finite() && (s == 0.0 || (0.1..=86_400.0).contains(&s))) => {
                return Err(crate::config::ConfigError::Invalid(format!(
                    "--stats-interval = {s}: must be 0 (off) or 0.1..=86400 seconds"
                ))
                .into())
            }
            Some(s) => (s > 0.0).then(|| Duration::from_secs_f64(s)),
            None => cfg.log.stats_every(),
        };
        Ok(Observer::start(listen, every)?)
    }
}
