//! The agent's checkpoint file: the engine's state and the source's position,
//! taken together between two packets. Replaced atomically (write, fsync,
//! rename, fsync the folder), so a crash leaves the old one or the new one.
//!
//! Records produced after a checkpoint may already be in the spool when the
//! agent dies; the checkpoint says how many records preceded it, the spool
//! how many it holds, and the resumed run skips the difference.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::disk::{self, Fs};
use crate::observe::ObserverState;
use crate::pipeline::EngineState;

const VERSION: u32 = 1;

/// Why a checkpoint could not be written or used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint: {}: encoding: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error(
        "checkpoint: {}: {what}; move it away to start from the beginning of the source",
        path.display()
    )]
    Damaged { path: PathBuf, what: String },
    #[error("checkpoint: {}: version {found} (this agent writes {VERSION})", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error(
        "checkpoint: {}: belongs to {found}, not {expected}; move it away or point the source back",
        path.display()
    )]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
pub struct Checkpoint<P> {
    pub version: u32,
    /// What the state belongs to (a source kind and place): a checkpoint of
    /// another source is refused rather than misapplied.
    pub source: String,
    pub engine: EngineState,
    pub position: P,
    /// The observer's windows and tables when observations are shipped
    /// (`[observe] ship`); absent in checkpoints written before it was.
    #[serde(default)]
    pub observer: Option<ObserverState>,
}

impl<P> Checkpoint<P> {
    pub fn new(source: String, engine: EngineState, position: P) -> Self {
        Checkpoint {
            version: VERSION,
            source,
            engine,
            position,
            observer: None,
        }
    }
}

/// File layout: magic, CRC32 of the body, body (MessagePack).
const MAGIC: &[u8; 4] = b"VMCK";

/// Replaces the checkpoint at `path` atomically and durably (0600). A full
/// disk leaves the old checkpoint and no temporary file.
pub fn save<P: Serialize>(
    fs: &dyn Fs,
    path: &Path,
    ck: &Checkpoint<P>,
) -> Result<(), CheckpointError> {
    write_envelope(fs, path, ck)
}

