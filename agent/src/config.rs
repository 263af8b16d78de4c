//! The TOML configuration. Unknown keys and bad values are errors that name the key.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;
use crate::flow::TableConfig;
use crate::net::{Cidr, LocalNets};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// CIDRs that count as local for `direction`; defaults to private space.
    pub local_nets: Option<Vec<String>>,
    pub flow: FlowConfig,
    pub pipeline: PipelineConfig,
}

/// Durations are seconds (fractions allowed).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    pub idle_timeout: f64,
    pub active_timeout: f64,
    pub tcp_linger: f64,
    pub half_open_timeout: f64,
    pub emergency_idle_timeout: f64,
    /// Fraction of `max_flows` at which emergency timeouts start.
    pub emergency_threshold: f64,
    pub max_flows: u64,
    pub fragment_timeout: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Flow shard threads; 0 picks one less than the number of cores (at least 1).
    pub threads: usize,
    /// Fixed flow-table partitions spread over the shards. Output never depends
    /// on `threads`, because partitions, not threads, own flows.
    pub partitions: usize,
    /// Packets per batch; timeouts are checked at every batch boundary.
    pub batch_packets: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            idle_timeout: 60.0,
            active_timeout: 60.0,
            tcp_linger: 2.0,
            half_open_timeout: 10.0,
            emergency_idle_timeout: 5.0,
            emergency_threshold: 0.9,
            max_flows: 1_000_000,
            fragment_timeout: 30.0,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            threads: 0,
            partitions: 16,
            batch_packets: 4096,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, Error> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), Error> {
        let f = &self.flow;
        for (key, v) in [
            ("flow.idle_timeout", f.idle_timeout),
            ("flow.active_timeout", f.active_timeout),
            ("flow.tcp_linger", f.tcp_linger),
            ("flow.half_open_timeout", f.half_open_timeout),
            ("flow.emergency_idle_timeout", f.emergency_idle_timeout),
            ("flow.fragment_timeout", f.fragment_timeout),
        ] {
            if !v.is_finite() || v <= 0.0 || v > 1e9 {
                return Err(Error::Config(format!(
                    "{key} = {v}: must be a positive number of seconds"
                )));
            }
        }
        if !(f.emergency_threshold > 0.0 && f.emergency_threshold <= 1.0) {
            return Err(Error::Config(format!(
                "flow.emergency_threshold = {}: must be in (0, 1]",
                f.emergency_threshold
            )));
        }
        if f.max_flows == 0 {
            return Err(Error::Config(
                "flow.max_flows = 0: must be at least 1".into(),
            ));
        }
        let p = &self.pipeline;
        if p.threads > 256 {
            return Err(Error::Config(format!(
                "pipeline.threads = {}: at most 256",
                p.threads
            )));
        }
        if p.partitions == 0 || p.partitions > 4096 {
            return Err(Error::Config(format!(
                "pipeline.partitions = {}: must be in 1..=4096",
                p.partitions
            )));
        }
        if p.batch_packets == 0 || p.batch_packets > 1 << 20 {
            return Err(Error::Config(format!(
                "pipeline.batch_packets = {}: must be in 1..=1048576",
                p.batch_packets
            )));
        }
        self.local_nets()?;
        Ok(())
    }

    pub fn local_nets(&self) -> Result<LocalNets, Error> {
        match &self.local_nets {
            None => Ok(LocalNets::default()),
            Some(list) => list
                .iter()
                .map(|s| s.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>()
                .map(LocalNets::new)
                .map_err(|e| Error::Config(format!("local_nets: {e}"))),
        }
    }

    /// The flow table settings for one of `partitions` tables.
    pub fn table(&self) -> TableConfig {
        let f = &self.flow;
        let ns = |s: f64| (s * 1e9).round() as u64;
        let parts = self.pipeline.partitions as u64;
        let max = f.max_flows.div_ceil(parts).max(1) as usize;
        TableConfig {
            idle_ns: ns(f.idle_timeout),
            active_ns: ns(f.active_timeout),
            tcp_linger_ns: ns(f.tcp_linger),
            half_open_ns: ns(f.half_open_timeout),
            emergency_idle_ns: ns(f.emergency_idle_timeout),
            max_flows: max,
            emergency_at: ((max as f64) * f.emergency_threshold).ceil() as usize,
        }
    }

    pub fn threads(&self) -> usize {
        match self.pipeline.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("[flow]\nidle_timeout = 30\ntcp_linger = 0.5\n").unwrap();
        assert_eq!(c.flow.idle_timeout, 30.0);
        assert_eq!(c.table().tcp_linger_ns, 500_000_000);
        assert_eq!(c.flow.active_timeout, 60.0);
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[flow]\nidle_timeot = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timeot"), "{e}");
        let e = Config::parse("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse("[flow]\nidle_timeout = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flow.idle_timeout"), "{e}");
        let e = Config::parse("[flow]\nidle_timeout = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timeout"), "{e}");
        let e = Config::parse("local_nets = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("local_nets"), "{e}");
        let e = Config::parse("[pipeline]\npartitions = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.partitions"), "{e}");
    }
}
