//! What the collector keeps per agent, read from its output directory:
//! every stream directory's `state` file (per epoch — one per agent spool —
//! the last batch held, the agent's running count of packets its capture
//! lost, batches it declared dropped; each hour file's committed length)
//! and the hour files themselves (records are counted in their committed
//! bytes). Last seen is the state file's modification time: the collector
//! replaces it with every batch it acknowledges. The collector keeps no
//! connection history on disk (when an agent last connected without
//! sending, its address, its version): those are in its log only.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::collect::store::{read_state, EpochState, BLOCKS_EXT, OBSERVATIONS_DIR};
use crate::export::blocks::BlockReader;

use super::QueryError;

/// One record stream of one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub agent: String,
    /// "" for the agent's default stream.
    pub stream: String,
    pub dir: PathBuf,
    /// Per epoch (agent spool) id.
    pub epochs: Vec<(u64, EpochState)>,
    /// Records in the committed part of the hour files.
    pub records: u64,
    /// Observations shipped with them (committed lines in `observations/`).
    pub observations: u64,
    pub hour_files: u64,
    /// The first and last hour file (`YYYY-MM-DDTHH`), if any.
    pub first_hour: Option<String>,
    pub last_hour: Option<String>,
    /// ns since the epoch: the state file's modification time.
    pub last_seen_ns: Option<u64>,
}

impl StreamInfo {
    pub fn source_drops(&self) -> u64 {
        self.epochs.iter().map(|(_, e)| e.source_drops).sum()
    }
    pub fn agent_dropped(&self) -> u64 {
        self.epochs.iter().map(|(_, e)| e.agent_dropped).sum()
    }
}

/// Every stream directory (one with a `state` file) under `out`, in path
/// order; a stream whose state does not read is left out and its error
/// returned beside the others.
pub fn list(out: &Path) -> Result<(Vec<StreamInfo>, Vec<QueryError>), QueryError> {
    let mut dirs = Vec::new();
    find_streams(out, &mut dirs)?;
    dirs.sort();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for d in &dirs {
        match stream(d) {
            Ok(s) => ok.push(s),
            Err(e) => bad.push(e),
        }
    }
    Ok((ok, bad))
}

fn find_streams(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), QueryError> {
    let entries = std::fs::read_dir(dir).map_err(QueryError::io(dir))?;
    if dir.join("state").is_file() {
        out.push(dir.to_path_buf());
    }
    for e in entries {
        let p = e.map_err(QueryError::io(dir))?.path();
        if p.is_dir() {
            find_streams(&p, out)?;
        }
    }
    Ok(())
}

