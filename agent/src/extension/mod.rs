//! The Azure VM extension handler: what `vmflow extension
//! install|enable|disable|uninstall|update` does when the guest agent
//! (WALinuxAgent, or the Windows guest agent) runs it from the handler
//! directory.
//!
//! The handler does not run the agent. `install` installs the .deb shipped
//! in the handler zip; `enable` turns the settings the guest agent wrote into
//! the agent's configuration under `/etc/vmflow/extension/`, points
//! `vmflow.service` at it with a systemd drop-in (the package's conffile is
//! never edited) and (re)starts the unit, then returns: the long-running work
//! stays in the unit, outside the handler's cgroup. `disable` stops the unit,
//! `uninstall` removes the drop-in, the configuration and the package (state
//! in `/var/lib/vmflow` stays), `update` marks the uninstall that follows as
//! part of an update so the package, configuration and spool stay.
//!
//! On Windows ([`Layout::host`] is the Service Control Manager) the same
//! commands, the same files from the guest agent, the same status files:
//! `install` copies the handler's `bin\vmflow.exe` to
//! `%ProgramFiles%\vmflow\`, `enable` writes the configuration and key
//! files to `%ProgramData%\vmflow\extension\` (an ACL of SYSTEM and
//! Administrators only), registers the service `vmflow` with
//! `service run --config` that file and (re)starts it; `disable` stops it
//! (start on demand only), `uninstall` deletes the service, the
//! configuration and the exe (`%ProgramData%\vmflow\spool` stays).
//! Protected settings are decrypted with the certificate in
//! `LocalMachine\My` ([`CertStore`], behind the platform seam).
//!
//! One concern per file: [`environment`] (HandlerEnvironment.json, the
//! manifest, which settings file), [`settings`] (public and protected
//! settings, decryption), [`status`] (status and heartbeat files),
//! [`machine`] (sans-IO: what to write and which service actions to take),
//! [`service`] (systemctl and dpkg behind a trait). This file runs a plan
//! against a [`Fs`] and a [`ServiceControl`], writing every file atomically.

pub mod environment;
pub mod machine;
pub mod service;
pub mod settings;
pub mod status;

use std::io;
use std::path::{Path, PathBuf};

use crate::disk::{self, Fs};

pub use crate::platform::ServiceManager;
pub use environment::Handler;
pub use machine::{Access, Action, FileWrite, Plan, Step};
pub use service::{Scm, ServiceControl, Systemd};
pub use settings::{CertStore, Decrypt, OpensslCms};
pub use status::{Heartbeat, State, Status};

/// What went wrong in a handler command. Every message names the file (or
/// the command) concerned and none carries a secret: protected settings and
/// keys are never formatted into one.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file the guest agent wrote (or the handler zip carries) that does
    /// not have the documented shape.
    #[error("{}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: missing settings file (sequence number {seq})", path.display())]
    MissingSettings { path: PathBuf, seq: u64 },
    /// Public settings that are not a valid agent configuration; the reason
    /// names the key.
    #[error("{}: public settings: {reason}", path.display())]
    PublicSettings { path: PathBuf, reason: String },
    /// Protected settings that cannot be decrypted or read; the reason names
    /// the certificate or key, never a value.
    #[error("{}: protected settings: {reason}", path.display())]
    ProtectedSettings { path: PathBuf, reason: String },
    /// A systemctl or dpkg command that failed.
    #[error("{command}: {detail}")]
    Service { command: String, detail: String },
}

impl ExtensionError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ExtensionError {
        let path = path.into();
        move |source| ExtensionError::Io { path, source }
    }
}

/// The system paths the handler manages. `root` is `/` on a Linux VM and
/// `%ProgramData%\vmflow` on Windows; tests put the whole tree under a
/// scratch directory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// What runs the agent: which plans the handler makes.
    pub host: ServiceManager,
    pub root: PathBuf,
    /// The agent binary the service runs (installed by the .deb; on
    /// Windows copied there by `install`).
    pub service_binary: PathBuf,
}

/// The unit the package installs and the extension manages.
pub const UNIT: &str = "vmflow.service";
/// The timer that keeps the heartbeat file fresh (only with `reportHeartbeat`).
pub const HEARTBEAT_TIMER: &str = "vmflow-extension-heartbeat.timer";
/// The package `uninstall` removes.
pub const PACKAGE: &str = "vmflow";

impl Layout {
    /// This system's layout.
    pub fn system() -> Layout {
        Layout::of(crate::platform::SERVICE_MANAGER)
    }

