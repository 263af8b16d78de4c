//! `vmflow azure captures …`: the Network Watcher packet-capture lifecycle.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::error::Error;
use crate::run::stop_flag;

#[derive(Subcommand)]
pub(super) enum AzureCmd {
    /// Network Watcher packet captures: list, status, stop, delete,
    /// ensure-watcher, run.
    #[command(subcommand)]
    Captures(CapturesCmd),
}

#[derive(Subcommand)]
pub(super) enum CapturesCmd {
    /// List the watcher's packet captures and their status.
    List(AzureArgs),
    /// One capture's status (queryStatus).
    Status {
        /// The packet capture's name (as `list` shows it).
        name: String,
        #[command(flatten)]
        a: AzureArgs,
    },
    /// Stop a capture (its files stay).
    Stop {
        /// The packet capture's name (as `list` shows it).
        name: String,
        #[command(flatten)]
        a: AzureArgs,
    },
    /// Delete a capture resource (its files stay).
    Delete {
        /// The packet capture's name (as `list` shows it).
        name: String,
        #[command(flatten)]
        a: AzureArgs,
    },
    /// Create the regional Network Watcher if it does not exist.
    EnsureWatcher(AzureArgs),
    /// Keep a capture running on every target, renewing before each stops,
    /// until SIGTERM/SIGINT.
    Run(AzureArgs),
}

#[derive(Args)]
pub(super) struct AzureArgs {
    /// Configuration with [azure] and [azure.captures].
    #[arg(long)]
    config: PathBuf,
}

pub(super) fn cmd(c: AzureCmd) -> Result<ExitCode, Error> {
    match c {
        AzureCmd::Captures(c) => captures(c),
    }
}

fn captures(c: CapturesCmd) -> Result<ExitCode, Error> {
    let path = match &c {
        CapturesCmd::List(a) | CapturesCmd::EnsureWatcher(a) | CapturesCmd::Run(a) => &a.config,
        CapturesCmd::Status { a, .. }
        | CapturesCmd::Stop { a, .. }
        | CapturesCmd::Delete { a, .. } => &a.config,
    };
    let cfg = Config::load(path)?;
    let cc = cfg
        .azure
        .captures
        .clone()
        .ok_or(Error::Usage("no [azure.captures] section"))?;
    let mut m = crate::azure::lifecycle::manager(&cc, &cfg.azure)?;
    match c {
        CapturesCmd::List(_) => {
            for cap in m.list()? {
                let st = m.status(&cap.name)?;
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    cap.name,
                    cap.target,
                    cap.provisioning,
                    st.status,
                    st.stop_reason.unwrap_or_default()
                );
            }
        }
        CapturesCmd::Status { name, .. } => {
            let st = m.status(&name)?;
            println!(
                "{name}\tstatus={}\tstarted={}\tstop_reason={}\terrors={}",
                st.status,
                st.start.unwrap_or_default(),
                st.stop_reason.unwrap_or_default(),
                st.errors.join(",")
            );
        }
        CapturesCmd::Stop { name, .. } => m.stop(&name)?,
        CapturesCmd::Delete { name, .. } => m.delete(&name)?,
        CapturesCmd::EnsureWatcher(_) => m.ensure_watcher()?,
        CapturesCmd::Run(_) => {
            let stop = stop_flag()?;
            crate::azure::lifecycle::run(m, cc.poll_interval.duration(), &stop);
        }
    }
    Ok(ExitCode::SUCCESS)
}
