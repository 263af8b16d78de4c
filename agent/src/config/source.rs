//! `[source]`: what `vmflow run` reads, and the names its streams get.

use std::path::PathBuf;

use serde::Deserialize;

use super::blob::BlobConfig;
use super::flowlog::FlowlogConfig;
use super::folder::FolderConfig;
use super::ConfigError;

/// What `vmflow run` reads. Relative paths are relative to the config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Capture files (plain, gzip or zstd), merged by packet time into one
    /// stream.
    pub files: Vec<PathBuf>,
    /// A capture filter for `files`, in tcpdump's language (folders and
    /// containers take their own `filter`). Part of the stream's identity:
    /// a rerun with another filter is another record stream.
    pub filter: Option<String>,
    /// Folders Network Watcher (or anything else) writes capture files to:
    /// `[source.folder]`, or `[[source.folder]]` for several.
    #[serde(deserialize_with = "one_or_many")]
    pub folder: Vec<FolderConfig>,
    /// Blob storage containers Network Watcher uploads capture files to:
    /// `[source.blob]`, or `[[source.blob]]` for several.
    #[serde(deserialize_with = "one_or_many")]
    pub blob: Vec<BlobConfig>,
    /// Blob containers Azure writes NSG or VNet flow logs to:
    /// `[source.flowlog]`, or `[[source.flowlog]]` for several.
    #[serde(deserialize_with = "one_or_many")]
    pub flowlog: Vec<FlowlogConfig>,
}

/// A table or an array of tables. Going through `toml::Value` keeps the
/// element's own errors (an unknown key is still named).
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error as _;
    match toml::Value::deserialize(d)? {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|v| T::deserialize(v).map_err(D::Error::custom))
            .collect(),
        v => Ok(vec![T::deserialize(v).map_err(D::Error::custom)?]),
    }
}

impl SourceConfig {
    /// Every source's stream name is a plain name, and no two are the same.
    pub fn validate_names(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, n) in self.stream_names().into_iter().enumerate() {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && !n.starts_with('.');
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "source name {n:?}: use 1-64 letters, digits, '-', '_' or '.'"
                )));
            }
            if !names.insert(n.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "source name {n:?} is used twice (source {i})"
                )));
            }
        }
        Ok(())
    }

    /// The record-stream name of each followed source: folders, then blobs,
    /// then flow-log containers.
    pub fn stream_names(&self) -> Vec<String> {
        let folders = self.folder.iter().enumerate().map(|(i, f)| {
            f.name
                .clone()
                .unwrap_or_else(|| format!("folder-{}", i + 1))
        });
        let blobs = self
            .blob
            .iter()
            .enumerate()
            .map(|(i, b)| b.name.clone().unwrap_or_else(|| format!("blob-{}", i + 1)));
        let flowlogs = self.flowlog.iter().enumerate().map(|(i, f)| {
            f.name
                .clone()
                .unwrap_or_else(|| format!("flowlog-{}", i + 1))
        });
        folders.chain(blobs).chain(flowlogs).collect()
    }
}

/// What to do with open flows when a tailing agent is stopped.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnStop {
    /// Keep them in the checkpoint: the next start continues them (restarts
    /// and upgrades split no flow).
    #[default]
    Checkpoint,
    /// Read what the files hold now, end every flow (`shutdown`) and ship.
    Finish,
}
