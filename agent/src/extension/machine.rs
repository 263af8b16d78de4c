//! The handler's decisions, without I/O: given the handler environment, the
//! settings (decrypted), the last applied sequence number and what is on
//! disk now, which files to write or remove and which service actions to
//! take, in order. `mod.rs` carries a plan out; tests check plans and run
//! them against a model filesystem and a fake service manager.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::environment::Handler;
use super::settings::{self, Secrets, SECRET_FILES};
use super::status::Heartbeat;
use super::{ExtensionError, Layout, ServiceManager, HEARTBEAT_TIMER, UNIT};
use crate::config::Config;

/// Who may read a file the plan writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// root only (0600; directories 0700).
    Private,
    /// root writes, the service's group reads (0640; directories 0750).
    Service,
}

/// A file to replace atomically. Its content may be a secret: `Debug`
/// prints the length only.
pub struct FileWrite {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub access: Access,
}

impl std::fmt::Debug for FileWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileWrite({}, {} bytes, {:?})",
            self.path.display(),
            self.data.len(),
            self.access
        )
    }
}

#[derive(Debug)]
pub enum Step {
    /// Create the directory (and parents); share it with the service group.
    Dir(PathBuf, Access),
    Write(FileWrite),
    /// Remove a file; a missing one is fine.
    Remove(PathBuf),
    /// Remove a directory if it is empty (other drop-ins may live there).
    RemoveDirIfEmpty(PathBuf),
    /// Remove a directory and everything in it; a missing one is fine.
    RemoveTree(PathBuf),
    Service(Action),
}

/// What the service manager and the package manager are asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `dpkg -i` keeping edited conffiles, non-interactive.
    InstallPackage(PathBuf),
    /// `dpkg -r` (state in /var/lib/vmflow stays).
    RemovePackage,
    DaemonReload,
    Enable(&'static str),
    Start(&'static str),
    Restart(&'static str),
    /// `enable --now`.
    EnableNow(&'static str),
    /// `disable --now`; a unit that is already inactive (or gone) is done.
    /// (Windows: stop, and start on demand only.)
    DisableNow(&'static str),
    /// Windows: register the service (`service run --config` the agent
    /// configuration, started at boot), or set that on the registered one.
    Register,
    /// Windows: stop and delete the service; one that is gone is done.
    Unregister,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The sequence number to record in `mrseq` once every step succeeded.
    pub mrseq: Option<u64>,
    /// What the command did, for the status file and stdout.
    pub message: String,
    pub heartbeat: Option<Heartbeat>,
}

impl Plan {
    pub fn actions(&self) -> Vec<&Action> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Service(a) => Some(a),
                _ => None,
            })
            .collect()
    }
}

/// What `enable` decides from.
pub struct EnableInput<'a> {
    pub layout: &'a Layout,
    pub handler: &'a Handler,
    pub seq: u64,
    /// The heartbeat service unit as it is on disk now.
    pub heartbeat_unit: Option<&'a [u8]>,
}

/// Settings `seq` are already in place: `mrseq` has them and the files they
/// produced are there. Enable then only makes sure the unit runs.
pub fn is_current(seq: u64, mrseq: Option<u64>, applied: bool) -> bool {
    applied && mrseq.is_some_and(|m| seq <= m)
}

/// Apply settings `seq`: the agent configuration and key files, the
/// drop-in, then restart the unit.
pub fn plan_enable(
    input: &EnableInput,
    settings_path: &Path,
    public: &Map<String, Value>,
    secrets: &Secrets,
) -> Result<Plan, ExtensionError> {
    let l = input.layout;
    let (config, files, stale) = agent_config(l, settings_path, public, secrets)?;
    let mut steps = vec![Step::Dir(l.config_dir(), Access::Service)];
    steps.extend(files.into_iter().map(Step::Write));
    steps.push(Step::Write(FileWrite {
        path: l.agent_config(),
        data: config.into_bytes(),
        access: Access::Service,
    }));
    steps.extend(stale.into_iter().map(Step::Remove));
    if l.host == ServiceManager::Scm {
        let unit = l.unit();
        steps.push(Step::Service(Action::Register));
        steps.push(Step::Service(Action::Restart(unit)));
        return Ok(Plan {
            steps,
            mrseq: Some(input.seq),
            message: format!(
                "service {unit} restarted with the configuration from {}.settings ({})",
                input.seq,
                l.agent_config().display()
            ),
            heartbeat: Some(Heartbeat::ready(&format!(
                "service {unit} started with settings {}",
                input.seq
            ))),
        });
    }
    steps.push(Step::Dir(l.dropin_dir(), Access::Private));
    steps.push(Step::Write(FileWrite {
        path: l.dropin(),
        data: dropin(l)?.into_bytes(),
        access: Access::Private,
    }));
    heartbeat_units(input, &mut steps)?;
    steps.push(Step::Service(Action::DaemonReload));
    steps.push(Step::Service(Action::Enable(UNIT)));
    steps.push(Step::Service(Action::Restart(UNIT)));
    if input.handler.report_heartbeat {
        steps.push(Step::Service(Action::EnableNow(HEARTBEAT_TIMER)));
    }
    Ok(Plan {
        steps,
        mrseq: Some(input.seq),
        message: format!(
            "{UNIT} restarted with the configuration from {}.settings ({})",
            input.seq,
            l.agent_config().display()
        ),
        heartbeat: Some(Heartbeat::ready(&format!(
            "{UNIT} started with settings {}",
            input.seq
        ))),
    })
}

