//! The filesystem seam under every file whose loss or damage would lose or
//! double records: the agent's spool and checkpoints, the collector's store.
//!
//! Everything they do to disk goes through [`Fs`], path by path, so that a
//! model filesystem ([`sim::SimFs`], tests only) can stand in for the real one
//! and crash, tear writes, run out of space and record the order of syncs —
//! the way Vector's disk buffer is tested. [`StdFs`] is the real thing.
//!
//! Files are created 0600 and directories 0700 whatever the umask: they hold
//! flow records and sequence state, which are nobody else's business (on
//! Windows: the ACL inherited from the folder, see `platform`).
//!
//! Windows file semantics hold by construction: [`StdFs`] holds no handle
//! between calls, so nothing renames or removes a file that is still open;
//! `rename` over an existing file is std's MoveFileExW with
//! MOVEFILE_REPLACE_EXISTING; `sync` is FlushFileBuffers; `sync_dir` is a
//! no-op there (`platform::sync_dir` says why).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::platform;

#[cfg(test)]
pub mod sim;

/// What storage code may do to disk. Paths are absolute or relative to the
/// process; every call opens what it needs and closes it again, so an
/// implementation holds no handles between calls.
pub trait Fs: Send + Sync {
    /// Creates `dir` and its missing parents (0700).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir` (files and directories).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The length of a file, `None` if there is no such file.
    fn len(&self, path: &Path) -> io::Result<Option<u64>>;
    fn is_dir(&self, path: &Path) -> bool;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Fills `buf` from `offset`; a file too short is an error.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Appends `data`, creating the file (0600) if missing. On error a prefix
    /// of `data` may have been written: callers cut back with `set_len`.
    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Overwrites `data.len()` bytes at `offset` of an existing file.
    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Creates or truncates `path` (0600) and writes `data`.
    fn write_new(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (fdatasync).
    fn sync(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Restricts an existing file (0600) or directory (0700) to its owner.
    fn restrict(&self, path: &Path) -> io::Result<()>;
    /// Lets group `gid` read an existing file (0640) or enter a directory
    /// (0750); the owner alone still writes. For files a service user must
    /// read but not change, such as the extension's agent configuration.
    fn share_with_group(&self, path: &Path, gid: u32) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// When the file was last written, where the filesystem says (a figure
    /// for people, never for correctness).
    fn modified(&self, _path: &Path) -> Option<std::time::SystemTime> {
        None
    }
}

pub type SharedFs = Arc<dyn Fs>;

/// The real filesystem.
pub fn real() -> SharedFs {
    Arc::new(StdFs)
}

/// Replaces `path` with `data` so that a crash leaves either the old or the
/// new content: write a temporary file, sync it, rename it over, sync the
/// directory. A failure removes the temporary file (a full disk must not
/// leave half files behind) and leaves `path` as it was.
pub fn replace(fs: &dyn Fs, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let written = fs.write_new(&tmp, data).and_then(|_| fs.sync(&tmp));
    if let Err(e) = written {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    if let Err(e) = fs.rename(&tmp, path) {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.sync_dir(parent(path))
}

/// `name.tmp` beside `name`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub struct StdFs;

fn options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    platform::owner_only_file(&mut o);
    o
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        platform::owner_only_dir(&mut b).create(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Ok(n) = e?.file_name().into_string() {
                names.push(n);
            }
        }
        Ok(names)
    }

    fn len(&self, path: &Path) -> io::Result<Option<u64>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn modified(&self, path: &Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }

    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        options()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(data)
    }

    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)
    }

    fn write_new(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?
            .write_all(data)
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(len)
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        // Opened for writing: Windows' FlushFileBuffers refuses a read-only
        // handle (Access denied).
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        platform::sync_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn restrict(&self, path: &Path) -> io::Result<()> {
        platform::restrict(path)
    }

    fn share_with_group(&self, path: &Path, gid: u32) -> io::Result<()> {
        crate::platform::share_with_group(path, gid)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir(dir)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Files 0600 and directories 0700 even with umask 000, and an existing
    /// 0644 file is restricted on request.
    #[test]
    fn owner_only_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file creation mask; the
        // test restores it, and no other test creates files expecting a mask.
        let old = unsafe { libc::umask(0) };
        let fs = StdFs;
        let dir = d.path().join("a/b");
        fs.create_dir_all(&dir).unwrap();
        fs.append(&dir.join("x"), b"1").unwrap();
        fs.write_new(&dir.join("y"), b"2").unwrap();
        replace(&fs, &dir.join("z"), b"3").unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        assert_eq!(mode(&d.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        for f in ["x", "y", "z"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert!(!dir.join("z.tmp").exists());
        std::fs::write(d.path().join("w"), b"").unwrap();
        std::fs::set_permissions(d.path().join("w"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        fs.restrict(&d.path().join("w")).unwrap();
        assert_eq!(mode(&d.path().join("w")), 0o600);
    }

    /// A shared file is 0640 and a shared directory 0750, both in the group
    /// given (here the process's own, which any user may hand a file to).
    #[test]
    fn shared_with_a_group_reads_but_does_not_write() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let fs = StdFs;
        // SAFETY: getegid has no preconditions and cannot fail.
        let gid = unsafe { libc::getegid() };
        let dir = d.path().join("shared");
        fs.create_dir_all(&dir).unwrap();
        replace(&fs, &dir.join("f"), b"x").unwrap();
        fs.share_with_group(&dir, gid).unwrap();
        fs.share_with_group(&dir.join("f"), gid).unwrap();
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(mode(&dir.join("f")), 0o640);
        assert_eq!(std::fs::metadata(dir.join("f")).unwrap().gid(), gid);
        fs.remove(&dir.join("f")).unwrap();
        fs.remove_dir(&dir).unwrap();
        assert!(!dir.exists());
    }
}
