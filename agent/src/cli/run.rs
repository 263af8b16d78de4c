//! `vmflow run`: the agent, and the exit code that tells a lossy run from a
//! clean one.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::summary::print_run;
use crate::config::Config;
use crate::error::Error;

#[derive(Args)]
pub(super) struct RunArgs {
    /// TOML configuration: sources, [export], [[export.ipfix]], timeouts
    /// (README "Configuration"). SIGHUP reloads it.
    #[arg(long)]
    config: PathBuf,
}

impl RunArgs {
    pub(super) fn config_path(&self) -> &std::path::Path {
        &self.config
    }
}

/// `vmflow run` exits 3 when it ran to the end but records were lost
/// (spool overflow, a disk that refused them, damage found in the spool):
/// a supervisor can tell a clean run from a lossy one.
pub const EXIT_LOSSY: u8 = 3;

pub(super) fn cmd(a: RunArgs) -> Result<ExitCode, Error> {
    run_config(&a.config).map(ExitCode::from)
}

/// `vmflow run --config path`, its exit code (also the Windows service's job).
pub(super) fn run_config(path: &std::path::Path) -> Result<u8, Error> {
    let cfg = Config::load(path)?;
    let r = crate::run::run_agent(&cfg, Some(path.to_path_buf()))?;
    print_run("run", &r);
    for (name, s) in &r.streams {
        print_run(&format!("run[{name}]"), s);
    }
    if let Some(e) = r.error {
        return Err(e);
    }
    let lost = r.spool.lost_records();
    if lost > 0 {
        let _ = writeln!(
            super::logging::summary_out(),
            "run: {lost} records were lost (lost_records); exit code {EXIT_LOSSY}"
        );
        return Ok(EXIT_LOSSY);
    }
    Ok(0)
}
