//! What the guest agent tells the handler through files: the handler
//! environment (`HandlerEnvironment.json`: where config, status, heartbeat
//! and logs go), the manifest (`reportHeartbeat`), which `<N>.settings` to
//! read, and the handler's own `mrseq`.
//!
//! Shapes as WALinuxAgent writes them (`create_handler_env`,
//! `update_settings`, `HandlerManifest`): see azure-reference.md §6.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ExtensionError;
use crate::disk::Fs;

/// One handler directory, as the guest agent laid it out.
#[derive(Clone, Debug)]
pub struct Handler {
    /// The handler directory (`/var/lib/waagent/<Publisher>.<Type>-<Version>`).
    pub dir: PathBuf,
    /// `<Publisher>.<Type>`, the name the status file reports.
    pub name: String,
    pub config_folder: PathBuf,
    pub status_folder: PathBuf,
    pub heartbeat_file: PathBuf,
    pub log_folder: PathBuf,
    /// `reportHeartbeat` from `HandlerManifest.json`.
    pub report_heartbeat: bool,
}

/// How long to keep re-reading a `HandlerEnvironment.json` that does not
/// parse: the guest agent may be rewriting it.
const ENV_RETRY: Duration = Duration::from_secs(3);

impl Handler {
    pub fn load(fs: &dyn Fs, dir: &Path) -> Result<Handler, ExtensionError> {
        let path = dir.join("HandlerEnvironment.json");
        let deadline = Instant::now() + ENV_RETRY;
        let mut pause = Duration::from_millis(50);
        let (name, env) = loop {
            let attempt = fs
                .read(&path)
                .map_err(ExtensionError::io(&path))
                .and_then(|b| parse_environment(&path, &b));
            match attempt {
                Ok(env) => break env,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        };
        let manifest = dir.join("HandlerManifest.json");
        let report_heartbeat = match fs.read(&manifest) {
            Ok(b) => parse_manifest(&manifest, &b)?,
            Err(e) => return Err(ExtensionError::io(manifest)(e)),
        };
        let folder = |key: &str| -> Result<PathBuf, ExtensionError> {
            env.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| ExtensionError::Malformed {
                    path: path.clone(),
                    reason: format!("handlerEnvironment.{key} is missing or not a string"),
                })
        };
        Ok(Handler {
            dir: dir.to_path_buf(),
            name,
            config_folder: folder("configFolder")?,
            status_folder: folder("statusFolder")?,
            heartbeat_file: folder("heartbeatFile")?,
            log_folder: folder("logFolder")?,
            report_heartbeat,
        })
    }

    pub fn settings_file(&self, seq: u64) -> PathBuf {
        self.config_folder.join(format!("{seq}.settings"))
    }

    pub fn status_file(&self, seq: u64) -> PathBuf {
        self.status_folder.join(format!("{seq}.status"))
    }

    /// Where the guest agent keeps `<thumbprint>.crt` / `.prv`: its library
    /// directory, which holds the handler directory (`Lib.Dir`,
    /// `/var/lib/waagent` by default).
    pub fn cert_dir(&self) -> PathBuf {
        crate::disk::parent(&self.dir).to_path_buf()
    }
}

/// `[0].name` and `[0].handlerEnvironment` of the array WALinuxAgent writes.
fn parse_environment(
    path: &Path,
    bytes: &[u8],
) -> Result<(String, serde_json::Map<String, Value>), ExtensionError> {
    let bad = |reason: &str| ExtensionError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| bad("not JSON"))?;
    let env = v
        .get(0)
        .and_then(|e| e.get("handlerEnvironment"))
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| {
            bad("expected a JSON array whose first element has a handlerEnvironment object")
        })?;
    let name = v
        .get(0)
        .and_then(|e| e.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("vmflow")
        .to_string();
    Ok((name, env))
}

/// `reportHeartbeat` of the manifest (a bool, or the string "true" as
/// WALinuxAgent also accepts).
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<bool, ExtensionError> {
    let bad = |reason: &str| ExtensionError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| bad("not JSON"))?;
    let m = v
        .get(0)
        .and_then(|e| e.get("handlerManifest"))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            bad("expected a JSON array whose first element has a handlerManifest object")
        })?;
    Ok(match m.get("reportHeartbeat") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// The sequence number to act on: `ConfigSequenceNumber` when the guest
/// agent set it, else the highest `<N>.settings` in the config folder, else 0
/// (the guest agent writes an empty `0.settings` for an extension without
/// settings).
pub fn pick_seq(
    fs: &dyn Fs,
    config_folder: &Path,
    env: Option<&str>,
) -> Result<u64, ExtensionError> {
    if let Some(s) = env.map(str::trim).filter(|s| !s.is_empty()) {
        return s.parse().map_err(|_| ExtensionError::Malformed {
            path: config_folder.to_path_buf(),
            reason: format!("ConfigSequenceNumber={s:?} is not a sequence number"),
        });
    }
    let names = match fs.list(config_folder) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ExtensionError::io(config_folder)(e)),
    };
    Ok(names
        .iter()
        .filter_map(|n| n.strip_suffix(".settings")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0))
}

/// The last sequence number `enable` applied; `None` when there is none
/// (or the file is unreadable: then the settings are applied again, which
/// is always safe).
pub fn read_mrseq(fs: &dyn Fs, handler_dir: &Path) -> Option<u64> {
    let b = fs.read(&handler_dir.join("mrseq")).ok()?;
    std::str::from_utf8(&b).ok()?.trim().parse().ok()
}

/// The .deb the handler zip carries (`vmflow_<version>_<arch>.deb` at the
/// handler root).
pub fn find_deb(fs: &dyn Fs, handler_dir: &Path) -> Result<PathBuf, ExtensionError> {
    let mut debs: Vec<String> = fs
        .list(handler_dir)
        .map_err(ExtensionError::io(handler_dir))?
        .into_iter()
        .filter(|n| n.starts_with("vmflow_") && n.ends_with(".deb"))
        .collect();
    debs.sort();
    match debs.as_slice() {
        [one] => Ok(handler_dir.join(one)),
        [] => Err(ExtensionError::Malformed {
            path: handler_dir.to_path_buf(),
            reason: "no vmflow_*.deb in the handler directory".into(),
        }),
        _ => Err(ExtensionError::Malformed {
            path: handler_dir.to_path_buf(),
            reason: format!("more than one vmflow_*.deb: {}", debs.join(", ")),
        }),
    }
}

/// The exe the Windows handler zip carries (`bin\vmflow.exe`), which
/// `install` copies to where the service runs it from.
pub fn find_exe(fs: &dyn Fs, handler_dir: &Path) -> Result<PathBuf, ExtensionError> {
    let exe = handler_dir.join("bin").join("vmflow.exe");
    match fs.len(&exe) {
        Ok(Some(_)) => Ok(exe),
        Ok(None) => Err(ExtensionError::Malformed {
            path: handler_dir.to_path_buf(),
            reason: "no bin\\vmflow.exe in the handler directory".into(),
        }),
        Err(e) => Err(ExtensionError::io(exe)(e)),
    }
}
