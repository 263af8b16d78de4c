//! The engine flags `replay`, `bench` and `capture` share, and the
//! configuration they make.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::error::Error;

#[derive(Args)]
pub(super) struct EngineArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub(super) config: Option<PathBuf>,
    /// Flow shard threads; 0 = cores - 1, as `threads = 0` in the file
    /// (default: the config's, else 0).
    #[arg(long)]
    pub(super) threads: Option<usize>,
    /// Local network (CIDR); repeat for several. Replaces the configured list.
    #[arg(long = "local-net", value_name = "CIDR")]
    pub(super) local_net: Vec<String>,
    /// Only packets matching this capture filter, in tcpdump's language
    /// (`tcp port 443`, `not port 53`, `net 10.0.0.0/8`), compiled by
    /// libpcap (libpcap0.8 must be installed). Live capture runs it in the
    /// kernel; files run it on each packet before decoding.
    #[arg(long, value_name = "EXPR")]
    pub(super) filter: Option<String>,
}

pub(super) fn engine_config(a: &EngineArgs) -> Result<Config, Error> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(t) = a.threads {
        cfg.pipeline.threads = t;
    }
    if !a.local_net.is_empty() {
        cfg.local_nets = Some(a.local_net.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}
