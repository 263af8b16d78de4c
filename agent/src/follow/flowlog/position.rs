//! How far into each flow-log blob the source got, and its checkpoint file:
//! the stitcher's state, the position and the count of records produced
//! before it, in the same envelope as every checkpoint (`checkpoint.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::azure::blob::Block;
use crate::disk::Fs;
use crate::flowlog::StitchState;
use crate::follow::checkpoint::{self, CheckpointError};

/// What was read of one blob: its first `blocks` committed blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMark {
    pub blocks: u32,
    /// Their bytes (where the next block starts).
    pub bytes: u64,
    /// CRC32 of their ids and sizes: a block list whose first `blocks`
    /// blocks differ is a rewritten blob, not a longer one.
    pub digest: u32,
    /// The blob's ETag when read: the same ETag in a listing means nothing
    /// new, without asking for the block list.
    pub etag: String,
    /// The hour the blob holds (Unix seconds), for retention.
    pub hour: i64,
}

/// A read the source has started and not yet checkpointed: blocks
/// `from.blocks..blocks` of `blob`. Saved before any of its records is
/// produced, so a resumed run reads exactly those blocks again first (the
/// spool may already hold some of their records, which it then skips).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub blob: String,
    pub from: BlobMark,
    pub blocks: u32,
    /// Digest of the first `blocks` blocks.
    pub digest: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowlogPosition {
    pub blobs: BTreeMap<String, BlobMark>,
    pub pending: Option<Pending>,
}

/// CRC32 over the ids and sizes of `blocks`.
pub fn digest(blocks: &[Block]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for b in blocks {
        h.update(&(b.id.len() as u64).to_le_bytes());
        h.update(b.id.as_bytes());
        h.update(&b.size.to_le_bytes());
    }
    h.finalize()
}

/// The flow-log source's checkpoint body.
#[derive(Serialize, Deserialize)]
pub struct FlowlogCheckpoint {
    pub version: u32,
    /// What the state belongs to (`flowlog:` account, container, prefix).
    pub source: String,
    /// Records produced before this checkpoint: where a resumed run's
    /// record stream continues.
    pub records: u64,
    pub stitch: StitchState,
    pub position: FlowlogPosition,
    /// The observer's windows and tables when observations are shipped
    /// (`[observe] ship`). Last and optional: older checkpoints load.
    #[serde(default)]
    pub observer: Option<crate::observe::ObserverState>,
}

impl FlowlogCheckpoint {
    pub fn new(
        source: String,
        records: u64,
        stitch: StitchState,
        position: FlowlogPosition,
    ) -> Self {
        FlowlogCheckpoint {
            version: checkpoint::CHECKPOINT_VERSION,
            source,
            records,
            stitch,
            position,
            observer: None,
        }
    }
}

pub fn save(fs: &dyn Fs, path: &Path, ck: &FlowlogCheckpoint) -> Result<(), CheckpointError> {
    checkpoint::write_envelope(fs, path, ck)
}

/// The checkpoint at `path` for `source`; `None` if there is none yet.
pub fn load(path: &Path, source: &str) -> Result<Option<FlowlogCheckpoint>, CheckpointError> {
    let Some(ck) = checkpoint::read_envelope::<FlowlogCheckpoint>(path)? else {
        return Ok(None);
    };
    checkpoint::check(path, ck.version, &ck.source, source)?;
    Ok(Some(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_name_their_source() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("flowlog.checkpoint");
        let mut pos = FlowlogPosition::default();
        pos.blobs.insert(
            "a/PT1H.json".into(),
            BlobMark {
                blocks: 3,
                bytes: 900,
                digest: 7,
                etag: "0x1".into(),
                hour: 3600,
            },
        );
        pos.pending = Some(Pending {
            blob: "a/PT1H.json".into(),
            from: BlobMark::default(),
            blocks: 3,
            digest: 7,
        });
        let ck =
            FlowlogCheckpoint::new("flowlog:x".into(), 42, StitchState::default(), pos.clone());
        save(&crate::disk::StdFs, &path, &ck).unwrap();
        let back = load(&path, "flowlog:x").unwrap().unwrap();
        assert_eq!((back.records, back.position), (42, pos));
        assert!(load(&path, "flowlog:y").is_err());
        assert!(load(&d.path().join("none"), "flowlog:x").unwrap().is_none());
        std::fs::write(&path, b"VMCK\0\0\0\0junk").unwrap();
        assert!(load(&path, "flowlog:x").is_err());
    }

    #[test]
    fn digests_tell_rewritten_lists_apart() {
        let b = |id: &str, size| Block {
            id: id.into(),
            size,
        };
        let one = [b("MA==", 12), b("MQ==", 100)];
        assert_eq!(digest(&one), digest(&one.clone()));
        assert_ne!(digest(&one), digest(&[b("MA==", 12), b("Mg==", 100)]));
        assert_ne!(digest(&one), digest(&[b("MA==", 12), b("MQ==", 101)]));
        assert_ne!(digest(&one), digest(&one[..1]));
    }
}
