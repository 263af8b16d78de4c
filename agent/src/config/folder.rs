//! `[source.folder]`: a folder capture files are written to.

use std::path::PathBuf;

use serde::Deserialize;

use super::source::OnStop;
use super::{ConfigError, Seconds};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FolderConfig {
    /// Names this source's record stream when there are several sources
    /// (default `folder-N`).
    pub name: Option<String>,
    pub path: PathBuf,
    /// File name endings taken (case-insensitive).
    pub extensions: Vec<String>,
    /// Where the position and engine state are kept; default
    /// `<export.spool_dir>/folder.checkpoint`.
    pub checkpoint: Option<PathBuf>,
    /// Seconds between looks for new data.
    pub poll_interval: Seconds,
    /// Seconds between checkpoints (a restart re-reads at most this much).
    pub checkpoint_interval: Seconds,
    /// A longer stretch of packet time between consecutive files is reported
    /// as a coverage gap.
    pub max_silence: Seconds,
    /// Seconds a cut last record may stay cut once a newer file exists
    /// (then the file is taken as ended by a crashed writer).
    pub settle: Seconds,
    /// Packets of a new file older than the previous file's last packet by
    /// more than this are covered already (overlapping captures); within it
    /// they are compared packet by packet.
    pub overlap_window: Seconds,
    pub on_stop: OnStop,
    /// A capture filter in tcpdump's language, compiled by libpcap for
    /// each file's link type: only matching packets reach the engine (the
    /// rest are `filtered` in the summary); overlap and coverage still
    /// look at every packet.
    pub filter: Option<String>,
    /// On SIGTERM, how long to wait for the collector to acknowledge the
    /// last records before leaving them in the spool.
    pub shutdown_grace: Seconds,
}

impl Default for FolderConfig {
    fn default() -> Self {
        FolderConfig {
            name: None,
            path: PathBuf::from("/var/captures"),
            extensions: vec!["cap".into(), "pcap".into(), "pcapng".into()],
            checkpoint: None,
            poll_interval: Seconds(0.2),
            checkpoint_interval: Seconds(10.0),
            max_silence: Seconds(10.0),
            settle: Seconds(30.0),
            overlap_window: Seconds(1.0),
            on_stop: OnStop::Checkpoint,
            filter: None,
            shutdown_grace: Seconds(5.0),
        }
    }
}

impl FolderConfig {
    /// Durations non-negative; at least one extension.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = self;
        Seconds::all_within_bounds(&[
            ("source.folder.poll_interval", f.poll_interval),
            ("source.folder.checkpoint_interval", f.checkpoint_interval),
            ("source.folder.max_silence", f.max_silence),
            ("source.folder.settle", f.settle),
            ("source.folder.overlap_window", f.overlap_window),
            ("source.folder.shutdown_grace", f.shutdown_grace),
        ])?;
        if f.extensions.is_empty() {
            return Err(ConfigError::Invalid(
                "source.folder.extensions is empty: no file would be read".into(),
            ));
        }
        Ok(())
    }
}