    /// The layout of a Linux or Windows VM (tests plan for either anywhere).
    pub fn of(host: ServiceManager) -> Layout {
        match host {
            ServiceManager::Systemd => Layout {
                host,
                root: PathBuf::from("/"),
                service_binary: PathBuf::from("/usr/bin/vmflow"),
            },
            ServiceManager::Scm => Layout {
                host,
                root: crate::platform::service::data_dir(),
                service_binary: crate::platform::service::program_dir().join("vmflow.exe"),
            },
        }
    }

    /// The service's name as the service manager knows it.
    pub fn unit(&self) -> &'static str {
        match self.host {
            ServiceManager::Systemd => UNIT,
            ServiceManager::Scm => crate::platform::service::NAME,
        }
    }

    /// The extension's own configuration: the agent config and key material.
    pub fn config_dir(&self) -> PathBuf {
        match self.host {
            ServiceManager::Systemd => self.root.join("etc/vmflow/extension"),
            ServiceManager::Scm => self.root.join("extension"),
        }
    }
    pub fn agent_config(&self) -> PathBuf {
        self.config_dir().join("vmflow.toml")
    }
    /// Present between `update` (new) and the `uninstall` (old) it marks.
    pub fn update_marker(&self) -> PathBuf {
        self.config_dir().join("updating")
    }
    pub fn dropin_dir(&self) -> PathBuf {
        self.root.join("etc/systemd/system/vmflow.service.d")
    }
    pub fn dropin(&self) -> PathBuf {
        self.dropin_dir().join("extension.conf")
    }
    pub fn heartbeat_service(&self) -> PathBuf {
        self.root
            .join("etc/systemd/system/vmflow-extension-heartbeat.service")
    }
    pub fn heartbeat_timer(&self) -> PathBuf {
        self.root.join("etc/systemd/system").join(HEARTBEAT_TIMER)
    }
    /// The spool when public settings name none: in the unit's
    /// StateDirectory, which package upgrades and removal keep.
    pub fn default_spool_dir(&self) -> PathBuf {
        match self.host {
            ServiceManager::Systemd => self.root.join("var/lib/vmflow/spool"),
            ServiceManager::Scm => self.root.join("spool"),
        }
    }

    /// The files whose presence says an enable's settings are in place.
    fn applied_files(&self) -> Vec<PathBuf> {
        match self.host {
            ServiceManager::Systemd => vec![self.agent_config(), self.dropin()],
            ServiceManager::Scm => vec![self.agent_config()],
        }
    }
}

/// What a handler command runs against.
pub struct Ctx<'a> {
    pub fs: &'a dyn Fs,
    pub svc: &'a mut dyn ServiceControl,
    pub decrypt: &'a dyn Decrypt,
    pub layout: Layout,
    /// The handler directory (cwd, or `AZURE_GUEST_AGENT_EXTENSION_PATH`).
    pub handler_dir: PathBuf,
    /// `ConfigSequenceNumber` as the guest agent set it.
    pub env_seq: Option<String>,
    /// `AZURE_GUEST_AGENT_UPDATING_FROM_VERSION` (update only).
    pub updating_from: Option<String>,
    /// Seconds since the epoch, for status timestamps.
    pub now: u64,
}

/// `install`: install the .deb (Windows: the exe) from the handler
/// directory, leave the service stopped until `enable`.
pub fn install(ctx: &mut Ctx) -> Result<String, ExtensionError> {
    let deb = match ctx.layout.host {
        ServiceManager::Systemd => environment::find_deb(ctx.fs, &ctx.handler_dir)?,
        ServiceManager::Scm => environment::find_exe(ctx.fs, &ctx.handler_dir)?,
    };
    let plan = machine::plan_install(&ctx.layout, &deb);
    execute(ctx, &plan)?;
    Ok(plan.message)
}

/// `enable`: see the module documentation. Writes `<N>.status`
/// (`transitioning`, then `success` or `error`), the heartbeat, and `mrseq`.
pub fn enable(ctx: &mut Ctx) -> Result<String, ExtensionError> {
    let h = Handler::load(ctx.fs, &ctx.handler_dir)?;
    let seq = environment::pick_seq(ctx.fs, &h.config_folder, ctx.env_seq.as_deref())?;
    let transitioning = Status::new("Enable", State::Transitioning, "applying settings");
    status::write_status(ctx.fs, &h, seq, &transitioning, ctx.now)?;
    match enable_seq(ctx, &h, seq) {
        Ok(plan) => {
            let done = Status::new("Enable", State::Success, &plan.message);
            status::write_status(ctx.fs, &h, seq, &done, ctx.now)?;
            if let Some(hb) = &plan.heartbeat {
                status::write_heartbeat(ctx.fs, &h, hb)?;
            }
            Ok(plan.message)
        }
        Err(e) => {
            let failed = Status::new("Enable", State::Error, &e.to_string());
            // The error itself is what the command reports; a status that
            // cannot be written is secondary to it.
            let _ = status::write_status(ctx.fs, &h, seq, &failed, ctx.now);
            let _ = status::write_heartbeat(ctx.fs, &h, &Heartbeat::not_ready("enable failed"));
            Err(e)
        }
    }
}

