//! `vmflow certs`: certificates for trying the shipping path out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::error::Error;

#[derive(Subcommand)]
pub(super) enum CertsCmd {
    /// Make a CA, a collector certificate and agent certificates in DIR.
    Init {
        /// Directory to write ca.pem, collector.pem, agent-N.pem and their
        /// keys to (created 0700 if missing).
        dir: PathBuf,
        /// Replace a CA, certificates and keys already in DIR (without it,
        /// an existing one is an error: certificates the old CA signed would
        /// stop working).
        #[arg(long)]
        force: bool,
        /// Agent names (certificate CN); repeat for several. Default: agent-1.
        #[arg(long = "agent")]
        agents: Vec<String>,
    },
}

pub(super) fn cmd(c: CertsCmd) -> Result<ExitCode, Error> {
    match c {
        CertsCmd::Init { dir, force, agents } => {
            let mut opts = crate::certs::CertOptions {
                force,
                ..Default::default()
            };
            if !agents.is_empty() {
                opts.agents = agents;
            }
            crate::certs::init(&dir, &opts)
                .map(|_| {
                    eprintln!(
                        "certs: wrote ca.pem, collector.pem and {} agent certificate(s) to {}",
                        opts.agents.len(),
                        dir.display()
                    );
                    ExitCode::SUCCESS
                })
                .map_err(Error::from)
        }
    }
}
