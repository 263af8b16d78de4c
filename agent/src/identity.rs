//! Which record stream a spool carries: the source and the settings that
//! shape its records. A restarted agent with a deterministic source skips
//! the records its spool already took; that is only right for the same
//! stream, so the spool records what it carries and a run for another one is
//! either a new stream (nothing pending, nothing to lose) or refused.

use std::io::Read;
use std::path::PathBuf;

use crate::capture::SourceError;
use crate::config::Config;
use crate::export::spool::{Spool, SpoolError, StreamId};

/// FNV-1a: stable across Rust versions and platforms, unlike the standard
/// hasher (fingerprints outlive upgrades).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The settings that decide which records a packet stream gives: flow
/// timeouts and bounds, local networks, and the batching that timeouts are
/// checked at. Threads do not (output never depends on them).
fn settings(cfg: &Config) -> u64 {
    fnv(format!(
        "{:?}|{:?}|{}|{}|{}",
        cfg.local_nets,
        cfg.flow,
        cfg.pipeline.partitions,
        cfg.pipeline.batch_packets,
        cfg.pipeline.batch_time.ns()
    )
    .as_bytes())
}

fn id(text: String) -> StreamId {
    StreamId {
        fingerprint: fnv(text.as_bytes()).max(1),
        text,
    }
}

/// Capture files read once: each file's path, length and a CRC of its first
/// 64 KiB (the same path holding another capture is another stream).
pub fn files(cfg: &Config, paths: &[PathBuf]) -> Result<StreamId, SourceError> {
    let mut parts = Vec::with_capacity(paths.len());
    for p in paths {
        let mut f = std::fs::File::open(p).map_err(|e| SourceError::io(p, e))?;
        let len = f.metadata().map_err(|e| SourceError::io(p, e))?.len();
        let mut head = vec![0u8; 64 << 10];
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(SourceError::io(p, e)),
            }
        }
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        parts.push(format!(
            "{} ({len} bytes, crc {:08x})",
            abs.display(),
            crc32fast::hash(&head[..n])
        ));
    }
    // Without a filter the text is what it always was: spools written
    // before filters existed resume as the same stream.
    let filter = cfg
        .source
        .filter
        .as_deref()
        .map_or(String::new(), |f| format!("; filter {f:?}"));
    Ok(id(format!(
        "files {}{filter}; settings {:016x}",
        parts.join(", "),
        settings(cfg)
    )))
}

/// A followed source (capture folder, Blob container), named by its
/// checkpoint key.
pub fn followed(cfg: &Config, key: &str) -> StreamId {
    id(format!("{key}; settings {:016x}", settings(cfg)))
}

/// Live capture: never resumed by skipping, so only the name matters.
pub fn live() -> StreamId {
    id("live capture".into())
}

/// A followed source resuming: `produced` is how many records its
/// checkpoint says were produced (`None`: no checkpoint, it starts from the
/// beginning). Records the spool holds beyond that were spooled by a run
/// killed after the checkpoint and come again: they are skipped. Returns
/// how many (see [`settle`]).
pub fn resume(
    spool: &mut Spool,
    want: &StreamId,
    produced: Option<u64>,
) -> Result<u64, SpoolError> {
    let at = produced.unwrap_or(0);
    let spooled = spool.end_record();
    if spooled < at {
        tracing::warn!(
            "the spool holds {spooled} records, the checkpoint says {at} were produced: \
             was the spool removed? continuing from the checkpoint"
        );
    }
    settle(spool, want, spooled.saturating_sub(at), produced.is_none())
}

/// Settles which stream `spool` carries for a run of `want` that would skip
/// `skip` records already spooled, and returns the skip to use. A stream
/// that changed is fine when nothing is skipped; with records to skip it
/// becomes a new stream if the spool holds nothing unacknowledged and
/// `restartable` (the source starts from its beginning), else it is refused.
pub fn settle(
    spool: &mut Spool,
    want: &StreamId,
    skip: u64,
    restartable: bool,
) -> Result<u64, SpoolError> {
    let have = spool.identity();
    if have.fingerprint == want.fingerprint {
        return Ok(skip);
    }
    let dir = spool.dir().to_path_buf();
    if have.fingerprint == 0 {
        // A new spool, or one written before spools recorded their stream.
        spool.set_identity(want)?;
        return Ok(skip);
    }
    if skip == 0 {
        tracing::info!(
            "{}: the record stream was {}, now {}; nothing to skip, so it goes on",
            dir.display(),
            have.text,
            want.text
        );
        spool.set_identity(want)?;
        return Ok(0);
    }
    let pending = spool.stats().batches;
    if restartable && pending == 0 {
        tracing::info!(
            "{}: held {} (all delivered); starting a new record stream for {}",
            dir.display(),
            have.text,
            want.text
        );
        spool.new_stream(want)?;
        return Ok(0);
    }
    Err(SpoolError::Belongs {
        dir,
        pending,
        theirs: have.text,
        ours: format!("{} (it would skip {skip} records of the other)", want.text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_content_and_settings() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.pcap");
        std::fs::write(&a, b"one capture").unwrap();
        let cfg = Config::default();
        let x = files(&cfg, std::slice::from_ref(&a)).unwrap();
        assert_eq!(x, files(&cfg, std::slice::from_ref(&a)).unwrap());
        std::fs::write(&a, b"another one").unwrap();
        let y = files(&cfg, std::slice::from_ref(&a)).unwrap();
        assert_ne!(x.fingerprint, y.fingerprint);
        let mut c2 = Config::default();
        c2.flow.idle_timeout = crate::config::Seconds(c2.flow.idle_timeout.get() + 1.0);
        assert_ne!(y, files(&c2, std::slice::from_ref(&a)).unwrap());
        c2 = Config::default();
        c2.pipeline.threads = 7;
        assert_eq!(y, files(&c2, &[a]).unwrap(), "threads shape nothing");
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_filter_is_part_of_a_file_stream_and_no_filter_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.pcap");
        std::fs::write(&a, b"one capture").unwrap();
        let plain = files(&Config::default(), std::slice::from_ref(&a)).unwrap();
        // The text spools written before filters existed carry.
        assert!(plain.text.starts_with("files "), "{}", plain.text);
        assert!(!plain.text.contains("filter"), "{}", plain.text);
        let mut c = Config::default();
        c.source.filter = Some("tcp port 443".into());
        let web = files(&c, std::slice::from_ref(&a)).unwrap();
        assert_ne!(plain.fingerprint, web.fingerprint);
        c.source.filter = Some("udp".into());
        assert_ne!(web, files(&c, &[a]).unwrap());
    }
}
