//! `vmflow check --config FILE`: what `run` would do, and every problem
//! that would stop it, without running.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::Error;

#[derive(Args)]
pub(super) struct CheckArgs {
    /// The configuration `vmflow run --config` would use.
    #[arg(long)]
    config: PathBuf,
}

pub(super) fn cmd(a: CheckArgs) -> Result<ExitCode, Error> {
    let r = crate::check::check(&a.config);
    for p in &r.plan {
        println!("{p}");
    }
    for w in &r.warnings {
        eprintln!("check: warning: {w}");
    }
    for p in &r.problems {
        eprintln!("check: problem: {p}");
    }
    if r.problems.is_empty() {
        println!("check: {}: ok", a.config.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "check: {}: {} problem(s)",
            a.config.display(),
            r.problems.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