/// Replaces `path` with `body` in the checkpoint envelope (magic, CRC,
/// MessagePack), atomically and durably: what every checkpoint file is,
/// whatever its body (the flow-log source's holds no engine).
pub fn write_envelope<T: Serialize>(
    fs: &dyn Fs,
    path: &Path,
    body: &T,
) -> Result<(), CheckpointError> {
    let body = rmp_serde::to_vec(body).map_err(|source| CheckpointError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::with_capacity(body.len() + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    fs.create_dir_all(disk::parent(path))
        .and_then(|_| disk::replace(fs, path, &bytes))
        .map_err(io_error(path))
}

/// The checkpoint at `path` for `source`; `None` if there is none yet.
pub fn load<P: DeserializeOwned>(
    path: &Path,
    source: &str,
) -> Result<Option<Checkpoint<P>>, CheckpointError> {
    let Some(ck) = read_envelope::<Checkpoint<P>>(path)? else {
        return Ok(None);
    };
    check(path, ck.version, &ck.source, source)?;
    Ok(Some(ck))
}

/// A checkpoint body of this agent's version that belongs to `expected`.
pub fn check(
    path: &Path,
    version: u32,
    found: &str,
    expected: &str,
) -> Result<(), CheckpointError> {
    if version != VERSION {
        return Err(CheckpointError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if found != expected {
        return Err(CheckpointError::Foreign {
            path: path.to_path_buf(),
            found: found.to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}

/// The checkpoint version this agent writes.
pub const CHECKPOINT_VERSION: u32 = VERSION;

/// The body of the checkpoint envelope at `path`; `None` if there is none.
pub fn read_envelope<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let damaged = |what: String| CheckpointError::Damaged {
        path: path.to_path_buf(),
        what,
    };
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(damaged("not a vmflow checkpoint".into()));
    }
    let body = &bytes[8..];
    if crc32fast::hash(body).to_le_bytes() != bytes[4..8] {
        return Err(damaged("damaged (checksum mismatch)".into()));
    }
    let body: T = rmp_serde::from_slice(body).map_err(|e| damaged(format!("unreadable ({e})")))?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 3 of issue 10: a checkpoint that cannot be written on a full
    /// disk leaves the old one and no temporary file.
    #[test]
    fn a_full_disk_keeps_the_old_checkpoint_and_no_tmp() {
        use crate::disk::sim::SimFs;
        let fs = SimFs::new();
        let path = Path::new("/s/folder.checkpoint");
        let cfg = Config::default();
        let mut state = None;
        run_inline(&cfg, VecSink::default(), InlineOptions::default(), |feed| {
            state = Some(feed.checkpoint()?);
            Ok::<_, crate::pipeline::PipelineError>(())
        });
        let state = rmp_serde::to_vec(&state.unwrap()).unwrap();
        let ck = |n: u64| {
            let engine = rmp_serde::from_slice(&state).unwrap();
            Checkpoint::new("t".into(), engine, vec![n; 4000])
        };
        save(&fs, path, &ck(1)).unwrap();
        let before = fs.read(path).unwrap();
        fs.set_capacity(Some(fs.used() + 100));
        let e = save(&fs, path, &ck(2)).unwrap_err().to_string();
        assert!(e.contains("No space"), "{e}");
        assert_eq!(fs.read(path).unwrap(), before);
        assert_eq!(fs.list(Path::new("/s")).unwrap(), vec!["folder.checkpoint"]);
    }

    /// A checkpoint written before the observer's state was part of it
    /// still loads (without one), and one with it gives it back.
    #[test]
    fn the_observer_state_is_optional_and_round_trips() {
        #[derive(Serialize)]
        struct Before {
            version: u32,
            source: String,
            engine: EngineState,
            position: u64,
        }
        let cfg = Config::default();
        let mut state = None;
        run_inline(&cfg, VecSink::default(), InlineOptions::default(), |feed| {
            state = Some(feed.checkpoint()?);
            Ok::<_, crate::pipeline::PipelineError>(())
        });
        let engine = state.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck");
        let before = Before {
            version: VERSION,
            source: "t".into(),
            engine,
            position: 7,
        };
        write_envelope(&disk::StdFs, &path, &before).unwrap();
        let ck = load::<u64>(&path, "t").unwrap().unwrap();
        assert_eq!((ck.position, ck.observer.is_none()), (7, true));
        let engine = ck.engine;

        // An observer that has seen half of a failed-access pattern.
        let mut observer =
            crate::observe::Observer::new(crate::config::ObserveConfig::default(), vec![], None);
        let mut r = crate::testkit::record(1, 5);
        r.proto = 6;
        r.direction = vmflow_proto::Direction::Inbound;
        r.fwd_tcp_flags = 0x02;
        r.dst_port = 3389;
        let mut out = Vec::new();
        observer.record(&r, &mut out);
        let mut ck = Checkpoint::new("t".into(), engine, 8u64);
        ck.observer = Some(observer.state());
        save(&disk::StdFs, &path, &ck).unwrap();
        let back = load::<u64>(&path, "t").unwrap().unwrap().observer.unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&observer.state()).unwrap()
        );
    }

    use crate::capture::CaptureReader;
    use crate::config::Config;
    use crate::export::VecSink;
    use crate::pipeline::{run_inline, InlineOptions};

    /// A real checkpoint, cut and bit-flipped: the checksum refuses every
    /// damaged file; and a damaged body that still decodes (what the checksum
    /// would have caught) never makes a run panic.
    #[test]
    fn damaged_checkpoints_are_errors_not_panics() {
        let mut pcap = Vec::new();
        let p = crate::synth::SynthParams::new(3_000, 50).seed(9);
        let cfg = Config::default();
        crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
        let mut state = None;
        run_inline(&cfg, VecSink::default(), InlineOptions::default(), |feed| {
            let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
            for _ in 0..1_500 {
                feed.packet(r.next_packet().unwrap().unwrap());
            }
            state = Some(feed.checkpoint()?);
            Ok::<_, crate::pipeline::PipelineError>(())
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck");
        save(
            &disk::StdFs,
            &path,
            &Checkpoint::new("t".into(), state.unwrap(), 7u64),
        )
        .unwrap();
        let good = std::fs::read(&path).unwrap();
        assert!(load::<u64>(&path, "t").unwrap().is_some());
        assert!(load::<u64>(&path, "other").is_err());
        let mut rng = crate::synth::Rng::new(3);
        let mut decoded = 0;
        for i in 0..400 {
            let mut b = good.clone();
            if i % 4 == 0 {
                b.truncate(rng.below(good.len() as u64) as usize);
            } else {
                for _ in 0..1 + i % 3 {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
            }
            if b == good {
                continue;
            }
            std::fs::write(&path, &b).unwrap();
            assert!(load::<u64>(&path, "t").is_err(), "damage {i} accepted");
            let Some(body) = b.get(8..) else { continue };
            if let Ok(ck) = rmp_serde::from_slice::<Checkpoint<u64>>(body) {
                decoded += 1;
                let opts = InlineOptions {
                    restore: Some(Box::new(ck.engine)),
                    ..InlineOptions::default()
                };
                run_inline(&cfg, VecSink::default(), opts, |feed| {
                    let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
                    while let Some(p) = r.next_packet().unwrap() {
                        feed.packet(p);
                    }
                    Ok::<_, crate::pipeline::PipelineError>(())
                });
            }
        }
        assert!(decoded > 10, "damaged bodies that decode: {decoded}");
    }
}
