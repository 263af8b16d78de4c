//! The collector's durable output: per agent, hourly NDJSON files (by the
//! records' `first_ns`, UTC) and a `state` file holding the last durable batch
//! sequence number and the committed length of every file.
//!
//! Exactly once: a batch's records are appended and fsynced, then the state
//! (new sequence number, new lengths) is replaced atomically, then the batch
//! is acknowledged. On open, files are cut back to their committed lengths, so
//! a crash between append and commit leaves no partial batch behind, and the
//! agent's resend of that batch is written once.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use vmflow_proto::FlowRecord;

use crate::export::encode_ndjson;

pub struct AgentStore {
    dir: PathBuf,
    last_seq: u64,
    /// The agent's running count of packets its capture lost, as of `last_seq`.
    source_drops: u64,
    files: BTreeMap<String, u64>,
}

impl AgentStore {
    pub fn open(dir: &Path) -> io::Result<AgentStore> {
        fs::create_dir_all(dir)?;
        let mut last_seq = 0;
        let mut source_drops = 0;
        let mut files = BTreeMap::new();
        match fs::read_to_string(dir.join("state")) {
            Ok(text) => {
                for line in text.lines() {
                    let mut w = line.split_whitespace();
                    match (w.next(), w.next(), w.next()) {
                        (Some("seq"), Some(n), None) => last_seq = parse(dir, n)?,
                        (Some("drops"), Some(n), None) => source_drops = parse(dir, n)?,
                        (Some("file"), Some(name), Some(len)) => {
                            files.insert(name.to_string(), parse(dir, len)?);
                        }
                        _ => return Err(bad(dir, line)),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Cut back whatever was written after the last commit.
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".ndjson") {
                continue;
            }
            let committed = files.get(&name).copied().unwrap_or(0);
            let f = OpenOptions::new().write(true).open(entry.path())?;
            if f.metadata()?.len() > committed {
                tracing::warn!(
                    "{}: discarding {} uncommitted bytes from an interrupted batch",
                    entry.path().display(),
                    f.metadata()?.len() - committed
                );
                f.set_len(committed)?;
                f.sync_all()?;
            }
        }
        Ok(AgentStore {
            dir: dir.to_path_buf(),
            last_seq,
            source_drops,
            files,
        })
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn source_drops(&self) -> u64 {
        self.source_drops
    }

    /// Makes a batch durable. Returns false (and writes nothing) for a batch
    /// already held: a resend after a lost ack.
    pub fn write_batch(
        &mut self,
        seq: u64,
        records: &[FlowRecord],
        source_drops: u64,
    ) -> io::Result<bool> {
        if seq <= self.last_seq {
            return Ok(false);
        }
        // Keyed by hour number: the file name is formatted once per file, not per record.
        let mut by_hour: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for r in records {
            let out = by_hour
                .entry(r.first_ns / HOUR_NS)
                .or_insert_with(|| Vec::with_capacity(records.len() * 420));
            encode_ndjson(r, out);
            out.push(b'\n');
        }
        for (hour, bytes) in &by_hour {
            let name = &hour_file(hour * HOUR_NS);
            let path = self.dir.join(name);
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(bytes)?;
            f.sync_data()?;
            *self.files.entry(name.clone()).or_insert(0) += bytes.len() as u64;
        }
        self.last_seq = seq;
        self.source_drops = self.source_drops.max(source_drops);
        self.commit()?;
        Ok(true)
    }

    fn commit(&self) -> io::Result<()> {
        let mut text = format!("seq {}\ndrops {}\n", self.last_seq, self.source_drops);
        for (name, len) in &self.files {
            text.push_str(&format!("file {name} {len}\n"));
        }
        let tmp = self.dir.join("state.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join("state"))?;
        // The rename itself must survive a power loss too.
        File::open(&self.dir)?.sync_all()
    }
}

fn parse(dir: &Path, s: &str) -> io::Result<u64> {
    s.parse().map_err(|_| bad(dir, s))
}

fn bad(dir: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}/state: unreadable line {what:?}", dir.display()),
    )
}

const HOUR_NS: u64 = 3_600_000_000_000;

/// `YYYY-MM-DDTHH.ndjson` (UTC) of a timestamp.
pub fn hour_file(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (y, m, d) = crate::calendar::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}.ndjson", secs % 86_400 / 3_600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmflow_proto::{Direction, EndReason};

    fn rec(first_ns: u64) -> FlowRecord {
        FlowRecord {
            flow_id: first_ns,
            segment: 0,
            is_final: true,
            ip_version: 4,
            proto: 17,
            vlan: None,
            src_addr: "10.0.0.1".parse().unwrap(),
            src_port: 1,
            dst_addr: "10.0.0.2".parse().unwrap(),
            dst_port: 2,
            direction: Direction::Internal,
            first_ns,
            last_ns: first_ns,
            fwd_packets: 1,
            fwd_bytes: 50,
            rev_packets: 0,
            rev_bytes: 0,
            fwd_tcp_flags: 0,
            rev_tcp_flags: 0,
            icmp_type: None,
            icmp_code: None,
            end_reason: EndReason::Idle,
            gap: false,
        }
    }

    #[test]
    fn hour_names() {
        assert_eq!(hour_file(0), "1970-01-01T00.ndjson");
        assert_eq!(hour_file(1_760_000_000_000_000_000), "2025-10-09T08.ndjson");
        assert_eq!(hour_file(951_782_400_000_000_000), "2000-02-29T00.ndjson");
    }

    #[test]
    fn duplicates_and_interrupted_batches_are_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let h = 3_600_000_000_000u64;
        let mut s = AgentStore::open(dir.path()).unwrap();
        assert!(s.write_batch(1, &[rec(h), rec(2 * h)], 0).unwrap());
        assert!(!s.write_batch(1, &[rec(h)], 0).unwrap());
        assert!(s.write_batch(2, &[rec(h + 1)], 7).unwrap());
        // A crash after appending batch 3 but before its commit.
        let f = dir.path().join(hour_file(h));
        let before = fs::read(&f).unwrap();
        let mut junk = before.clone();
        junk.extend_from_slice(b"{\"partial\":");
        fs::write(&f, &junk).unwrap();
        let mut s = AgentStore::open(dir.path()).unwrap();
        assert_eq!(s.last_seq(), 2);
        assert_eq!(s.source_drops(), 7);
        assert_eq!(fs::read(&f).unwrap(), before);
        assert!(s.write_batch(3, &[rec(h + 2)], 7).unwrap());
        let lines = fs::read_to_string(&f).unwrap().lines().count();
        assert_eq!(lines, 3);
    }
}
