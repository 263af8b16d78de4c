//! The one place where the agent differs by operating system: how the OS
//! asks the process to stop or reload, who may read the files it writes,
//! whether a directory can be flushed, how a file is recognised across
//! renames, and how many descriptors the process may hold. Everything above
//! calls these functions and carries no `cfg` of its own. (The other seam is
//! a whole module: live capture, `capture::live`, is Linux-only; elsewhere a
//! stand-in with the same items refuses with [`LIVE_CAPTURE_UNSUPPORTED`].)
//!
//! | | Unix | Windows |
//! |---|---|---|
//! | stop | SIGTERM, SIGINT | Ctrl-C, Ctrl-Break, console close, shutdown; the service's Stop |
//! | reload | SIGHUP | none: restart the process (or service) |
//! | new files / dirs | 0600 / 0700 whatever the umask | default ACLs of the parent (ProgramData: Administrators and SYSTEM) |
//! | directory sync | fsync of the directory | nothing (see [`sync_dir`]) |
//! | file identity | inode number | creation time |
//! | service | none: `service` refuses (systemd runs `vmflow run`) | `service`: the Service Control Manager |
//! | extension's protected settings | `openssl cms` in `extension` (the guest agent's `.crt`/`.prv`) | `cms`: CryptoAPI (CryptMsg*), `LocalMachine\My` (a PKCS#12 file only if the store lacks it) |
//! | extension's key files | 0640 to the service's group | `share_with_group`: protected ACL, SYSTEM and Administrators |
//! | errors of the service | the journal (stderr) | `event_log`: the Application log, and the log file |

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// What starts, stops and restarts the agent on this system: what the VM
/// extension handler drives (`SERVICE_MANAGER` in each platform file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceManager {
    /// `vmflow.service`, with systemctl.
    Systemd,
    /// The Windows service `vmflow`, through the Service Control Manager.
    Scm,
}

/// What `capture` and `[capture.live]` say where there is no live capture.
pub const LIVE_CAPTURE_UNSUPPORTED: &str = "not available here (the AF_PACKET ring is \
     Linux-only); on Windows, let Network Watcher capture (packet capture to a local path or a storage account) and \
     follow its files with a [[source.folder]] (e.g. path = 'C:\\Captures') or \
     [[source.blob]] source";
