//! Small real filesystems for disk-full tests: a tmpfs of a given size,
//! mounted on a directory of the test's, unmounted when the test ends.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::netns::sh;

pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`2m`, `64m`) on `dir` (created).
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            sh("id -u").trim() == "0",
            "this test needs root to mount a small tmpfs (run the README's test command)"
        );
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={size} tmpfs {}",
            dir.display()
        ));
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    pub fn resize(&self, size: &str) {
        sh(&format!(
            "mount -o remount,size={size} {}",
            self.dir.display()
        ));
    }

    /// Writes `name` until the filesystem is full; returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0x5au8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "{e}");
                    break;
                }
            }
        }
        p
    }

    /// Bytes free.
    pub fn free(&self) -> u64 {
        let out = sh(&format!(
            "df -B1 --output=avail {} | tail -1",
            self.dir.display()
        ));
        out.trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
