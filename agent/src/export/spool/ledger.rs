//! The spool's ledger: which record stream the spool carries and what is no
//! longer in it.
//!
//! The file holds two fixed slots; an update overwrites the older slot in
//! place and syncs it. Overwriting allocated bytes needs no free space, so a
//! full disk never stops acknowledged data from being freed, and a torn
//! write spoils only the slot being written: the other one, one generation
//! older, is still intact (each slot has its own CRC).
//!
//! ```text
//! slot (512 bytes)  magic "VMLG" | crc32 u32 (of bytes 8..512) | generation u64 | epoch u64
//!                   | head_seq u64 | head_record u64 | acked u64 | fingerprint u64
//!                   | synced_seq u64 | synced_record u64 | identity length u16
//!                   | identity (UTF-8) | zeros
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::disk::{Fs, SharedFs};

pub const SLOT: usize = 512;
const MAGIC: &[u8; 4] = b"VMLG";
const IDENT_LEN: usize = 72;
const IDENT: usize = IDENT_LEN + 2;
const MAX_IDENT: usize = SLOT - IDENT;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub generation: u64,
    /// The record stream's random id: a new one is a new sequence space at
    /// the collector.
    pub epoch: u64,
    /// Every batch below `head_seq` is gone from the spool (acknowledged or
    /// dropped); `head_record` is the record-stream position there.
    pub head_seq: u64,
    pub head_record: u64,
    /// The highest batch the collector acknowledged when this was written.
    pub acked: u64,
    /// What the stream's records come from (source and the settings that
    /// shape records), hashed; 0 = not recorded yet.
    pub fingerprint: u64,
    /// The same, readable, for error messages.
    pub identity: String,
    /// Every batch up to `synced_seq` was durable (so may have been sent):
    /// its number is never given out again, and `synced_record` is the
    /// record position after it.
    pub synced_seq: u64,
    pub synced_record: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Ledger {
    fn encode(&self) -> [u8; SLOT] {
        let mut s = [0u8; SLOT];
        s[..4].copy_from_slice(MAGIC);
        let fields = [
            self.generation,
            self.epoch,
            self.head_seq,
            self.head_record,
            self.acked,
            self.fingerprint,
            self.synced_seq,
            self.synced_record,
        ];
        for (i, v) in fields.iter().enumerate() {
            s[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let mut n = self.identity.len().min(MAX_IDENT);
        while !self.identity.is_char_boundary(n) {
            n -= 1;
        }
        s[IDENT_LEN..IDENT].copy_from_slice(&(n as u16).to_le_bytes());
        s[IDENT..IDENT + n].copy_from_slice(&self.identity.as_bytes()[..n]);
        let crc = crc32fast::hash(&s[8..]);
        s[4..8].copy_from_slice(&crc.to_le_bytes());
        s
    }

    fn decode(s: &[u8]) -> Option<Ledger> {
        let s = s.get(..SLOT)?;
        if &s[..4] != MAGIC || crc32fast::hash(&s[8..]).to_le_bytes() != s[4..8] {
            return None;
        }
        let n = usize::from(u16::from_le_bytes([s[IDENT_LEN], s[IDENT_LEN + 1]])).min(MAX_IDENT);
        Some(Ledger {
            generation: u64_at(s, 8),
            epoch: u64_at(s, 16),
            head_seq: u64_at(s, 24),
            head_record: u64_at(s, 32),
            acked: u64_at(s, 40),
            fingerprint: u64_at(s, 48),
            synced_seq: u64_at(s, 56),
            synced_record: u64_at(s, 64),
            identity: String::from_utf8_lossy(&s[IDENT..IDENT + n]).into_owned(),
        })
    }
}

/// What a ledger file holds.
pub enum Read {
    Missing,
    /// Neither slot is intact.
    Damaged,
    Intact(Ledger),
}

pub fn read(fs: &dyn Fs, path: &Path) -> io::Result<Read> {
    match fs.read(path) {
        Ok(b) => Ok(parse(&b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Read::Missing),
        Err(e) => Err(e),
    }
}

/// The newer intact slot of a ledger file's bytes.
pub fn parse(bytes: &[u8]) -> Read {
    let a = bytes.get(..SLOT).and_then(Ledger::decode);
    let b = bytes.get(SLOT..).and_then(Ledger::decode);
    match (a, b) {
        (Some(a), Some(b)) => Read::Intact(if b.generation > a.generation { b } else { a }),
        (Some(x), None) | (None, Some(x)) => Read::Intact(x),
        (None, None) => Read::Damaged,
    }
}

/// Writes a new ledger file (both slots), replacing any damaged one.
pub fn create(fs: &dyn Fs, path: &Path, l: &mut Ledger) -> io::Result<()> {
    // Generation g lives in slot g % 2: the first one in slot 1.
    l.generation = 1;
    let mut bytes = vec![0u8; SLOT];
    bytes.extend_from_slice(&l.encode());
    crate::disk::replace(fs, path, &bytes)
}

/// Records `l` in the older slot and syncs it.
pub fn update(fs: &dyn Fs, path: &Path, l: &mut Ledger) -> io::Result<()> {
    l.generation += 1;
    let slot = (l.generation % 2) as usize;
    let written = fs
        .write_at(path, (slot * SLOT) as u64, &l.encode())
        .and_then(|_| fs.sync(path));
    if written.is_err() {
        l.generation -= 1;
    }
    written
}

/// The ledger file and its current content, shared by the spool and its
/// sync jobs: every update starts from the newest content and is written
/// whole, so two writers never put an older state back.
pub struct LedgerFile {
    fs: SharedFs,
    pub path: PathBuf,
    state: Mutex<Ledger>,
}

impl LedgerFile {
    pub fn new(fs: SharedFs, path: PathBuf, l: Ledger) -> LedgerFile {
        LedgerFile {
            fs,
            path,
            state: Mutex::new(l),
        }
    }

    pub fn get(&self) -> Ledger {
        self.state.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Applies `f` to the current content and writes it; on failure the
    /// content stays what it was.
    pub fn update(&self, f: impl FnOnce(&mut Ledger)) -> io::Result<()> {
        let mut cur = self
            .state
            .lock()
            .map_err(|_| io::Error::other("ledger lock poisoned"))?;
        let mut l = cur.clone();
        f(&mut l);
        update(&*self.fs, &self.path, &mut l)?;
        *cur = l;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::sim::SimFs;
    use crate::rng::Rng;

    fn sample() -> Ledger {
        Ledger {
            epoch: 0xfeed,
            head_seq: 5,
            head_record: 400,
            acked: 4,
            fingerprint: 99,
            identity: "files: a.pcap".into(),
            ..Ledger::default()
        }
    }

    #[test]
    fn updates_survive_and_a_torn_update_keeps_the_previous_one() {
        let p = Path::new("/s/ledger");
        for seed in 0..300 {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/s")).unwrap();
            let mut l = sample();
            create(&fs, p, &mut l).unwrap();
            l.head_seq = 9;
            update(&fs, p, &mut l).unwrap();
            l.head_seq = 12;
            // No space needed to overwrite the slot.
            fs.set_capacity(Some(fs.used()));
            update(&fs, p, &mut l).unwrap();
            l.head_seq = 15;
            fs.fail_next("sync", libc::EIO);
            assert!(update(&fs, p, &mut l).is_err());
            fs.crash(&mut Rng::new(seed));
            let Read::Intact(got) = read(&fs, p).unwrap() else {
                panic!("seed {seed}: both slots lost");
            };
            assert!(got.head_seq == 12 || got.head_seq == 15, "{got:?}");
        }
    }

    #[test]
    fn long_identities_are_cut_at_a_character() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/s")).unwrap();
        let mut l = sample();
        l.identity = "ä".repeat(400);
        create(&fs, Path::new("/s/l"), &mut l).unwrap();
        let Read::Intact(got) = read(&fs, Path::new("/s/l")).unwrap() else {
            panic!()
        };
        assert_eq!(got.identity.chars().count(), MAX_IDENT / 2);
        fs.flip(Path::new("/s/l"), (SLOT + 100) as u64);
        assert!(matches!(
            read(&fs, Path::new("/s/l")).unwrap(),
            Read::Damaged
        ));
    }
}