/// Settings `seq` are in place already: no file of the configuration is
/// rewritten and the unit is not restarted, only enabled and started.
pub fn plan_reenable(input: &EnableInput) -> Result<Plan, ExtensionError> {
    if input.layout.host == ServiceManager::Scm {
        let unit = input.layout.unit();
        return Ok(Plan {
            steps: vec![
                Step::Service(Action::Register),
                Step::Service(Action::Start(unit)),
            ],
            mrseq: None,
            message: format!(
                "settings {} already applied; service {unit} registered and running",
                input.seq
            ),
            heartbeat: Some(Heartbeat::ready(&format!(
                "service {unit} started with settings {}",
                input.seq
            ))),
        });
    }
    let mut steps = Vec::new();
    heartbeat_units(input, &mut steps)?;
    if !steps.is_empty() {
        steps.push(Step::Service(Action::DaemonReload));
    }
    steps.push(Step::Service(Action::Enable(UNIT)));
    steps.push(Step::Service(Action::Start(UNIT)));
    if input.handler.report_heartbeat {
        steps.push(Step::Service(Action::EnableNow(HEARTBEAT_TIMER)));
    }
    Ok(Plan {
        steps,
        mrseq: None,
        message: format!(
            "settings {} already applied; {UNIT} enabled and running",
            input.seq
        ),
        heartbeat: Some(Heartbeat::ready(&format!(
            "{UNIT} started with settings {}",
            input.seq
        ))),
    })
}

/// The heartbeat timer's units, written when the manifest asks for
/// heartbeats and what is on disk differs (after an update the handler
/// directory, which the service names, is new).
fn heartbeat_units(input: &EnableInput, steps: &mut Vec<Step>) -> Result<(), ExtensionError> {
    if !input.handler.report_heartbeat {
        return Ok(());
    }
    let l = input.layout;
    let service = heartbeat_service(l, &input.handler.dir)?;
    if input.heartbeat_unit == Some(service.as_bytes()) {
        return Ok(());
    }
    steps.push(Step::Write(FileWrite {
        path: l.heartbeat_service(),
        data: service.into_bytes(),
        access: Access::Private,
    }));
    steps.push(Step::Write(FileWrite {
        path: l.heartbeat_timer(),
        data: HEARTBEAT_TIMER_UNIT.as_bytes().to_vec(),
        access: Access::Private,
    }));
    Ok(())
}