fn stream(dir: &Path) -> Result<StreamInfo, QueryError> {
    let state_path = dir.join("state");
    let text = std::fs::read(&state_path).map_err(QueryError::io(&state_path))?;
    let state = read_state(&String::from_utf8_lossy(&text)).map_err(|why| QueryError::Damaged {
        path: state_path.display().to_string(),
        why,
    })?;
    let agent = super::read::collector_agent(dir).unwrap_or_default();
    let stream = match dir.parent() {
        Some(p) if p.file_name().is_some_and(|n| n == "streams") || p.join("state").is_file() => {
            dir.file_name()
                .and_then(|n| n.to_str())
                .map(crate::collect::names::decode)
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let (mut records, mut observations) = (0u64, 0u64);
    for (name, &len) in &state.files {
        let path = dir.join(name);
        let n = if name.ends_with(BLOCKS_EXT) {
            count_records(&path, len)?
        } else {
            count_lines(&path, len)?
        };
        if name.starts_with(OBSERVATIONS_DIR) {
            observations += n;
        } else {
            records += n;
        }
    }
    let hours: Vec<&String> = state
        .files
        .iter()
        .filter(|(n, l)| **l > 0 && !n.starts_with(OBSERVATIONS_DIR))
        .map(|(n, _)| n)
        .collect();
    let hour = |n: &String| {
        n.trim_end_matches(".ndjson")
            .trim_end_matches(BLOCKS_EXT)
            .to_string()
    };
    let last_seen_ns = std::fs::metadata(&state_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64);
    Ok(StreamInfo {
        agent,
        stream,
        dir: dir.to_path_buf(),
        epochs: state.epochs.into_iter().collect(),
        records,
        observations,
        hour_files: hours.len() as u64,
        first_hour: hours.first().map(|n| hour(n)),
        last_hour: hours.last().map(|n| hour(n)),
        last_seen_ns,
    })
}

/// Newlines in the first `len` bytes of a file (its committed records).
fn count_lines(path: &Path, len: u64) -> Result<u64, QueryError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && len == 0 => return Ok(0),
        Err(e) => return Err(QueryError::io(path)(e)),
    };
    let mut r = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = r.read(&mut buf).map_err(QueryError::io(path))?;
        if got == 0 {
            return Ok(n);
        }
        n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Records in the first `len` bytes of a blocks hour file, from its entry
/// headers (no block is decoded).
fn count_records(path: &Path, len: u64) -> Result<u64, QueryError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && len == 0 => return Ok(0),
        Err(e) => return Err(QueryError::io(path)(e)),
    };
    let name = path.display().to_string();
    let damaged = QueryError::blocks(&name);
    let mut r = BlockReader::new(f, len, path).map_err(&damaged)?;
    while r.next_count().map_err(&damaged)?.is_some() {}
    Ok(r.stats.records)
}

/// The list as a table or NDJSON.
pub fn write(
    out: &mut dyn std::io::Write,
    streams: &[StreamInfo],
    ndjson: bool,
) -> Result<(), QueryError> {
    let w = |r: std::io::Result<()>| r.map_err(QueryError::Output);
    if ndjson {
        for s in streams {
            let v = serde_json::json!({
                "agent": s.agent,
                "stream": s.stream,
                "dir": s.dir.display().to_string(),
                "last_seen_ns": s.last_seen_ns,
                "records": s.records,
                "observations": s.observations,
                "hour_files": s.hour_files,
                "first_hour": s.first_hour,
                "last_hour": s.last_hour,
                "source_drops": s.source_drops(),
                "agent_dropped_batches": s.agent_dropped(),
                "epochs": s.epochs.iter().map(|(id, e)| serde_json::json!({
                    "epoch": id,
                    "last_seq": e.last_seq,
                    "source_drops": e.source_drops,
                    "agent_dropped_batches": e.agent_dropped,
                })).collect::<Vec<_>>(),
            });
            w(writeln!(out, "{v}"))?;
        }
        return Ok(());
    }
    let mut table = vec![[
        "AGENT",
        "STREAM",
        "LAST SEEN",
        "LAST SEQ",
        "RECORDS",
        "HOURS",
        "SOURCE DROPS",
        "DROPPED BATCHES",
    ]
    .map(String::from)
    .to_vec()];
    for s in streams {
        let seqs: Vec<String> = s
            .epochs
            .iter()
            .map(|(_, e)| e.last_seq.to_string())
            .collect();
        let hours = match (&s.first_hour, &s.last_hour) {
            (Some(a), Some(b)) if a == b => a.clone(),
            (Some(a), Some(b)) => format!("{a}..{b}"),
            _ => "-".into(),
        };
        table.push(vec![
            s.agent.clone(),
            if s.stream.is_empty() {
                "-".into()
            } else {
                s.stream.clone()
            },
            s.last_seen_ns.map_or("-".into(), super::time::format),
            if seqs.is_empty() {
                "-".into()
            } else {
                seqs.join(",")
            },
            s.records.to_string(),
            hours,
            s.source_drops().to_string(),
            s.agent_dropped().to_string(),
        ]);
    }
    w(super::output::write_table(out, &table, 3))
}
