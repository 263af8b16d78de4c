//! `vmflow replay`: capture files to flow records.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::engine_args::{engine_config, EngineArgs};
use super::summary::finish;
use crate::error::Error;
use crate::export::{NdjsonSink, RecordSink};

#[derive(Args)]
pub(super) struct ReplayArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Where to write records; `-` is standard output.
    #[arg(long, default_value = "-")]
    out: String,
    /// Capture files, read in order as one continuous stream.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(super) fn cmd(a: ReplayArgs) -> Result<ExitCode, Error> {
    let cfg = engine_config(&a.engine)?;
    let sink: Box<dyn RecordSink> = if a.out == "-" {
        Box::new(NdjsonSink::new(io::stdout()))
    } else {
        let f = File::create(&a.out).map_err(|e| Error::io(&a.out, e))?;
        Box::new(NdjsonSink::new(f))
    };
    let report = crate::capture::replay(a.files, &cfg, sink);
    finish("replay", report)
}
