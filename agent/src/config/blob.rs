//! `[source.blob]`: a Blob storage container Network Watcher uploads to.

use std::path::PathBuf;

use serde::Deserialize;

use super::source::OnStop;
use super::{ConfigError, Seconds, Secret};

/// What happens to a blob once every packet in it has been used.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AfterRead {
    #[default]
    Keep,
    /// Deleted once a checkpoint that records it as read is on disk.
    Delete,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// Names this source's record stream when there are several sources
    /// (default `blob-N`).
    pub name: Option<String>,
    /// `https://{account}.blob.core.windows.net` (or Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`).
    pub account_url: String,
    pub container: String,
    /// Only blobs whose names start with this.
    pub prefix: String,
    /// SAS token (query string). Prefer `sas_token_file`; without either,
    /// the `[azure]` identity's token is used.
    pub sas_token: Option<Secret>,
    pub sas_token_file: Option<PathBuf>,
    pub after: AfterRead,
    pub extensions: Vec<String>,
    /// Seconds between listings when there is nothing new.
    pub poll_interval: Seconds,
    /// Seconds a newly listed blob waits before it is read, so that an
    /// older one uploaded a little later is still read first.
    pub reorder_window: Seconds,
    /// Blobs per listing page (the service's default, 5000, when unset).
    pub page_size: Option<u32>,
    /// Where a blob is downloaded to be read; default `<export.spool_dir>/blob`.
    pub download_dir: Option<PathBuf>,
    /// Trust only these CA certificates (PEM) for the account's TLS instead
    /// of the public roots.
    pub ca_file: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_interval: Seconds,
    pub max_silence: Seconds,
    pub overlap_window: Seconds,
    pub on_stop: OnStop,
    /// A capture filter in tcpdump's language, compiled by libpcap for
    /// each file's link type: only matching packets reach the engine (the
    /// rest are `filtered` in the summary); overlap and coverage still
    /// look at every packet.
    pub filter: Option<String>,
    pub shutdown_grace: Seconds,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            name: None,
            account_url: String::new(),
            container: "network-watcher-logs".into(),
            prefix: String::new(),
            sas_token: None,
            sas_token_file: None,
            after: AfterRead::Keep,
            extensions: vec!["cap".into(), "pcap".into(), "pcapng".into()],
            poll_interval: Seconds(30.0),
            reorder_window: Seconds(60.0),
            page_size: None,
            download_dir: None,
            ca_file: None,
            checkpoint: None,
            checkpoint_interval: Seconds(10.0),
            max_silence: Seconds(10.0),
            overlap_window: Seconds(1.0),
            on_stop: OnStop::Checkpoint,
            filter: None,
            shutdown_grace: Seconds(5.0),
        }
    }
}

impl BlobConfig {
    /// Durations non-negative; an account and container; one way to a SAS.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let b = self;
        Seconds::all_within_bounds(&[
            ("source.blob.poll_interval", b.poll_interval),
            ("source.blob.reorder_window", b.reorder_window),
            ("source.blob.checkpoint_interval", b.checkpoint_interval),
            ("source.blob.max_silence", b.max_silence),
            ("source.blob.overlap_window", b.overlap_window),
            ("source.blob.shutdown_grace", b.shutdown_grace),
        ])?;
        if b.account_url.is_empty() || b.container.is_empty() {
            return Err(ConfigError::Invalid(
                "source.blob needs account_url and container".into(),
            ));
        }
        if b.sas_token.is_some() && b.sas_token_file.is_some() {
            return Err(ConfigError::Invalid(
                "source.blob: give sas_token or sas_token_file, not both".into(),
            ));
        }
        if b.page_size.is_some_and(|n| n == 0 || n > 5000) {
            return Err(ConfigError::Invalid(
                "source.blob.page_size: must be in 1..=5000".into(),
            ));
        }
        Ok(())
    }
}