fn enable_seq(ctx: &mut Ctx, h: &Handler, seq: u64) -> Result<Plan, ExtensionError> {
    let mrseq = environment::read_mrseq(ctx.fs, &h.dir);
    let mut applied = true;
    for f in ctx.layout.applied_files() {
        applied &= exists(ctx.fs, &f)?;
    }
    let heartbeat_unit = match ctx.layout.host {
        ServiceManager::Systemd => read_optional(ctx.fs, &ctx.layout.heartbeat_service())?,
        ServiceManager::Scm => None,
    };
    let input = machine::EnableInput {
        layout: &ctx.layout,
        handler: h,
        seq,
        heartbeat_unit: heartbeat_unit.as_deref(),
    };
    let plan = if machine::is_current(seq, mrseq, applied) {
        machine::plan_reenable(&input)?
    } else {
        let path = h.settings_file(seq);
        let bytes = match ctx.fs.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ExtensionError::MissingSettings { path, seq })
            }
            Err(e) => return Err(ExtensionError::io(path)(e)),
        };
        let s = settings::parse_settings(&path, &bytes)?;
        let secrets = match &s.protected {
            None => settings::Secrets::default(),
            Some(p) => settings::decrypt_protected(&path, p, h, ctx.decrypt)?,
        };
        machine::plan_enable(&input, &path, &s.public, &secrets)?
    };
    execute(ctx, &plan)?;
    if let Some(n) = plan.mrseq {
        let p = h.dir.join("mrseq");
        disk::replace(ctx.fs, &p, n.to_string().as_bytes()).map_err(ExtensionError::io(&p))?;
    }
    Ok(plan)
}

/// `disable`: stop and disable the unit (idempotent).
pub fn disable(ctx: &mut Ctx) -> Result<String, ExtensionError> {
    let h = Handler::load(ctx.fs, &ctx.handler_dir)?;
    let seq = environment::pick_seq(ctx.fs, &h.config_folder, ctx.env_seq.as_deref())?;
    let plan = machine::plan_disable(&ctx.layout);
    let result = execute(ctx, &plan);
    let st = match &result {
        Ok(()) => Status::new("Disable", State::Success, &plan.message),
        Err(e) => Status::new("Disable", State::Error, &e.to_string()),
    };
    let written = status::write_status(ctx.fs, &h, seq, &st, ctx.now);
    result?;
    written?;
    if let Some(hb) = &plan.heartbeat {
        status::write_heartbeat(ctx.fs, &h, hb)?;
    }
    Ok(plan.message)
}

/// `uninstall`: remove what `install` and `enable` put in place, unless an
/// `update` marked this uninstall as the old version's step of an update.
pub fn uninstall(ctx: &mut Ctx) -> Result<String, ExtensionError> {
    let marker = read_optional(ctx.fs, &ctx.layout.update_marker())?;
    let heartbeat = exists(ctx.fs, &ctx.layout.heartbeat_timer())?;
    let plan = machine::plan_uninstall(&ctx.layout, marker.as_deref(), heartbeat, ctx.now);
    execute(ctx, &plan)?;
    Ok(plan.message)
}

/// `update` (run from the new version's directory): mark the uninstall of
/// the old version that follows as part of this update.
pub fn update(ctx: &mut Ctx) -> Result<String, ExtensionError> {
    let plan = machine::plan_update(&ctx.layout, ctx.updating_from.as_deref(), ctx.now);
    execute(ctx, &plan)?;
    Ok(plan.message)
}

/// `heartbeat` (the timer's command): `ready` while the unit is active.
pub fn heartbeat(ctx: &mut Ctx) -> Result<String, ExtensionError> {
    let h = Handler::load(ctx.fs, &ctx.handler_dir)?;
    if !h.report_heartbeat {
        return Ok("reportHeartbeat is off: no heartbeat written".into());
    }
    let unit = ctx.layout.unit();
    let hb = if ctx.svc.is_active(unit) {
        Heartbeat::ready(&format!("{unit} is active"))
    } else {
        Heartbeat::not_ready(&format!("{unit} is not active"))
    };
    status::write_heartbeat(ctx.fs, &h, &hb)?;
    Ok(hb.message)
}

