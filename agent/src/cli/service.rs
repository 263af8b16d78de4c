//! `vmflow service install|uninstall|start|stop|run`: the Windows service.
//! `install` registers `vmflow.exe service run --config <file>` (default
//! `%ProgramData%\vmflow\vmflow.toml`) to start at boot; `run` is what the
//! Service Control Manager starts: the `run` job, logging to
//! `%ProgramData%\vmflow\vmflow.log`, stopped by the service's Stop as
//! SIGTERM stops it elsewhere. Elsewhere every subcommand refuses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::error::Error;
use crate::platform::service;

#[derive(Subcommand)]
pub(super) enum ServiceCmd {
    /// Register the service (auto start, restart on failure) running this exe.
    Install(ConfigArg),
    /// Stop and delete the service.
    Uninstall,
    /// Start the service and wait until it runs.
    Start,
    /// Stop the service (as SIGTERM stops `run`) and wait until it has.
    Stop,
    /// The service's entry point, started by the Service Control Manager.
    Run(ConfigArg),
}

#[derive(Args)]
pub(super) struct ConfigArg {
    /// Default: %ProgramData%\vmflow\vmflow.toml.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    pub(super) fn path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| service::data_dir().join("vmflow.toml"))
    }
}

/// Where the service logs.
pub(super) fn log_file() -> PathBuf {
    service::data_dir().join("vmflow.log")
}

/// Whether this command line is the service's entry point (it logs to a
/// file: a service has no console).
pub(super) fn is_entry_point(c: &ServiceCmd) -> bool {
    matches!(c, ServiceCmd::Run(_))
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Service(format!("{what}: {e}"))
}

const WAIT: Duration = Duration::from_secs(180);

static CONFIG: OnceLock<PathBuf> = OnceLock::new();

/// The service's job: `vmflow run --config <file>`, its exit code.
fn job() -> u32 {
    let Some(path) = CONFIG.get() else { return 1 };
    match super::run::run_config(path) {
        Ok(code) => u32::from(code),
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

pub(super) fn cmd(c: ServiceCmd) -> Result<ExitCode, Error> {
    match c {
        ServiceCmd::Install(a) => {
            let exe = std::env::current_exe().map_err(failed("this exe's path"))?;
            let config = a.path();
            let args: Vec<OsString> = vec![
                "service".into(),
                "run".into(),
                "--config".into(),
                config.clone().into_os_string(),
            ];
            service::install(&exe, args).map_err(failed("install"))?;
            eprintln!(
                "service: installed {} ({} service run --config {}); logs to {}",
                service::NAME,
                exe.display(),
                config.display(),
                log_file().display()
            );
        }
        ServiceCmd::Uninstall => {
            if service::uninstall(WAIT).map_err(failed("uninstall"))? {
                eprintln!("service: {} removed", service::NAME);
            } else {
                eprintln!(
                    "service: {} marked for deletion (it goes once every handle to it is closed)",
                    service::NAME
                );
            }
        }
        ServiceCmd::Start => {
            service::start(WAIT).map_err(failed("start"))?;
            eprintln!("service: {} running", service::NAME);
        }
        ServiceCmd::Stop => {
            service::stop(WAIT).map_err(failed("stop"))?;
            eprintln!("service: {} stopped", service::NAME);
        }
        ServiceCmd::Run(a) => {
            let _ = CONFIG.set(a.path());
            tracing::info!("service: starting with {}", a.path().display());
            service::dispatch(job).map_err(failed(
                "not started by the Service Control Manager (use `vmflow run` from a console)",
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
