//! `vmflow extension install|enable|disable|uninstall|update`: the Azure VM
//! extension handler's commands, run by the guest agent from the handler
//! directory (see `crate::extension`). What the guest agent passes comes
//! from the environment (`AZURE_GUEST_AGENT_EXTENSION_PATH`,
//! `ConfigSequenceNumber`, `AZURE_GUEST_AGENT_UPDATING_FROM_VERSION`).
//!
//! On Windows the same commands drive the Windows service and decrypt with
//! the certificate store (see `crate::extension`).
//!
//! `VMFLOW_EXTENSION_ROOT`, `VMFLOW_EXTENSION_SYSTEMCTL`, `…_DPKG`,
//! `…_OPENSSL`, `…_GROUP` and `…_BINARY` move the system paths, the programs
//! and the service group elsewhere: for tests without root or systemd, never
//! needed on a VM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use crate::error::Error;
use crate::extension::{
    self, CertStore, Ctx, Decrypt, Layout, OpensslCms, Scm, ServiceControl, ServiceManager, Systemd,
};

#[derive(Subcommand)]
pub(super) enum ExtensionCmd {
    /// Install the .deb shipped in the handler directory.
    Install,
    /// Apply the newest settings: agent config, drop-in, (re)start vmflow.service.
    Enable,
    /// Stop and disable vmflow.service.
    Disable,
    /// Remove the drop-in, the extension's config and the package (state stays).
    Uninstall,
    /// Mark the old version's uninstall that follows as part of an update.
    Update,
    /// Refresh the heartbeat file (run by vmflow-extension-heartbeat.timer).
    #[command(hide = true)]
    Heartbeat,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn cmd(c: ExtensionCmd) -> Result<ExitCode, Error> {
    let handler_dir = match var("AZURE_GUEST_AGENT_EXTENSION_PATH") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_dir().map_err(|e| Error::io(".", e))?,
    };
    let mut layout = Layout::system();
    if let Some(r) = var("VMFLOW_EXTENSION_ROOT") {
        layout.root = r.into();
    }
    if let Some(b) = var("VMFLOW_EXTENSION_BINARY") {
        layout.service_binary = b.into();
    }
    let (mut svc, decrypt): (Box<dyn ServiceControl>, Box<dyn Decrypt>) = match layout.host {
        ServiceManager::Systemd => {
            let mut svc = Systemd::system();
            if let Some(p) = var("VMFLOW_EXTENSION_SYSTEMCTL") {
                svc.systemctl = p.into();
            }
            if let Some(p) = var("VMFLOW_EXTENSION_DPKG") {
                svc.dpkg = p.into();
            }
            if let Some(g) = var("VMFLOW_EXTENSION_GROUP") {
                svc.group = g;
            }
            let decrypt = OpensslCms {
                program: var("VMFLOW_EXTENSION_OPENSSL").map_or("openssl".into(), PathBuf::from),
            };
            (Box::new(svc), Box::new(decrypt))
        }
        ServiceManager::Scm => {
            let svc = Scm {
                binary: layout.service_binary.clone(),
                config: layout.agent_config(),
                wait: std::time::Duration::from_secs(120),
            };
            (Box::new(svc), Box::new(CertStore))
        }
    };
    let fs = crate::disk::StdFs;
    let mut ctx = Ctx {
        fs: &fs,
        svc: svc.as_mut(),
        decrypt: decrypt.as_ref(),
        layout,
        handler_dir,
        env_seq: var("ConfigSequenceNumber"),
        updating_from: var("AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"),
        now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let message = match c {
        ExtensionCmd::Install => extension::install(&mut ctx),
        ExtensionCmd::Enable => extension::enable(&mut ctx),
        ExtensionCmd::Disable => extension::disable(&mut ctx),
        ExtensionCmd::Uninstall => extension::uninstall(&mut ctx),
        ExtensionCmd::Update => extension::update(&mut ctx),
        ExtensionCmd::Heartbeat => extension::heartbeat(&mut ctx),
    }?;
    println!("vmflow extension: {message}");
    Ok(ExitCode::SUCCESS)
}
