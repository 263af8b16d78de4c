//! A model filesystem for crash and disk-full tests.
//!
//! It keeps, per file, the content as of the last `sync` plus the writes made
//! since, and per directory the entries as of the last `sync_dir` plus the
//! creations, renames and removals since. A [`SimFs::crash`] keeps a random
//! prefix of each list (the last kept write possibly torn), which is what a
//! power cut may leave on a journaling filesystem: operations reach the disk
//! in order, but nothing after the last sync is promised. A capacity makes
//! writes fail with ENOSPC after writing what fits, as a real disk does.
//! Every sync, rename and removal is logged so tests can prove orderings.
//!
//! Directories themselves are durable once created (the stores create theirs
//! once, at setup).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Fs;
use crate::rng::Rng;

#[derive(Clone, Debug)]
enum FileOp {
    Write { at: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    ops: Vec<FileOp>,
    modified: Option<std::time::SystemTime>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
}

#[derive(Clone, Debug, Default)]
struct Dir {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    ops: Vec<DirOp>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    next: u64,
    capacity: Option<u64>,
    log: Vec<String>,
    /// Errors to return from the next operations of a kind ("append", "sync", …).
    inject: Vec<(&'static str, i32)>,
}

/// See the module documentation.
#[derive(Default)]
pub struct SimFs {
    st: Mutex<State>,
}

fn split(path: &Path) -> (PathBuf, String) {
    let dir = super::parent(path).to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    fn lookup(&self, path: &Path) -> Option<u64> {
        let (dir, name) = split(path);
        self.dirs.get(&dir)?.entries.get(&name).copied()
    }

    fn used(&self) -> u64 {
        let mut live: Vec<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.entries.values().copied())
            .collect();
        live.sort_unstable();
        live.dedup();
        live.iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.data.len() as u64)
            .sum()
    }

    fn injected(&mut self, kind: &str) -> io::Result<()> {
        if let Some(i) = self.inject.iter().position(|(k, _)| *k == kind) {
            let (_, errno) = self.inject.remove(i);
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path);
        let ino = self.next;
        let d = self
            .dirs
            .get_mut(&dir)
            .ok_or_else(|| not_found(super::parent(path)))?;
        self.next += 1;
        d.entries.insert(name.clone(), ino);
        d.ops.push(DirOp::Link(name, ino));
        self.inodes.insert(ino, Inode::default());
        Ok(ino)
    }

