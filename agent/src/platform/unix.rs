//! Unix: signals through signal-hook (flags: async-signal-safe by
//! construction), modes 0600/0700, fsync of directories.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What stops the process, for messages ("SIGTERM or SIGINT stops").
pub const STOP_SIGNALS: &str = "SIGTERM or SIGINT";

/// Sets `flag` when SIGTERM or SIGINT arrives, instead of dying.
pub fn on_stop(flag: Arc<AtomicBool>) -> io::Result<()> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// Sets `flag` when SIGHUP arrives.
pub fn on_reload(flag: Arc<AtomicBool>) -> io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flag).map(|_| ())
}

/// Returns when SIGTERM or SIGINT arrives (async loops).
pub async fn stop_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    if let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// New files readable and writable by the owner only (0600), whatever the umask.
pub fn owner_only_file(o: &mut OpenOptions) -> &mut OpenOptions {
    o.mode(0o600)
}

/// New directories (0700) for the owner only.
pub fn owner_only_dir(b: &mut DirBuilder) -> &mut DirBuilder {
    b.mode(0o700)
}

/// Restricts an existing file (0600) or directory (0700) to its owner.
pub fn restrict(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Lets everyone read `f` (0644: a certificate) or only its owner (0600: a key).
pub fn set_public(f: &File, public: bool) -> io::Result<()> {
    let mode = if public { 0o644 } else { 0o600 };
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Makes the directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Tells a file from another that took its name: the inode number.
pub fn file_key(meta: &Metadata) -> u64 {
    meta.ino()
}

/// The memory page size (an AF_PACKET ring's blocks are multiples of it).
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// `export.spool_dir` when the file gives none: systemd's `StateDirectory`
/// when the unit has one (`$STATE_DIRECTORY`, the first of a list), else
/// `/var/lib/vmflow/spool` (the package's unit: the same place).
pub fn default_spool_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(v) if !v.is_empty() => {
            let first = v
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            PathBuf::from(first).join("spool")
        }
        _ => PathBuf::from("/var/lib/vmflow/spool"),
    }
}

/// How many descriptors the process may hold (`None`: no limit).
pub fn max_open_files() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Lets the owner read and write `path` and the members of group `gid`
/// read it (0640; 0750 for a directory): key material a service user must
/// read and nobody else.
pub fn share_with_group(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid))?;
    let mode = if std::fs::metadata(path)?.is_dir() {
        0o750
    } else {
        0o640
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The id of a group by name, through the system's name service
/// (`getent group`, so LDAP or sssd groups resolve too); `None` when
/// there is no such group.
pub fn group_id(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains(['\0', ':', '\n']) {
        return None;
    }
    let out = std::process::Command::new("getent")
        .args(["group", name])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // name:password:gid:members
    let line = String::from_utf8(out.stdout).ok()?;
    line.lines().next()?.split(':').nth(2)?.parse().ok()
}

/// What runs the agent here: systemd.
pub const SERVICE_MANAGER: super::ServiceManager = super::ServiceManager::Systemd;

/// No certificate store here: the extension decrypts with `openssl cms`
/// and the guest agent's `.crt`/`.prv` files; the same items as on Windows,
/// refusing.
pub mod cms {
    use std::io;
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub enum KeySource {
        Store,
        File { path: PathBuf, store_error: String },
    }

    pub fn decrypt_enveloped(
        _der: &[u8],
        _thumbprint: &str,
        _fallback: &Path,
    ) -> io::Result<(Vec<u8>, KeySource)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no LocalMachine\\My certificate store here (Windows only); Linux uses openssl cms",
        ))
    }
}

/// No event log here: errors go to stderr (the journal under systemd).
pub mod event_log {
    pub fn report_error(_source: &str, _message: &str) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the event log is Windows-only",
        ))
    }
}

/// There is no Windows service here: the same items as on Windows, each
/// refusing (systemd runs `vmflow run` on Linux).
pub mod service {
    use std::ffi::OsString;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    pub const NAME: &str = "vmflow";

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "Windows services exist only on Windows; run `vmflow run` under systemd here",
        )
    }

    pub fn data_dir() -> PathBuf {
        PathBuf::from("/etc/vmflow")
    }

    pub fn program_dir() -> PathBuf {
        PathBuf::from("/usr/bin")
    }

    pub fn is_installed() -> io::Result<bool> {
        Err(unsupported())
    }

    pub fn is_running() -> bool {
        false
    }

    pub fn register(_exe: &Path, _args: Vec<OsString>, _auto: bool) -> io::Result<()> {
        Err(unsupported())
    }

    pub fn stop_if_running(_limit: Duration) -> io::Result<bool> {
        Err(unsupported())
    }

    pub fn install(_exe: &Path, _args: Vec<OsString>) -> io::Result<()> {
        Err(unsupported())
    }

    pub fn uninstall(_limit: Duration) -> io::Result<bool> {
        Err(unsupported())
    }

    pub fn start(_limit: Duration) -> io::Result<()> {
        Err(unsupported())
    }

    pub fn stop(_limit: Duration) -> io::Result<()> {
        Err(unsupported())
    }

    pub fn dispatch(_job: fn() -> u32) -> io::Result<()> {
        Err(unsupported())
    }
}
