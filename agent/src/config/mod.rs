//! The TOML configuration, one file per section, each validating itself.
//! Unknown keys and bad values are errors that name the key. Durations are
//! seconds (fractions allowed), read as [`Seconds`] and turned into time in
//! one place.

mod address;
mod azure;
mod blob;
mod capture;
mod export;
mod flow;
mod flowlog;
mod folder;
mod ipfix;
mod log;
mod metrics;
mod observe;
mod pipeline;
mod seconds;
mod secret;
mod source;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::flow::TableConfig;
use crate::net::{Cidr, LocalNets};
use crate::settings::{FlowSettings, Settings};

pub use address::listen_addr;
pub use azure::{AzureConfig, CapturesConfig, IdentityKind};
pub use blob::{AfterRead, BlobConfig};
pub use capture::{CaptureConfig, LiveConfig, DEFAULT_RING_BLOCKS, DEFAULT_RING_BLOCK_KIB};
pub use export::{collector_list, ExportConfig};
pub use flow::FlowConfig;
pub use flowlog::FlowlogConfig;
pub use folder::FolderConfig;
pub use ipfix::{IpfixExportConfig, IpfixModeConfig, IpfixTransport};
pub use log::{LogConfig, LogFormat};
pub use metrics::MetricsConfig;
pub use observe::{EnrichConfig, ObserveConfig, WatchlistConfig, ADMIN_PORTS};
pub use pipeline::PipelineConfig;
pub use seconds::Seconds;
pub use secret::Secret;
pub use source::{OnStop, SourceConfig};

/// What is wrong with a configuration. The message names the key (and the
/// file, once it is known) so the user can go straight to it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// CIDRs that count as local for `direction`; defaults to private space.
    pub local_nets: Option<Vec<String>>,
    pub flow: FlowConfig,
    pub pipeline: PipelineConfig,
    pub source: SourceConfig,
    pub capture: CaptureConfig,
    /// Where `vmflow run` ships records over mTLS (`[export]`).
    pub export: Option<ExportConfig>,
    /// IPFIX collectors `vmflow run` sends records to (`[[export.ipfix]]`),
    /// beside or instead of `[export]`.
    pub ipfix: Vec<IpfixExportConfig>,
    /// Azure identity (and, later, the capture lifecycle).
    pub azure: AzureConfig,
    /// Log line format (`[log]`).
    pub log: LogConfig,
    /// Which observations are raised from the records (`[observe]`).
    pub observe: ObserveConfig,
    /// Address lists flows are checked against (`[[watchlist]]`).
    pub watchlists: Vec<WatchlistConfig>,
    /// Country and ASN databases for observations (`[enrich]`).
    pub enrich: EnrichConfig,
    /// The Prometheus endpoint and `/healthz` (`[metrics]`).
    pub metrics: MetricsConfig,
}

/// The file as written: `[export]` holds both the mTLS export's keys and
/// the `[[export.ipfix]]` array, either of which may be alone.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    local_nets: Option<Vec<String>>,
    flow: FlowConfig,
    pipeline: PipelineConfig,
    source: SourceConfig,
    capture: CaptureConfig,
    export: Option<RawExport>,
    azure: AzureConfig,
    log: LogConfig,
    observe: ObserveConfig,
    watchlist: Vec<WatchlistConfig>,
    enrich: EnrichConfig,
    metrics: MetricsConfig,
}