fn exists(fs: &dyn Fs, path: &Path) -> Result<bool, ExtensionError> {
    Ok(fs.len(path).map_err(ExtensionError::io(path))?.is_some())
}

fn read_optional(fs: &dyn Fs, path: &Path) -> Result<Option<Vec<u8>>, ExtensionError> {
    match fs.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExtensionError::io(path)(e)),
    }
}

/// Runs a plan's steps in order; the first failure stops it.
fn execute(ctx: &mut Ctx, plan: &Plan) -> Result<(), ExtensionError> {
    let mut gid = None;
    for step in &plan.steps {
        match step {
            Step::Dir(dir, access) => {
                ctx.fs
                    .create_dir_all(dir)
                    .map_err(ExtensionError::io(dir))?;
                if *access == Access::Service {
                    let g = service_gid(ctx.svc, &mut gid)?;
                    ctx.fs
                        .share_with_group(dir, g)
                        .map_err(ExtensionError::io(dir))?;
                }
            }
            Step::Write(w) => {
                let g = match w.access {
                    Access::Service => Some(service_gid(ctx.svc, &mut gid)?),
                    Access::Private => None,
                };
                write_atomic(ctx.fs, &w.path, &w.data, g).map_err(ExtensionError::io(&w.path))?;
            }
            Step::Remove(p) => match ctx.fs.remove(p) {
                Ok(()) => ctx
                    .fs
                    .sync_dir(disk::parent(p))
                    .map_err(ExtensionError::io(p))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ExtensionError::io(p)(e)),
            },
            Step::RemoveDirIfEmpty(dir) => {
                if ctx.fs.is_dir(dir)
                    && ctx
                        .fs
                        .list(dir)
                        .map_err(ExtensionError::io(dir))?
                        .is_empty()
                {
                    ctx.fs.remove_dir(dir).map_err(ExtensionError::io(dir))?;
                }
            }
            Step::RemoveTree(dir) => remove_dir_all(ctx.fs, dir)?,
            Step::Service(a) => ctx.svc.run(a)?,
        }
    }
    Ok(())
}

fn service_gid(
    svc: &mut dyn ServiceControl,
    cache: &mut Option<u32>,
) -> Result<u32, ExtensionError> {
    if let Some(g) = *cache {
        return Ok(g);
    }
    let g = svc.service_gid()?;
    *cache = Some(g);
    Ok(g)
}

/// Replaces `path` with `data` so that a crash leaves the old or the new
/// content: temporary file (0600), sync, then (for the service's files)
/// 0640 to the service group, rename, sync the directory. The file is never
/// readable by anyone else at any moment.
pub fn write_atomic(fs: &dyn Fs, path: &Path, data: &[u8], gid: Option<u32>) -> io::Result<()> {
    write_atomic_via(fs, path, &disk::tmp_path(path), data, gid)
}

/// [`write_atomic`] through the temporary file `tmp`: a file two processes
/// may replace at once (the heartbeat: enable and the timer) needs one per
/// process, or one could rename the other's half-written file.
pub fn write_atomic_via(
    fs: &dyn Fs,
    path: &Path,
    tmp: &Path,
    data: &[u8],
    gid: Option<u32>,
) -> io::Result<()> {
    let tmp = tmp.to_path_buf();
    let staged = fs
        .write_new(&tmp, data)
        .and_then(|_| fs.sync(&tmp))
        .and_then(|_| match gid {
            Some(g) => fs.share_with_group(&tmp, g),
            None => Ok(()),
        })
        .and_then(|_| fs.rename(&tmp, path));
    if let Err(e) = staged {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.sync_dir(disk::parent(path))
}

/// Removes the files of `dir` and `dir` itself; a missing `dir` is done.
fn remove_dir_all(fs: &dyn Fs, dir: &Path) -> Result<(), ExtensionError> {
    if !fs.is_dir(dir) {
        return Ok(());
    }
    for name in fs.list(dir).map_err(ExtensionError::io(dir))? {
        let p = dir.join(&name);
        if fs.is_dir(&p) {
            remove_dir_all(fs, &p)?;
        } else {
            fs.remove(&p).map_err(ExtensionError::io(&p))?;
        }
    }
    fs.remove_dir(dir).map_err(ExtensionError::io(dir))?;
    fs.sync_dir(disk::parent(dir))
        .map_err(ExtensionError::io(dir))
}

#[cfg(test)]
mod tests;
