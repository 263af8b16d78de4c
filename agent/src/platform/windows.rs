//! Windows: console control events through tokio (on a thread of their own)
//! and the service's Stop, through [`request_stop`]; no SIGHUP; default
//! ACLs; no directory flush.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What stops the process, for messages.
pub const STOP_SIGNALS: &str = "Ctrl-C, Ctrl-Break or a service stop";

/// The flags to set on a stop request, and whether the console watcher runs.
struct Stop {
    flags: Mutex<Vec<Arc<AtomicBool>>>,
    notify: tokio::sync::Notify,
    requested: AtomicBool,
}

fn stop() -> &'static Stop {
    static STOP: OnceLock<Stop> = OnceLock::new();
    STOP.get_or_init(|| Stop {
        flags: Mutex::new(Vec::new()),
        notify: tokio::sync::Notify::new(),
        requested: AtomicBool::new(false),
    })
}

/// Asks the process to stop as Ctrl-C would: every [`on_stop`] flag is set
/// and every [`stop_requested`] returns. The service's Stop calls this.
pub fn request_stop() {
    let s = stop();
    s.requested.store(true, Ordering::SeqCst);
    if let Ok(flags) = s.flags.lock() {
        for f in flags.iter() {
            f.store(true, Ordering::SeqCst);
        }
    }
    s.notify.notify_waiters();
}

/// Watches the console's control events once per process, on a thread of
/// its own (tokio's handlers need a runtime; the jobs' loops are plain
/// threads).
fn watch_console() -> io::Result<()> {
    static STARTED: OnceLock<io::Result<()>> = OnceLock::new();
    let r = STARTED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registering inside the runtime: a failure (no console) is reported
        // here, not lost on the thread.
        let (c, b) = rt.block_on(async {
            (
                tokio::signal::windows::ctrl_c(),
                tokio::signal::windows::ctrl_break(),
            )
        });
        let (mut c, mut b) = (c?, b?);
        std::thread::Builder::new()
            .name("console-events".into())
            .spawn(move || {
                rt.block_on(async {
                    tokio::select! {
                        _ = c.recv() => {}
                        _ = b.recv() => {}
                    }
                });
                request_stop();
            })?;
        Ok(())
    });
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// Sets `flag` on Ctrl-C, Ctrl-Break or [`request_stop`]. Without a console
/// (a service) only [`request_stop`] sets it.
pub fn on_stop(flag: Arc<AtomicBool>) -> io::Result<()> {
    let s = stop();
    if s.requested.load(Ordering::SeqCst) {
        flag.store(true, Ordering::SeqCst);
    }
    if let Ok(mut flags) = s.flags.lock() {
        flags.push(flag);
    }
    if let Err(e) = watch_console() {
        tracing::debug!("no console control events ({e}); only a service stop stops");
    }
    Ok(())
}

/// Windows has no SIGHUP: a reload is a restart.
pub fn on_reload(_flag: Arc<AtomicBool>) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows has no SIGHUP; restart the process (or service) to reload",
    ))
}

/// Returns on Ctrl-C, Ctrl-Break or [`request_stop`] (async loops).
pub async fn stop_requested() {
    let s = stop();
    let notified = s.notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if s.requested.load(Ordering::SeqCst) {
        return;
    }
    let _ = watch_console();
    notified.await;
}

/// Windows has no mode bits: a new file gets the default ACL inherited from
/// its directory. Under ProgramData (where the installer puts the spool and
/// state) that is Administrators and SYSTEM full control, users read; the
/// spool and state directories are only as private as that folder.
pub fn owner_only_file(o: &mut OpenOptions) -> &mut OpenOptions {
    o
}

/// As [`owner_only_file`]: the parent's inherited ACL.
pub fn owner_only_dir(b: &mut DirBuilder) -> &mut DirBuilder {
    b
}

/// Nothing to change without writing ACLs (see [`owner_only_file`]).
pub fn restrict(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Nothing: a key's privacy comes from its folder's ACL on Windows.
pub fn set_public(_f: &File, _public: bool) -> io::Result<()> {
    Ok(())
}

/// Nothing. A directory can only be opened for FlushFileBuffers with
/// FILE_FLAG_BACKUP_SEMANTICS and write access, which std cannot ask for and
/// which needs the backup privilege on some volumes; NTFS journals its
/// metadata (creations, renames, removals) itself, so a rename that returned
/// survives a crash once the journal is flushed — at worst the rename of the
/// last second is lost and the old file (still whole, it was synced) stays.
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Tells a file from another that took its name: its creation time (std
/// gives no stable file index on Windows). File-system tunneling can carry
/// a creation time over to a file created under a name deleted less than
/// 15 s before; the caller also checks that the file did not shrink.
pub fn file_key(meta: &Metadata) -> u64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Pages are 4 KiB on every Windows this builds for (live capture, the only
/// user, is Linux-only anyway).
pub fn page_size() -> usize {
    4096
}

/// `export.spool_dir` when the file gives none: `%ProgramData%\vmflow\spool`,
/// where the extension and the service put it too.
pub fn default_spool_dir() -> std::path::PathBuf {
    service::data_dir().join("spool")
}

/// Windows has no descriptor limit of the Unix kind (handles are limited
/// by memory): a budget of 1 000 connections plus the 64 the collector
/// keeps for its files, listener and runtime.
pub fn max_open_files() -> Option<u64> {
    Some(1_064)
}

/// Gives `path` a protected ACL of its own: full control for SYSTEM (the
/// account the service runs as) and Administrators, nobody else, inherited
/// by what is created inside it. There are no Unix groups (`_gid` is
/// meaningless here): "the service may read it" means SYSTEM. Without this a
/// file under ProgramData inherits "Users: read".
pub fn share_with_group(path: &Path, _gid: u32) -> io::Result<()> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SetNamedSecurityInfoW,
        SDDL_REVISION_1, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{
        GetSecurityDescriptorDacl, DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
    };
    // P: protected (no inheritance from ProgramData); OICI: inherited by
    // files and folders inside; FA: full access; SY, BA: SYSTEM, Administrators.
    let sddl: Vec<u16> = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
        .encode_utf16()
        .chain([0])
        .collect();
    let name: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut sd = std::ptr::null_mut();
    // SAFETY: sddl is a NUL-terminated UTF-16 string alive for the call;
    // on success `sd` receives a LocalAlloc'd descriptor we free below.
    if unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    } == 0
    {
        return Err(io::Error::last_os_error());
    }
    let (mut present, mut defaulted) = (0, 0);
    let mut dacl = std::ptr::null_mut();
    // SAFETY: sd is the valid descriptor from above; the out pointers are
    // live locals. `dacl` points into `sd`, which outlives its use.
    let got = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
    let result = if got == 0 || present == 0 {
        Err(io::Error::other("no DACL in the security descriptor"))
    } else {
        // SAFETY: name is a NUL-terminated UTF-16 path alive for the call;
        // dacl points into `sd` (alive); owner, group and SACL are not set.
        let rc = unsafe {
            SetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc as i32))
        }
    };
    // SAFETY: sd was LocalAlloc'd by the conversion above and is freed
    // once, after its last use (dacl is not used past this point).
    unsafe { LocalFree(sd) };
    result
}

/// No Unix groups on Windows.
pub fn group_id(_name: &str) -> Option<u32> {
    None
}

/// What runs the agent here: the Service Control Manager.
pub const SERVICE_MANAGER: super::ServiceManager = super::ServiceManager::Scm;

pub mod cms;
pub mod event_log;
pub mod service;
