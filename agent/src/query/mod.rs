//! `vmflow query`: reading flow records back — the collector's output
//! directory or any NDJSON — filtered, grouped and sorted, streamed so a
//! day of records never sits in memory. One concern per file: `read`
//! (finding files, the borrowed record), `filter`, `group` (totals and
//! flows per key), `output` (table, NDJSON, CSV), `agents` (what the
//! collector keeps per agent), `time` (times in and out). `vmflow report`
//! draws from the same code.

pub mod agents;
pub mod filter;
pub mod group;
pub mod output;
pub mod read;
pub mod time;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use filter::Filter;
pub use group::{GroupBy, Groups, Key, SortBy, Totals};
pub use read::{Input, Inputs, Rec};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the result: {0}")]
    Output(#[source] io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {why}")]
    Damaged { path: String, why: String },
}

impl QueryError {
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> QueryError + '_ {
        move |source| QueryError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// A blocks file (`name`) that could not be read: its I/O error, or
    /// what is wrong with it.
    pub fn blocks(name: &str) -> impl Fn(crate::export::blocks::BlockFileError) -> QueryError + '_ {
        use crate::export::blocks::BlockFileError;
        move |e| match e {
            BlockFileError::Io { source, .. } => QueryError::Io {
                path: name.to_string(),
                source,
            },
            other => QueryError::Damaged {
                path: name.to_string(),
                why: other.to_string(),
            },
        }
    }
}

/// What reading went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub files: u64,
    pub lines: u64,
    /// Records that passed the filter.
    pub matched: u64,
    /// Lines that are not records (e.g. a half-written last line).
    pub unreadable: u64,
    /// The first of those: file and line number.
    pub first_unreadable: Option<(String, u64)>,
}

impl Scan {
    fn merge(&mut self, o: Scan) {
        self.files += o.files;
        self.lines += o.lines;
        self.matched += o.matched;
        self.unreadable += o.unreadable;
        if self.first_unreadable.is_none() {
            self.first_unreadable = o.first_unreadable;
        }
    }

    /// A line for stderr when some lines were not records.
    pub fn warning(&self) -> Option<String> {
        let (file, line) = self.first_unreadable.as_ref()?;
        Some(format!(
            "{} lines are not flow records and were skipped (the first: {file} line {line})",
            self.unreadable
        ))
    }
}

/// Something that takes matching records and can be split across threads.
pub trait Fold: Send {
    fn add(&mut self, input: &Input, r: &Rec);
    fn merge(&mut self, other: Self)
    where
        Self: Sized;
}

impl Fold for Groups {
    fn add(&mut self, input: &Input, r: &Rec) {
        Groups::add(self, input, r)
    }
    fn merge(&mut self, other: Self) {
        Groups::merge(self, other)
    }
}

/// What a scan calls with each matching record and its line.
type Visit<'f> = dyn FnMut(&Input, &Rec, &[u8]) -> Result<(), QueryError> + 'f;

/// Reads one input, calling `f` with every matching record and its line.
fn scan_input(
    input: &Input,
    filter: &Filter,
    scan: &mut Scan,
    f: &mut Visit<'_>,
) -> Result<(), QueryError> {
    scan.files += 1;
    let mut lines = read::Lines::open(input)?;
    while let Some(line) = lines.next_line()? {
        scan.lines += 1;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Rec>(line) {
            Ok(r) => {
                if filter.matches(&r) {
                    scan.matched += 1;
                    f(input, &r, line)?;
                }
            }
            Err(_) => {
                scan.unreadable += 1;
                if scan.first_unreadable.is_none() {
                    scan.first_unreadable = Some((lines.name().to_string(), lines.line_no));
                }
            }
        }
    }
    Ok(())
}

/// Every matching record in input order (for record output).
pub fn each(
    inputs: &Inputs,
    filter: &Filter,
    mut f: impl FnMut(&Input, &Rec, &[u8]) -> Result<(), QueryError>,
) -> Result<Scan, QueryError> {
    let mut scan = Scan::default();
    for input in &inputs.files {
        if filter.wants_agent(inputs.agent_name(input.agent)) {
            scan_input(input, filter, &mut scan, &mut f)?;
        }
    }
    Ok(scan)
}

/// Folds every matching record, files spread over `threads` threads (each
/// file is read by one; the folds are merged at the end).
pub fn fold<F: Fold>(
    inputs: &Inputs,
    filter: &Filter,
    threads: usize,
    make: impl Fn() -> F + Sync,
) -> Result<(F, Scan), QueryError> {
    let wanted: Vec<&Input> = inputs
        .files
        .iter()
        .filter(|i| filter.wants_agent(inputs.agent_name(i.agent)))
        .collect();
    let threads = threads.clamp(1, wanted.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<(F, Scan), QueryError>>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut acc = make();
                let mut scan = Scan::default();
                let mut run = || -> Result<(), QueryError> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(input) = wanted.get(i) else {
                            return Ok(());
                        };
                        scan_input(input, filter, &mut scan, &mut |inp, r, _| {
                            acc.add(inp, r);
                            Ok(())
                        })?;
                    }
                };
                let res = run().map(|()| (acc, scan));
                if let Ok(mut v) = results.lock() {
                    v.push(res);
                }
            });
        }
    });
    let mut total: Option<(F, Scan)> = None;
    for r in results.into_inner().unwrap_or_default() {
        let (acc, scan) = r?;
        match &mut total {
            None => total = Some((acc, scan)),
            Some((t, s)) => {
                t.merge(acc);
                s.merge(scan);
            }
        }
    }
    Ok(total.unwrap_or_else(|| (make(), Scan::default())))
}

/// Threads for `fold`: the cores, as the query has nothing else to do.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