/// The agent configuration (TOML) from public settings, the key files from
/// protected settings, and the key files earlier settings left that these
/// do not have (to remove).
pub fn agent_config(
    l: &Layout,
    settings_path: &Path,
    public: &Map<String, Value>,
    secrets: &Secrets,
) -> Result<(String, Vec<FileWrite>, Vec<PathBuf>), ExtensionError> {
    let fail = |reason: String| ExtensionError::PublicSettings {
        path: settings_path.to_path_buf(),
        reason,
    };
    let mut t = settings::public_to_toml(public).map_err(fail)?;
    let mut files = Vec::new();
    let mut stale = Vec::new();
    for (pkey, file, section, key) in SECRET_FILES {
        let path = l.config_dir().join(file);
        let Some(secret) = secrets.get(pkey) else {
            stale.push(path);
            continue;
        };
        if *section == "export" && !t.contains_key("export") {
            return Err(fail(format!(
                "protected settings carry {pkey} but public settings have no export object"
            )));
        }
        let sec = t
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(sec) = sec else {
            return Err(fail(format!("{section} is not an object")));
        };
        if sec.contains_key(*key) {
            return Err(fail(format!(
                "{section}.{key} is in public settings and {pkey} in protected settings: give one"
            )));
        }
        sec.insert(key.to_string(), toml::Value::String(path_str(&path)?));
        files.push(FileWrite {
            path,
            data: secret.0.clone().into_bytes(),
            access: Access::Service,
        });
    }
    if let Some(toml::Value::Table(x)) = t.get_mut("export") {
        if !x.contains_key("spool_dir") {
            x.insert(
                "spool_dir".into(),
                toml::Value::String(path_str(&l.default_spool_dir())?),
            );
        }
    }
    let body = toml::to_string(&t).map_err(|e| fail(e.to_string()))?;
    let name = settings_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = format!(
        "# Written by `vmflow extension enable` from {name}. Do not edit: the\n\
         # next enable replaces it. Change the extension's settings instead.\n{body}"
    );
    let cfg = Config::parse(&text).map_err(|e| {
        fail(
            e.to_string()
                .trim_start_matches("config: ")
                .replace('\n', " "),
        )
    })?;
    if cfg.export.is_none() {
        return Err(fail(
            "no export object: the agent needs export.collector, export.ca, export.cert and export.key \
             (export_ca, export_cert and export_key may come in protected settings)"
                .into(),
        ));
    }
    Ok((text, files, stale))
}

/// The drop-in that points the packaged unit at the extension's config.
pub fn dropin(l: &Layout) -> Result<String, ExtensionError> {
    Ok(format!(
        "# Written by `vmflow extension enable`; removed by `vmflow extension uninstall`.\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={} run --config {}\n",
        unit_path(&l.service_binary)?,
        unit_path(&l.agent_config())?
    ))
}

fn heartbeat_service(l: &Layout, handler_dir: &Path) -> Result<String, ExtensionError> {
    Ok(format!(
        "# Written by `vmflow extension enable`: keeps the Azure extension heartbeat fresh.\n\
         [Unit]\n\
         Description=vmflow Azure VM extension heartbeat\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         Environment=AZURE_GUEST_AGENT_EXTENSION_PATH={dir}\n\
         ExecStart={bin} extension heartbeat\n\
         # It reads the handler directory, asks systemd whether vmflow.service\n\
         # is active and writes one file: nothing else.\n\
         ProtectSystem=strict\n\
         ReadWritePaths={dir}\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateNetwork=yes\n\
         NoNewPrivileges=yes\n\
         CapabilityBoundingSet=\n",
        dir = unit_path(handler_dir)?,
        bin = unit_path(&l.service_binary)?
    ))
}

const HEARTBEAT_TIMER_UNIT: &str = "\
# Written by `vmflow extension enable`; the guest agent reports an extension
# whose heartbeat file is older than 600 s as unresponsive.
[Unit]
Description=vmflow Azure VM extension heartbeat, every minute

[Timer]
OnActiveSec=0
OnUnitActiveSec=60s
AccuracySec=5s

[Install]
WantedBy=timers.target
";

fn path_str(p: &Path) -> Result<String, ExtensionError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| ExtensionError::Malformed {
            path: p.to_path_buf(),
            reason: "not UTF-8".into(),
        })
}

/// A path as a unit file may name it unquoted: no spaces, quotes,
/// backslashes or `%` (systemd specifiers).
fn unit_path(p: &Path) -> Result<String, ExtensionError> {
    let s = path_str(p)?;
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,".contains(&b))
    {
        Ok(s)
    } else {
        Err(ExtensionError::Malformed {
            path: p.to_path_buf(),
            reason: "cannot be named in a systemd unit (only letters, digits and /._-+:@, are)"
                .into(),
        })
    }
}

/// Stop and disable the unit. Idempotent.
pub fn plan_disable(l: &Layout) -> Plan {
    let unit = l.unit();
    Plan {
        steps: vec![Step::Service(Action::DisableNow(unit))],
        mrseq: None,
        message: format!("{unit} stopped and disabled"),
        heartbeat: Some(Heartbeat::not_ready(&format!("{unit} disabled"))),
    }
}

