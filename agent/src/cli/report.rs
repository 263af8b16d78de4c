//! `vmflow report`: an HTML page of the records `vmflow query` reads.

use std::process::ExitCode;

use clap::Args;

use super::query::FilterArgs;
use crate::error::Error;
use crate::query::QueryError;

#[derive(Args)]
pub(super) struct ReportArgs {
    /// Where the records are: the collector's output directory, NDJSON or
    /// blocks files, or `-` (standard input, either kind).
    #[arg(required = true)]
    paths: Vec<String>,
    /// The page to write (one self-contained HTML file).
    #[arg(long)]
    html: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Rows in the top talkers and top services tables.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Threads reading files (default: the cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub(super) fn cmd(a: ReportArgs) -> Result<ExitCode, Error> {
    let threads = a.threads.unwrap_or_else(crate::query::default_threads);
    let report = crate::report::build(
        &a.paths,
        &a.filter.filter(),
        a.filter.describe(),
        threads,
        a.top,
    )?;
    std::fs::write(&a.html, report.html()).map_err(|source| QueryError::Io {
        path: a.html.clone(),
        source,
    })?;
    if let Some(w) = report.scan.warning() {
        eprintln!("report: {w}");
    }
    eprintln!(
        "report: wrote {} ({} records from {} files)",
        a.html, report.scan.matched, report.scan.files
    );
    Ok(ExitCode::SUCCESS)
}