    /// Writes what fits under the capacity; ENOSPC if not all of it did.
    fn write(&mut self, ino: u64, at: u64, data: &[u8]) -> io::Result<()> {
        let len = self.inodes[&ino].data.len() as u64;
        let grow = (at + data.len() as u64).saturating_sub(len);
        let room = match self.capacity {
            Some(c) => c.saturating_sub(self.used()),
            None => u64::MAX,
        };
        let fits = if grow <= room {
            data.len()
        } else {
            (data.len() as u64 - (grow - room)) as usize
        };
        let n = self.inodes.get_mut(&ino).expect("inode");
        let end = at as usize + fits;
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[at as usize..end].copy_from_slice(&data[..fits]);
        n.modified = Some(std::time::SystemTime::now());
        n.ops.push(FileOp::Write {
            at,
            data: data[..fits].to_vec(),
        });
        if fits < data.len() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

impl SimFs {
    /// Makes the files' times unknown, as on a filesystem that keeps none.
    pub fn forget_times(&self) {
        for n in self.st.lock().unwrap().inodes.values_mut() {
            n.modified = None;
        }
    }

    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Bytes the files may hold in all; `None`: unbounded.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.st.lock().unwrap().capacity = bytes;
    }

    pub fn used(&self) -> u64 {
        self.st.lock().unwrap().used()
    }

    /// The next operation of `kind` (`append`, `write_at`, `write_new`,
    /// `set_len`, `sync`, `sync_dir`, `rename`, `remove`) fails with `errno`.
    pub fn fail_next(&self, kind: &'static str, errno: i32) {
        self.st.lock().unwrap().inject.push((kind, errno));
    }

    /// The syncs, renames and removals so far, in order.
    pub fn log(&self) -> Vec<String> {
        self.st.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.st.lock().unwrap().log.clear();
    }

    /// Power loss: each file keeps its synced content plus a random prefix of
    /// the writes since (the last one possibly torn); each directory keeps
    /// its synced entries plus a random prefix of the changes since.
    pub fn crash(&self, dice: &mut Rng) {
        let mut st = self.st.lock().unwrap();
        for d in st.dirs.values_mut() {
            let keep = dice.below(d.ops.len() as u64 + 1) as usize;
            let mut e = d.durable.clone();
            for op in &d.ops[..keep] {
                match op {
                    DirOp::Link(n, i) => {
                        e.insert(n.clone(), *i);
                    }
                    DirOp::Unlink(n) => {
                        e.remove(n);
                    }
                }
            }
            d.entries = e.clone();
            d.durable = e;
            d.ops.clear();
        }
        for n in st.inodes.values_mut() {
            let keep = dice.below(n.ops.len() as u64 + 1) as usize;
            let mut data = n.durable.clone();
            for op in &n.ops[..keep] {
                apply(&mut data, op);
            }
            if let Some(FileOp::Write { at, data: w }) = n.ops.get(keep) {
                let torn = dice.below(w.len() as u64 + 1) as usize;
                apply(
                    &mut data,
                    &FileOp::Write {
                        at: *at,
                        data: w[..torn].to_vec(),
                    },
                );
            }
            n.data = data.clone();
            n.durable = data;
            n.ops.clear();
        }
        let mut live: Vec<u64> = st
            .dirs
            .values()
            .flat_map(|d| d.entries.values().copied())
            .collect();
        live.sort_unstable();
        st.inodes.retain(|i, _| live.binary_search(i).is_ok());
        st.inject.clear();
        st.log.push("crash".into());
    }

    /// Damages a byte of a file in place, durably (bit rot, a bad sector).
    pub fn flip(&self, path: &Path, at: u64) {
        let mut st = self.st.lock().unwrap();
        if let Some(i) = st.lookup(path) {
            let n = st.inodes.get_mut(&i).unwrap();
            if let Some(b) = n.data.get_mut(at as usize) {
                *b ^= 0x40;
            }
            if let Some(b) = n.durable.get_mut(at as usize) {
                *b ^= 0x40;
            }
        }
    }
}

fn apply(data: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { at, data: w } => {
            let end = *at as usize + w.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*at as usize..end].copy_from_slice(w);
        }
        FileOp::SetLen(l) => data.resize(*l as usize, 0),
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let mut p = dir.to_path_buf();
        loop {
            st.dirs.entry(p.clone()).or_default();
            match p.parent() {
                Some(q) if !q.as_os_str().is_empty() => p = q.to_path_buf(),
                _ => break,
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.st.lock().unwrap();
        let d = st.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        let mut names: Vec<String> = d.entries.keys().cloned().collect();
        for sub in st.dirs.keys() {
            if sub.parent() == Some(dir) {
                if let Some(n) = sub.file_name() {
                    names.push(n.to_string_lossy().into_owned());
                }
            }
        }
        Ok(names)
    }

    fn len(&self, path: &Path) -> io::Result<Option<u64>> {
        let st = self.st.lock().unwrap();
        Ok(st.lookup(path).map(|i| st.inodes[&i].data.len() as u64))
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.st.lock().unwrap().dirs.contains_key(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.st.lock().unwrap();
        let i = st.lookup(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes[&i].data.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.st.lock().unwrap();
        let i = st.lookup(path).ok_or_else(|| not_found(path))?;
        let d = &st.inodes[&i].data;
        let src = d
            .get(offset as usize..offset as usize + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("append")?;
        let ino = match st.lookup(path) {
            Some(i) => i,
            None => st.create(path)?,
        };
        let at = st.inodes[&ino].data.len() as u64;
        st.write(ino, at, data)
    }

    fn modified(&self, path: &Path) -> Option<std::time::SystemTime> {
        let st = self.st.lock().unwrap();
        st.inodes.get(&st.lookup(path)?)?.modified
    }

    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("write_at")?;
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        st.write(ino, offset, data)
    }

    fn write_new(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("write_new")?;
        let ino = match st.lookup(path) {
            Some(i) => {
                let n = st.inodes.get_mut(&i).unwrap();
                n.data.clear();
                n.ops.push(FileOp::SetLen(0));
                i
            }
            None => st.create(path)?,
        };
        st.write(ino, 0, data)
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("set_len")?;
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        let cur = st.inodes[&ino].data.len() as u64;
        if len > cur {
            let room = st
                .capacity
                .map_or(u64::MAX, |c| c.saturating_sub(st.used()));
            if len - cur > room {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let n = st.inodes.get_mut(&ino).unwrap();
        n.data.resize(len as usize, 0);
        n.ops.push(FileOp::SetLen(len));
        Ok(())
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("sync")?;
        let ino = st.lookup(path).ok_or_else(|| not_found(path))?;
        let n = st.inodes.get_mut(&ino).unwrap();
        n.durable = n.data.clone();
        n.ops.clear();
        st.log.push(format!("sync {}", path.display()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("sync_dir")?;
        let d = st.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        d.durable = d.entries.clone();
        d.ops.clear();
        st.log.push(format!("sync_dir {}", dir.display()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("rename")?;
        let ino = st.lookup(from).ok_or_else(|| not_found(from))?;
        let (fd, fname) = split(from);
        let (td, tname) = split(to);
        if !st.dirs.contains_key(&td) {
            return Err(not_found(&td));
        }
        // Within one directory a rename is one journal operation: the target
        // is replaced first, then the source goes (a crash keeps both names
        // or the new one, never neither).
        let t = st.dirs.get_mut(&td).unwrap();
        t.entries.insert(tname.clone(), ino);
        t.ops.push(DirOp::Link(tname, ino));
        let f = st.dirs.get_mut(&fd).unwrap();
        f.entries.remove(&fname);
        f.ops.push(DirOp::Unlink(fname));
        st.log
            .push(format!("rename {} {}", from.display(), to.display()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("remove")?;
        let (dir, name) = split(path);
        let d = st.dirs.get_mut(&dir).ok_or_else(|| not_found(path))?;
        if d.entries.remove(&name).is_none() {
            return Err(not_found(path));
        }
        d.ops.push(DirOp::Unlink(name));
        st.log.push(format!("remove {}", path.display()));
        Ok(())
    }

    fn restrict(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Logged (`share PATH GID`) so tests can check a file was shared
    /// before it took its final name.
    fn share_with_group(&self, path: &Path, gid: u32) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("share")?;
        if st.lookup(path).is_none() && !st.dirs.contains_key(path) {
            return Err(not_found(path));
        }
        st.log.push(format!("share {} {gid}", path.display()));
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.injected("remove_dir")?;
        let d = st.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        let has_subdir = st.dirs.keys().any(|k| k.parent() == Some(dir));
        if !d.entries.is_empty() || has_subdir {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        st.dirs.remove(dir);
        st.log.push(format!("remove_dir {}", dir.display()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_survives_and_unsynced_may_not() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        fs.append(&d.join("a"), b"hello").unwrap();
        fs.sync(&d.join("a")).unwrap();
        fs.sync_dir(d).unwrap();
        fs.append(&d.join("a"), b" world").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let fs2 = SimFs::new();
            fs2.create_dir_all(d).unwrap();
            fs2.append(&d.join("a"), b"hello").unwrap();
            fs2.sync(&d.join("a")).unwrap();
            fs2.sync_dir(d).unwrap();
            fs2.append(&d.join("a"), b" world").unwrap();
            fs2.append(&d.join("b"), b"new").unwrap();
            fs2.crash(&mut Rng::new(seed));
            let a = fs2.read(&d.join("a")).unwrap();
            assert!(a.starts_with(b"hello") && b"hello world".starts_with(&a[..]));
            seen.insert((a.len(), fs2.len(&d.join("b")).unwrap()));
        }
        // Torn, whole and missing outcomes all occur.
        assert!(seen.iter().any(|(a, _)| *a == 5));
        assert!(seen.iter().any(|(a, _)| *a == 11));
        assert!(seen.iter().any(|(a, _)| *a > 5 && *a < 11));
        assert!(seen.iter().any(|(_, b)| b.is_none()));
        assert_eq!(fs.read(&d.join("a")).unwrap(), b"hello world");
    }

    #[test]
    fn a_full_disk_writes_what_fits_then_fails() {
        let fs = SimFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        fs.set_capacity(Some(8));
        let e = fs.append(&d.join("a"), b"0123456789").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs.read(&d.join("a")).unwrap(), b"01234567");
        fs.set_len(&d.join("a"), 2).unwrap();
        fs.append(&d.join("a"), b"xy").unwrap();
        assert_eq!(fs.used(), 4);
    }

    #[test]
    fn a_rename_never_loses_both_names() {
        for seed in 0..100 {
            let fs = SimFs::new();
            let d = Path::new("/d");
            fs.create_dir_all(d).unwrap();
            fs.write_new(&d.join("state"), b"old").unwrap();
            fs.sync(&d.join("state")).unwrap();
            fs.sync_dir(d).unwrap();
            fs.write_new(&d.join("state.tmp"), b"new").unwrap();
            fs.sync(&d.join("state.tmp")).unwrap();
            fs.rename(&d.join("state.tmp"), &d.join("state")).unwrap();
            fs.crash(&mut Rng::new(seed));
            let s = fs.read(&d.join("state")).unwrap();
            assert!(s == b"old" || s == b"new");
        }
    }
}
