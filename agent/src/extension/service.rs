//! Service control: systemd and dpkg (Linux), the Service Control Manager
//! (Windows) behind a small trait, so the handler's plans run in-process
//! against a fake in tests and against the real thing on a VM. Nothing
//! secret ever reaches a command line: the actions carry unit names and
//! package paths only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::machine::Action;
use super::{ExtensionError, PACKAGE};

pub trait ServiceControl {
    fn run(&mut self, action: &Action) -> Result<(), ExtensionError>;
    fn is_active(&mut self, unit: &str) -> bool;
    /// The group the service runs as (files it must read are shared with it).
    fn service_gid(&mut self) -> Result<u32, ExtensionError>;
}

/// The real thing. The programs and group are fields so a test can point
/// them elsewhere.
pub struct Systemd {
    pub systemctl: PathBuf,
    pub dpkg: PathBuf,
    /// The service user's group, created by the package.
    pub group: String,
    /// How long to wait for the dpkg lock.
    pub lock_wait: Duration,
}

impl Systemd {
    pub fn system() -> Systemd {
        Systemd {
            systemctl: "systemctl".into(),
            dpkg: "dpkg".into(),
            group: "vmflow".into(),
            lock_wait: Duration::from_secs(600),
        }
    }

    /// dpkg, waiting while another package manager (unattended-upgrades,
    /// cloud-init) holds its lock: up to `lock_wait`, well inside the guest
    /// agent's 900 s for install.
    fn dpkg(&self, args: &[&str], what: &str) -> Result<(), ExtensionError> {
        let deadline = Instant::now() + self.lock_wait;
        let mut pause = Duration::from_millis(500);
        loop {
            let mut c = Command::new(&self.dpkg);
            c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
            match run(c, what) {
                Err(ExtensionError::Service { detail, .. })
                    if detail.contains("lock") && Instant::now() + pause < deadline =>
                {
                    eprintln!("vmflow extension: {what}: dpkg is locked, retrying in {pause:?}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                r => return r,
            }
        }
    }

    fn systemctl(&self, args: &[&str]) -> Result<(), ExtensionError> {
        let mut c = Command::new(&self.systemctl);
        c.args(args);
        run(c, &format!("systemctl {}", args.join(" ")))
    }
}

impl ServiceControl for Systemd {
    fn run(&mut self, action: &Action) -> Result<(), ExtensionError> {
        match action {
            Action::InstallPackage(deb) => self.dpkg(
                &[
                    "--force-confold",
                    "--force-confdef",
                    "-i",
                    &deb.to_string_lossy(),
                ],
                &format!("dpkg -i {}", deb.display()),
            ),
            Action::RemovePackage => self.dpkg(&["-r", PACKAGE], &format!("dpkg -r {PACKAGE}")),
            Action::DaemonReload => self.systemctl(&["daemon-reload"]),
            Action::Enable(u) => self.systemctl(&["enable", u]),
            Action::Start(u) => self.systemctl(&["start", u]),
            Action::Restart(u) => self.systemctl(&["restart", u]),
            Action::EnableNow(u) => self.systemctl(&["enable", "--now", u]),
            Action::DisableNow(u) => match self.systemctl(&["disable", "--now", u]) {
                // A unit that is gone (package removed) is as disabled as it gets.
                Err(_) if !self.is_active(u) => Ok(()),
                r => r,
            },
            Action::Register | Action::Unregister => Err(ExtensionError::Service {
                command: format!("{action:?}"),
                detail: "a Windows service action; systemd has units".into(),
            }),
        }
    }

    fn is_active(&mut self, unit: &str) -> bool {
        Command::new(&self.systemctl)
            .args(["is-active", "--quiet", unit])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn service_gid(&mut self) -> Result<u32, ExtensionError> {
        group_id(&self.group).ok_or_else(|| ExtensionError::Service {
            command: format!("group lookup {:?}", self.group),
            detail: "no such group (the vmflow package creates it: is it installed?)".into(),
        })
    }
}

/// The Windows service through the Service Control Manager (the platform
/// seam's `service`), and the exe it runs.
pub struct Scm {
    /// Where the service's exe is installed (`Layout::service_binary`).
    pub binary: PathBuf,
    /// The agent configuration the service runs with.
    pub config: PathBuf,
    /// How long to wait for the service to start or stop: a stop lets the
    /// agent ship what it holds (up to its shutdown_grace), and enable has
    /// 300 s in all.
    pub wait: Duration,
}

impl Scm {
    fn args(&self) -> Vec<OsString> {
        vec![
            "service".into(),
            "run".into(),
            "--config".into(),
            self.config.clone().into_os_string(),
        ]
    }

    /// Copies the handler's exe to `binary` through a temporary file and a
    /// rename, so the service never finds half an exe.
    fn install_exe(&self, from: &std::path::Path) -> std::io::Result<()> {
        if let Some(dir) = self.binary.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = crate::disk::tmp_path(&self.binary);
        std::fs::copy(from, &tmp)?;
        std::fs::rename(&tmp, &self.binary).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

impl ServiceControl for Scm {
    fn run(&mut self, action: &Action) -> Result<(), ExtensionError> {
        use crate::platform::service;
        let failed = |what: String| {
            move |e: std::io::Error| ExtensionError::Service {
                command: what,
                detail: e.to_string(),
            }
        };
        match action {
            Action::InstallPackage(exe) => self.install_exe(exe).map_err(failed(format!(
                "copy {} to {}",
                exe.display(),
                self.binary.display()
            ))),
            Action::RemovePackage => match std::fs::remove_file(&self.binary) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(failed(format!("remove {}", self.binary.display()))(e))
                }
                _ => Ok(()),
            },
            Action::Register => service::register(&self.binary, self.args(), true)
                .map_err(failed(format!("register service {}", service::NAME))),
            Action::Unregister => {
                let installed = service::is_installed()
                    .map_err(failed(format!("query service {}", service::NAME)))?;
                if installed {
                    service::uninstall(self.wait)
                        .map_err(failed(format!("delete service {}", service::NAME)))?;
                }
                Ok(())
            }
            Action::Start(u) => service::start(self.wait).map_err(failed(format!("start {u}"))),
            Action::Restart(u) => service::stop_if_running(self.wait)
                .and_then(|_| service::start(self.wait))
                .map_err(failed(format!("restart {u}"))),
            Action::DisableNow(u) => {
                let installed =
                    service::stop_if_running(self.wait).map_err(failed(format!("stop {u}")))?;
                if installed {
                    service::register(&self.binary, self.args(), false)
                        .map_err(failed(format!("set {u} to start on demand")))?;
                }
                Ok(())
            }
            Action::Enable(_) | Action::EnableNow(_) | Action::DaemonReload => {
                Err(ExtensionError::Service {
                    command: format!("{action:?}"),
                    detail: "a systemd action; the Windows service is registered instead".into(),
                })
            }
        }
    }

    fn is_active(&mut self, _unit: &str) -> bool {
        crate::platform::service::is_running()
    }

    /// No Unix groups on Windows: the platform's `share_with_group` gives
    /// the files SYSTEM (the service's account) and Administrators only,
    /// whatever the id.
    fn service_gid(&mut self) -> Result<u32, ExtensionError> {
        Ok(0)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), ExtensionError> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ExtensionError::Service {
            command: what.into(),
            detail: format!("cannot run: {e}"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(ExtensionError::Service {
        command: what.into(),
        detail: format!("{}: {}", out.status, last.trim()),
    })
}

/// The id of a group by name (the platform seam asks the name service).
pub fn group_id(name: &str) -> Option<u32> {
    crate::platform::group_id(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_group_resolves_and_nonsense_does_not() {
        assert_eq!(super::group_id("root"), Some(0));
        assert_eq!(super::group_id("no-such-group-vmflow-x"), None);
        assert_eq!(super::group_id("nul\0inside"), None);
    }
}
