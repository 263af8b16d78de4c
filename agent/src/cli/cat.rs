//! `vmflow cat`: record files (`replay --format blocks`) and spool segments
//! as NDJSON.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::Error;
use crate::export::blocks::{self, BlockFileError, ReadStats};
use crate::export::{NdjsonSink, RecordSink};

#[derive(Args)]
pub(super) struct CatArgs {
    /// Record files written by `replay --format blocks`, or spool segments
    /// (`seg-*.spool`), printed in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(super) fn cmd(a: CatArgs) -> Result<ExitCode, Error> {
    let mut out = NdjsonSink::new(io::stdout());
    let mut total = ReadStats::default();
    for f in &a.files {
        let mut st = ReadStats::default();
        let read = blocks::read_file(f, &mut st, |r| out.write(r));
        match read {
            Err(BlockFileError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Ok(ExitCode::SUCCESS)
            }
            r => r?,
        }
        st.warn_if_damaged(&f.display().to_string());
        total.add(&st);
    }
    match out.finish() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        r => r.map_err(|e| Error::io("standard output", e))?,
    }
    eprintln!(
        "records={} blocks={} damaged_bytes={} bad_blocks={}",
        total.records, total.entries, total.damaged_bytes, total.bad_blocks
    );
    // Everything intact was printed; damage still makes the exit status say so.
    Ok(if total.damaged() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
