//! `[export]`: where `vmflow run` ships records.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// `host:port` of `vmflow collect`, or several (a TOML list, or one
    /// string with commas): the shipper moves to the next when one fails.
    /// Kept as one comma-separated string; [`ExportConfig::collectors`]
    /// lists them.
    #[serde(deserialize_with = "one_or_many")]
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

/// A string, or a list of strings joined with commas.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(v) => v.join(","),
    })
}

/// The addresses of a `collector` value, in order.
pub fn collector_list(collector: &str) -> Vec<&str> {
    collector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
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
    /// The collectors' addresses, in order.
    pub fn collectors(&self) -> Vec<&str> {
        collector_list(&self.collector)
    }

    /// Batch size and age, window and spool size in their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let x = self;
        if x.collectors().is_empty() {
            return Err(ConfigError::Invalid(
                "export.collector: no address (host:port, or a list of them)".into(),
            ));
        }
        for c in x.collectors() {
            super::address::host_port("export.collector", c)?;
        }
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

    #[test]
    fn collector_takes_one_address_or_a_list() {
        let parse = |v: &str| {
            Config::parse(&format!(
                "[export]\ncollector = {v}\nca = \"a\"\ncert = \"b\"\nkey = \"k\"\n"
            ))
        };
        let one = parse("\"c:1\"").unwrap().export.unwrap();
        assert_eq!(one.collectors(), ["c:1"]);
        let list = parse("[\"c:1\", \"[::1]:2\"]").unwrap().export.unwrap();
        assert_eq!(list.collectors(), ["c:1", "[::1]:2"]);
        let commas = parse("\"c:1, d:2\"").unwrap().export.unwrap();
        assert_eq!(commas.collectors(), ["c:1", "d:2"]);
        for bad in ["[]", "[\"c:1\", \"d\"]", "\",\""] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("export.collector"), "{bad}: {e}");
        }
    }
}