/// Install (or upgrade to) the handler's .deb; the unit waits for enable.
/// An update marker still there (the old version's uninstall failed before
/// it got to it) has served its purpose.
///
/// Windows: the exe is copied where the service runs it from; a service
/// still running from there (an update) is stopped first, as Windows
/// refuses to replace a running exe.
pub fn plan_install(l: &Layout, deb: &Path) -> Plan {
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if l.host == ServiceManager::Scm {
        let unit = l.unit();
        return Plan {
            steps: vec![
                Step::Service(Action::DisableNow(unit)),
                Step::Service(Action::InstallPackage(deb.to_path_buf())),
                Step::Remove(l.update_marker()),
            ],
            mrseq: None,
            message: format!(
                "installed {name} as {}; service {unit} waits for enable",
                l.service_binary.display()
            ),
            heartbeat: None,
        };
    }
    Plan {
        steps: vec![
            Step::Service(Action::InstallPackage(deb.to_path_buf())),
            Step::Service(Action::DisableNow(UNIT)),
            Step::Remove(l.update_marker()),
        ],
        mrseq: None,
        message: format!("installed {name}; {UNIT} waits for enable"),
        heartbeat: None,
    }
}

/// How long an update marker stands for the update that wrote it: the guest
/// agent runs the old version's uninstall right after the new version's
/// update. An older marker is a leftover and this uninstall is a real one.
pub const UPDATE_MARKER_TTL: u64 = 3600;

/// The update marker's content: the version updated from and when.
pub fn update_marker(from: &str, now: u64) -> Vec<u8> {
    format!("{from}\n{now}\n").into_bytes()
}

/// `marker`: the update marker's content, if there is one. A fresh one
/// means an update is under way and this uninstall is the old version's
/// step of it: everything stays.
pub fn plan_uninstall(l: &Layout, marker: Option<&[u8]>, heartbeat_timer: bool, now: u64) -> Plan {
    let fresh = marker.and_then(|m| {
        let text = String::from_utf8_lossy(m);
        let mut lines = text.lines();
        let from = lines.next()?.trim().to_string();
        let at: u64 = lines.next()?.trim().parse().ok()?;
        (now.saturating_sub(at) <= UPDATE_MARKER_TTL && at <= now + 60).then_some(from)
    });
    if let Some(from) = fresh {
        return Plan {
            steps: vec![Step::Remove(l.update_marker())],
            mrseq: None,
            message: format!(
                "uninstall of {from} during an update: vmflow stays installed and configured, its spool kept"
            ),
            heartbeat: None,
        };
    }
    if l.host == ServiceManager::Scm {
        return Plan {
            steps: vec![
                Step::Service(Action::Unregister),
                // The whole directory: configuration, key files, a stale marker.
                Step::RemoveTree(l.config_dir()),
                Step::Service(Action::RemovePackage),
            ],
            mrseq: None,
            message: format!(
                "removed the service {}, the extension configuration and {}; {} kept",
                l.unit(),
                l.service_binary.display(),
                l.default_spool_dir().display()
            ),
            heartbeat: None,
        };
    }
    let mut steps = Vec::new();
    if heartbeat_timer {
        steps.push(Step::Service(Action::DisableNow(HEARTBEAT_TIMER)));
    }
    steps.extend([
        Step::Service(Action::DisableNow(UNIT)),
        Step::Remove(l.dropin()),
        Step::RemoveDirIfEmpty(l.dropin_dir()),
        Step::Remove(l.heartbeat_service()),
        Step::Remove(l.heartbeat_timer()),
        // The whole directory: configuration, key files, a stale marker.
        Step::RemoveTree(l.config_dir()),
        Step::Service(Action::DaemonReload),
        Step::Service(Action::RemovePackage),
    ]);
    Plan {
        steps,
        mrseq: None,
        message: "removed the vmflow package, its drop-in and the extension configuration; \
                  /var/lib/vmflow kept"
            .into(),
        heartbeat: None,
    }
}

/// Run from the new version: the old version's uninstall that follows is
/// part of this update.
pub fn plan_update(l: &Layout, from: Option<&str>, now: u64) -> Plan {
    let from = from
        .filter(|f| !f.is_empty() && *f != "NOT_RUN")
        .unwrap_or("an earlier version");
    Plan {
        steps: vec![
            Step::Dir(l.config_dir(), Access::Service),
            Step::Write(FileWrite {
                path: l.update_marker(),
                data: update_marker(from, now),
                access: Access::Private,
            }),
        ],
        mrseq: None,
        message: format!("update from {from}: the old version's uninstall keeps vmflow"),
        heartbeat: None,
    }
}
