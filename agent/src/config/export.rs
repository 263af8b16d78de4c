//! `[export]`: where `vmflow run` ships records.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// `host:port` of `vmflow collect`.
    pub collector: String,
    /// Name the collector's certificate must carry.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// CA that issued the collector's certificate.
    pub ca: PathBuf,
    /// This agent's certificate and key (its identity at the collector).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Default: `$STATE_DIRECTORY/spool` under systemd, else
    /// `/var/lib/vmflow/spool` (Windows: `%ProgramData%\vmflow\spool`).
    #[serde(default = "crate::platform::default_spool_dir")]
    pub spool_dir: PathBuf,
    #[serde(default = "default_spool_mib")]
    pub spool_max_mib: u64,
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Seconds a batch may stay open before it is sent.
    #[serde(default = "default_batch_age")]
    pub batch_age: Seconds,
    /// Unacknowledged batches in flight.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Informational name sent in `hello` (the collector uses the certificate).
    #[serde(default)]
    pub agent_id: String,
}

fn default_server_name() -> String {
    "localhost".into()
}
fn default_spool_mib() -> u64 {
    512
}
fn default_batch_records() -> usize {
    1024
}
fn default_batch_age() -> Seconds {
    Seconds(1.0)
}
fn default_window() -> usize {
    32
}

impl ExportConfig {
    /// Batch size and age, window and spool size in their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let x = self;
        super::address::host_port("export.collector", &x.collector)?;
        if x.batch_records == 0 || x.batch_records > 1 << 20 {
            return Err(ConfigError::Invalid(format!(
                "export.batch_records = {}: must be in 1..=1048576",
                x.batch_records
            )));
        }
        if !(x.batch_age.get().is_finite() && x.batch_age.get() > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "export.batch_age = {}: must be positive seconds",
                x.batch_age
            )));
        }
        if x.window == 0 || x.window > 4096 {
            return Err(ConfigError::Invalid(format!(
                "export.window = {}: must be in 1..=4096",
                x.window
            )));
        }
        if x.spool_max_mib == 0 {
            return Err(ConfigError::Invalid(
                "export.spool_max_mib = 0: must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn spool_dir_has_a_default() {
        let c =
            Config::parse("[export]\ncollector = \"c:1\"\nca = \"a\"\ncert = \"b\"\nkey = \"k\"\n")
                .unwrap();
        let x = c.export.unwrap();
        assert_eq!(x.spool_dir, crate::platform::default_spool_dir());
        assert!(x.spool_dir.ends_with("spool"), "{}", x.spool_dir.display());
        assert!(x.spool_dir.is_absolute());
    }
}
