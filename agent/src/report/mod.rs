//! `vmflow report`: one self-contained HTML page (inline CSS and SVG, no
//! script, nothing fetched) over the same records and the same code paths
//! as `vmflow query`: its groups for top talkers, services and agents, one
//! pass that also gathers traffic per minute by direction and the minutes
//! each agent has records in (`tally.rs`), drawn by `svg.rs` into the page
//! `html.rs` writes.

pub mod html;
pub mod svg;
pub mod tally;

use std::path::Path;

use crate::query::agents::StreamInfo;
use crate::query::{Filter, Inputs, QueryError, Scan};

pub use tally::Tally;

pub struct Report {
    pub title: String,
    pub filter_text: String,
    pub inputs: Inputs,
    pub tally: Tally,
    pub scan: Scan,
    /// What the collector's state files say, when the paths are its output.
    pub streams: Vec<StreamInfo>,
    /// Rows in the top talkers and services tables.
    pub top: usize,
}

/// Reads the records once and gathers everything the page shows.
pub fn build(
    paths: &[String],
    filter: &Filter,
    filter_text: String,
    threads: usize,
    top: usize,
) -> Result<Report, QueryError> {
    let inputs = crate::query::read::inputs(paths)?;
    let (tally, scan) = crate::query::fold(&inputs, filter, threads, Tally::new)?;
    let mut streams = Vec::new();
    for p in paths {
        let p = Path::new(p);
        if p.is_dir() {
            let (found, damaged) = crate::query::agents::list(p)?;
            for e in damaged {
                eprintln!("report: {e} (that stream's last seen, batches and drops are left out)");
            }
            streams.extend(found);
        }
    }
    Ok(Report {
        title: paths.join(", "),
        filter_text,
        inputs,
        tally,
        scan,
        streams,
        top,
    })
}

impl Report {
    pub fn html(&self) -> String {
        html::page(self)
    }
}