#[derive(Default, Deserialize)]
struct RawExport {
    #[serde(default)]
    ipfix: Vec<IpfixExportConfig>,
    #[serde(flatten)]
    mtls: toml::Table,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Config, String> {
        let (export, ipfix) = match r.export {
            None => (None, Vec::new()),
            Some(x) if x.mtls.is_empty() => (None, x.ipfix),
            Some(x) => {
                let mtls = toml::Value::Table(x.mtls)
                    .try_into::<ExportConfig>()
                    .map_err(|e| format!("[export]: {}", e.message()))?;
                (Some(mtls), x.ipfix)
            }
        };
        Ok(Config {
            local_nets: r.local_nets,
            flow: r.flow,
            pipeline: r.pipeline,
            source: r.source,
            capture: r.capture,
            export,
            ipfix,
            azure: r.azure,
            log: r.log,
            observe: r.observe,
            watchlists: r.watchlist,
            enrich: r.enrich,
            metrics: r.metrics,
        })
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        cfg.source.files.iter_mut().for_each(rel);
        for b in cfg.source.blob.iter_mut() {
            for p in [
                &mut b.sas_token_file,
                &mut b.download_dir,
                &mut b.checkpoint,
                &mut b.ca_file,
            ]
            .into_iter()
            .flatten()
            {
                rel(p);
            }
        }
        for f in cfg.source.flowlog.iter_mut() {
            for p in [&mut f.sas_token_file, &mut f.checkpoint, &mut f.ca_file]
                .into_iter()
                .flatten()
            {
                rel(p);
            }
        }
        if let Some(p) = cfg.azure.client_secret_file.as_mut() {
            rel(p);
        }
        for f in cfg.source.folder.iter_mut() {
            rel(&mut f.path);
            if let Some(c) = f.checkpoint.as_mut() {
                rel(c);
            }
        }
        if let Some(x) = cfg.export.as_mut() {
            for p in [&mut x.ca, &mut x.cert, &mut x.key, &mut x.spool_dir] {
                rel(p);
            }
        }
        for x in cfg.ipfix.iter_mut() {
            for p in [&mut x.ca, &mut x.cert, &mut x.key].into_iter().flatten() {
                rel(p);
            }
        }
        for w in cfg.watchlists.iter_mut() {
            rel(&mut w.file);
        }
        cfg.enrich.mmdb.iter_mut().for_each(rel);
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Each section checks itself, in the order the file reads.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.flow.validate()?;
        self.pipeline.validate()?;
        self.local_nets()?;
        if let Some(l) = &self.capture.live {
            l.validate()?;
        }
        for f in &self.source.folder {
            f.validate()?;
        }
        for b in &self.source.blob {
            b.validate()?;
        }
        for f in &self.source.flowlog {
            f.validate()?;
        }
        if let Some(c) = &self.azure.captures {
            c.validate()?;
        }
        self.source.validate_names()?;
        if let Some(x) = &self.export {
            x.validate()?;
        }
        for (i, x) in self.ipfix.iter().enumerate() {
            x.validate(i)?;
        }
        self.observe.validate()?;
        let mut names = std::collections::HashSet::new();
        for w in &self.watchlists {
            if w.name.is_empty() || !names.insert(w.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "watchlist.name {:?}: every [[watchlist]] needs a name of its own",
                    w.name
                )));
            }
        }
        self.log.validate()?;
        self.metrics.validate()?;
        Ok(())
    }

    pub fn local_nets(&self) -> Result<LocalNets, ConfigError> {
        match &self.local_nets {
            None => Ok(LocalNets::default()),
            Some(list) => list
                .iter()
                .map(|s| s.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>()
                .map(LocalNets::new)
                .map_err(|e| ConfigError::Invalid(format!("local_nets: {e}"))),
        }
    }

    /// The flow settings, as the engine takes them.
    pub fn flow_settings(&self) -> FlowSettings {
        let f = &self.flow;
        FlowSettings {
            idle_timeout: f.idle_timeout.duration(),
            active_timeout: f.active_timeout.duration(),
            tcp_linger: f.tcp_linger.duration(),
            last_ack_timeout: f.last_ack_timeout.duration(),
            half_open_timeout: f.half_open_timeout.duration(),
            emergency_idle_timeout: f.emergency_idle_timeout.duration(),
            fragment_timeout: f.fragment_timeout.duration(),
            max_flows: f.max_flows,
            emergency_threshold: f.emergency_threshold,
        }
    }

    /// Everything the engine is built from.
    pub fn engine_settings(&self) -> Result<Settings, ConfigError> {
        Ok(Settings {
            partitions: self.pipeline.partitions,
            batch_packets: self.pipeline.batch_packets,
            batch_ns: self.pipeline.batch_time.ns(),
            flow: self.flow_settings(),
            local_nets: self.local_nets()?,
        })
    }

    /// The flow table settings for one of `partitions` tables.
    pub fn table(&self) -> TableConfig {
        self.flow_settings().table(self.pipeline.partitions)
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
        assert_eq!(c.flow.idle_timeout, crate::config::Seconds(30.0));
        assert_eq!(c.table().tcp_linger_ns, 500_000_000);
        assert_eq!(c.flow.active_timeout, crate::config::Seconds(60.0));
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
        let e = Config::parse("[flow]\nlast_ack_timeout = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flow.last_ack_timeout"), "{e}");
        let c = Config::parse("[flow]\nlast_ack_timeout = 7.5\n").unwrap();
        assert_eq!(c.table().last_ack_ns, 7_500_000_000);
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
        let e = Config::parse("[capture.live]\nring_mib = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capture.live.ring_mib"), "{e}");
    }

    #[test]
    fn blob_reorder_window() {
        let blob = "[source.blob]\naccount_url = \"https://a.blob.core.windows.net\"\n";
        let c = Config::parse(blob).unwrap();
        assert_eq!(
            c.source.blob[0].reorder_window,
            crate::config::Seconds(60.0)
        );
        let c = Config::parse(&format!("{blob}reorder_window = 0\n")).unwrap();
        assert_eq!(c.source.blob[0].reorder_window, crate::config::Seconds(0.0));
        for bad in ["-1", "nan", "inf"] {
            let e = Config::parse(&format!("{blob}reorder_window = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("source.blob.reorder_window"), "{bad}: {e}");
        }
    }

    #[test]
    fn ipfix_exports_beside_or_instead_of_the_mtls_export() {
        let c = Config::parse("[[export.ipfix]]\ncollector = \"127.0.0.1:4739\"\n").unwrap();
        assert!(c.export.is_none());
        assert_eq!(c.ipfix.len(), 1);
        let i = &c.ipfix[0];
        assert_eq!(
            (i.transport, i.mode, i.max_message(), i.template_refresh),
            (
                IpfixTransport::Udp,
                IpfixModeConfig::Biflow,
                1400,
                Seconds(60.0)
            )
        );
        let mtls = "[export]\ncollector = \"c:1\"\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\nspool_dir = \"s\"\n";
        let two =
            "[[export.ipfix]]\ncollector = \"a:1\"\ntransport = \"tcp\"\nmode = \"uniflow\"\n\
                   [[export.ipfix]]\ncollector = \"b:2\"\nobservation_domain = 9\n";
        let c = Config::parse(&format!("{mtls}{two}")).unwrap();
        assert_eq!(c.export.unwrap().collector, "c:1");
        assert_eq!(c.ipfix.len(), 2);
        assert_eq!(c.ipfix[0].max_message(), 65535);
        assert_eq!(c.ipfix[0].mode, IpfixModeConfig::Uniflow);
        assert_eq!(c.ipfix[1].observation_domain, 9);
    }

    #[test]
    fn ipfix_mistakes_are_named() {
        let ipfix = "[[export.ipfix]]\ncollector = \"127.0.0.1:4739\"\n";
        for (extra, want) in [
            ("template_refresh = 0\n", "export.ipfix[0].template_refresh"),
            ("max_message = 100\n", "export.ipfix[0].max_message"),
            ("tls = true\n", "export.ipfix[0].tls"),
            ("transport = \"tcp\"\ntls = true\n", "export.ipfix[0].ca"),
            ("ca = \"x\"\n", "export.ipfix[0].tls"),
            ("queue_batches = 0\n", "export.ipfix[0].queue_batches"),
            ("transport = \"sctp\"\n", "sctp"),
            ("colector = 1\n", "colector"),
        ] {
            let e = Config::parse(&format!("{ipfix}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = Config::parse("[[export.ipfix]]\ncollector = \"nohost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("export.ipfix[0].collector"), "{e}");
        // The mTLS export's own mistakes still name their key.
        let e = Config::parse(&format!("[export]\ncollector = \"c:1\"\n{ipfix}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[export]") && e.contains("ca"), "{e}");
    }

    #[test]
    fn live_ring_size() {
        let c = Config::parse("[capture.live]\n").unwrap();
        assert_eq!(c.capture.live.unwrap().ring_mib, 32);
        let c = Config::parse("[capture.live]\nring_mib = 4\n").unwrap();
        assert_eq!(c.capture.live.unwrap().ring_mib, 4);
    }
}
