//! The TOML configuration. Unknown keys and bad values are errors that name the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::flow::TableConfig;
use crate::net::{Cidr, LocalNets};

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
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// CIDRs that count as local for `direction`; defaults to private space.
    pub local_nets: Option<Vec<String>>,
    pub flow: FlowConfig,
    pub pipeline: PipelineConfig,
    pub source: SourceConfig,
    pub capture: CaptureConfig,
    /// Where `vmflow run` ships records; required by `run`.
    pub export: Option<ExportConfig>,
    /// Azure identity (and, later, the capture lifecycle).
    pub azure: AzureConfig,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Live capture on network interfaces; `vmflow run` uses it instead of
    /// `source.files` when present.
    pub live: Option<LiveConfig>,
}

/// A live capture ring per interface: this many blocks of this many KiB
/// (see `capture::live`: few, large blocks keep wake-ups rare).
pub const DEFAULT_RING_BLOCKS: usize = 4;
pub const DEFAULT_RING_BLOCK_KIB: usize = 8 << 10;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Empty: every interface that is up, not loopback and has an address.
    pub interfaces: Vec<String>,
    pub snaplen: u32,
    pub promiscuous: bool,
    /// Kernel ring per interface, in MiB, split into 4 blocks.
    pub ring_mib: usize,
    /// On SIGTERM, how long to wait for the collector to acknowledge the
    /// last records before leaving them in the spool.
    pub shutdown_grace: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            interfaces: Vec::new(),
            snaplen: 128,
            promiscuous: false,
            ring_mib: DEFAULT_RING_BLOCKS * DEFAULT_RING_BLOCK_KIB / 1024,
            shutdown_grace: 5.0,
        }
    }
}

/// What `vmflow run` reads. Relative paths are relative to the config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Capture files, read in order as one stream.
    pub files: Vec<PathBuf>,
    /// Folders Network Watcher (or anything else) writes capture files to:
    /// `[source.folder]`, or `[[source.folder]]` for several.
    #[serde(deserialize_with = "one_or_many")]
    pub folder: Vec<FolderConfig>,
    /// Blob storage containers Network Watcher uploads capture files to:
    /// `[source.blob]`, or `[[source.blob]]` for several.
    #[serde(deserialize_with = "one_or_many")]
    pub blob: Vec<BlobConfig>,
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

/// A secret from the configuration: never printed, not even by `{:?}`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

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
    pub poll_interval: f64,
    /// Seconds a newly listed blob waits before it is read, so that an
    /// older one uploaded a little later is still read first.
    pub reorder_window: f64,
    /// Blobs per listing page (the service's default, 5000, when unset).
    pub page_size: Option<u32>,
    /// Where a blob is downloaded to be read; default `<export.spool_dir>/blob`.
    pub download_dir: Option<PathBuf>,
    /// Trust only these CA certificates (PEM) for the account's TLS instead
    /// of the public roots.
    pub ca_file: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_interval: f64,
    pub max_silence: f64,
    pub overlap_window: f64,
    pub on_stop: OnStop,
    pub shutdown_grace: f64,
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
            poll_interval: 30.0,
            reorder_window: 60.0,
            page_size: None,
            download_dir: None,
            ca_file: None,
            checkpoint: None,
            checkpoint_interval: 10.0,
            max_silence: 10.0,
            overlap_window: 1.0,
            on_stop: OnStop::Checkpoint,
            shutdown_grace: 5.0,
        }
    }
}

/// Which Entra ID identity the agent uses for Azure (Blob without a SAS, ARM).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// The VM's managed identity, from the instance metadata service.
    #[default]
    Managed,
    /// A service principal's client secret (client-credentials flow).
    ServicePrincipal,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConfig {
    pub identity: IdentityKind,
    /// A user-assigned managed identity, or the service principal's app id.
    pub client_id: Option<String>,
    pub tenant: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub authority: String,
    pub imds_endpoint: String,
    /// Keep Network Watcher packet captures running on the target VMs.
    pub captures: Option<CapturesConfig>,
}

/// `[azure.captures]`: the capture lifecycle. Empty subscription, location
/// or targets are read from the instance metadata service (this VM).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CapturesConfig {
    pub subscription: String,
    pub location: String,
    pub resource_group: String,
    /// Default `NetworkWatcher_<location>`.
    pub watcher: String,
    /// ARM ids of the VMs; default this VM.
    pub targets: Vec<String>,
    /// Folder on the VM the captures write to (read it with [source.folder]).
    pub local_path: Option<String>,
    /// Storage account ARM id (read the container with [source.blob]).
    pub storage_id: Option<String>,
    pub bytes_per_packet: u64,
    /// Seconds one capture runs (at most 18000; a continuous session 604800).
    pub time_limit: u64,
    /// Seconds before a capture stops that the next one is started.
    pub renew_before: u64,
    /// `continuousCapture` with rolling files (preview): fewer renewals.
    pub continuous: bool,
    pub file_count: u32,
    pub file_size: u64,
    pub name_prefix: String,
    /// Seconds between rounds.
    pub poll_interval: f64,
    pub endpoint: String,
    pub api_version: String,
}

impl Default for CapturesConfig {
    fn default() -> Self {
        CapturesConfig {
            subscription: String::new(),
            location: String::new(),
            resource_group: "NetworkWatcherRG".into(),
            watcher: String::new(),
            targets: Vec::new(),
            local_path: Some("/var/captures".into()),
            storage_id: None,
            bytes_per_packet: 128,
            time_limit: 18_000,
            renew_before: 300,
            continuous: false,
            file_count: 10,
            file_size: 100 << 20,
            name_prefix: "vmflow".into(),
            poll_interval: 30.0,
            endpoint: "https://management.azure.com".into(),
            api_version: "2024-05-01".into(),
        }
    }
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            identity: IdentityKind::Managed,
            client_id: None,
            tenant: None,
            client_secret_file: None,
            authority: "https://login.microsoftonline.com".into(),
            imds_endpoint: "http://169.254.169.254".into(),
            captures: None,
        }
    }
}

impl SourceConfig {
    /// The record-stream name of each followed source: folders, then blobs.
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
        folders.chain(blobs).collect()
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
    pub poll_interval: f64,
    /// Seconds between checkpoints (a restart re-reads at most this much).
    pub checkpoint_interval: f64,
    /// A longer stretch of packet time between consecutive files is reported
    /// as a coverage gap.
    pub max_silence: f64,
    /// Seconds a cut last record may stay cut once a newer file exists
    /// (then the file is taken as ended by a crashed writer).
    pub settle: f64,
    /// Packets of a new file older than the previous file's last packet by
    /// more than this are covered already (overlapping captures); within it
    /// they are compared packet by packet.
    pub overlap_window: f64,
    pub on_stop: OnStop,
    /// On SIGTERM, how long to wait for the collector to acknowledge the
    /// last records before leaving them in the spool.
    pub shutdown_grace: f64,
}

impl Default for FolderConfig {
    fn default() -> Self {
        FolderConfig {
            name: None,
            path: PathBuf::from("/var/captures"),
            extensions: vec!["cap".into(), "pcap".into(), "pcapng".into()],
            checkpoint: None,
            poll_interval: 0.2,
            checkpoint_interval: 10.0,
            max_silence: 10.0,
            settle: 30.0,
            overlap_window: 1.0,
            on_stop: OnStop::Checkpoint,
            shutdown_grace: 5.0,
        }
    }
}

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
    pub spool_dir: PathBuf,
    #[serde(default = "default_spool_mib")]
    pub spool_max_mib: u64,
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Seconds a batch may stay open before it is sent.
    #[serde(default = "default_batch_age")]
    pub batch_age: f64,
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
fn default_batch_age() -> f64 {
    1.0
}
fn default_window() -> usize {
    32
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
    /// Live capture uses at most 256 (and also ticks on time).
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
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
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
                return Err(ConfigError::Invalid(format!(
                    "{key} = {v}: must be a positive number of seconds"
                )));
            }
        }
        if !(f.emergency_threshold > 0.0 && f.emergency_threshold <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "flow.emergency_threshold = {}: must be in (0, 1]",
                f.emergency_threshold
            )));
        }
        if f.max_flows == 0 {
            return Err(ConfigError::Invalid(
                "flow.max_flows = 0: must be at least 1".into(),
            ));
        }
        let p = &self.pipeline;
        if p.threads > 256 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.threads = {}: at most 256",
                p.threads
            )));
        }
        if p.partitions == 0 || p.partitions > 4096 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.partitions = {}: must be in 1..=4096",
                p.partitions
            )));
        }
        if p.batch_packets == 0 || p.batch_packets > 1 << 20 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.batch_packets = {}: must be in 1..=1048576",
                p.batch_packets
            )));
        }
        self.local_nets()?;
        if let Some(l) = &self.capture.live {
            if !(64..=262_144).contains(&l.snaplen) {
                return Err(ConfigError::Invalid(format!(
                    "capture.live.snaplen = {}: must be in 64..=262144",
                    l.snaplen
                )));
            }
            if !(1..=4096).contains(&l.ring_mib) {
                return Err(ConfigError::Invalid(format!(
                    "capture.live.ring_mib = {}: must be in 1..=4096",
                    l.ring_mib
                )));
            }
            if !(l.shutdown_grace.is_finite() && l.shutdown_grace >= 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "capture.live.shutdown_grace = {}: must be non-negative seconds",
                    l.shutdown_grace
                )));
            }
        }
        for f in &self.source.folder {
            for (key, v) in [
                ("source.folder.poll_interval", f.poll_interval),
                ("source.folder.checkpoint_interval", f.checkpoint_interval),
                ("source.folder.max_silence", f.max_silence),
                ("source.folder.settle", f.settle),
                ("source.folder.overlap_window", f.overlap_window),
                ("source.folder.shutdown_grace", f.shutdown_grace),
            ] {
                if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
                    return Err(ConfigError::Invalid(format!(
                        "{key} = {v}: must be a non-negative number of seconds"
                    )));
                }
            }
            if f.extensions.is_empty() {
                return Err(ConfigError::Invalid(
                    "source.folder.extensions is empty: no file would be read".into(),
                ));
            }
        }
        for b in &self.source.blob {
            for (key, v) in [
                ("source.blob.poll_interval", b.poll_interval),
                ("source.blob.reorder_window", b.reorder_window),
                ("source.blob.checkpoint_interval", b.checkpoint_interval),
                ("source.blob.max_silence", b.max_silence),
                ("source.blob.overlap_window", b.overlap_window),
                ("source.blob.shutdown_grace", b.shutdown_grace),
            ] {
                if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
                    return Err(ConfigError::Invalid(format!(
                        "{key} = {v}: must be a non-negative number of seconds"
                    )));
                }
            }
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
        }
        if let Some(c) = &self.azure.captures {
            let max = if c.continuous { 604_800 } else { 18_000 };
            if c.time_limit == 0 || c.time_limit > max {
                return Err(ConfigError::Invalid(format!(
                    "azure.captures.time_limit = {}: must be in 1..={max}",
                    c.time_limit
                )));
            }
            if !(c.poll_interval.is_finite() && c.poll_interval > 0.0) {
                return Err(ConfigError::Invalid(
                    "azure.captures.poll_interval: must be positive seconds".into(),
                ));
            }
            // The next capture must start while the current one runs, and a
            // round must come round before that moment passes.
            if c.renew_before >= c.time_limit || (c.renew_before as f64) < 2.0 * c.poll_interval {
                return Err(ConfigError::Invalid(format!(
                    "azure.captures.renew_before = {}: must be below time_limit ({}) and at least two poll intervals ({} s)",
                    c.renew_before,
                    c.time_limit,
                    2.0 * c.poll_interval
                )));
            }
            if c.local_path.is_none() && c.storage_id.is_none() {
                return Err(ConfigError::Invalid(
                    "azure.captures needs local_path or storage_id: captures must go somewhere"
                        .into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, n) in self.source.stream_names().into_iter().enumerate() {
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
        if let Some(x) = &self.export {
            if x.batch_records == 0 || x.batch_records > 1 << 20 {
                return Err(ConfigError::Invalid(format!(
                    "export.batch_records = {}: must be in 1..=1048576",
                    x.batch_records
                )));
            }
            if !(x.batch_age.is_finite() && x.batch_age > 0.0) {
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
        }
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
        let e = Config::parse("[capture.live]\nring_mib = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capture.live.ring_mib"), "{e}");
    }

    #[test]
    fn blob_reorder_window() {
        let blob = "[source.blob]\naccount_url = \"https://a.blob.core.windows.net\"\n";
        let c = Config::parse(blob).unwrap();
        assert_eq!(c.source.blob[0].reorder_window, 60.0);
        let c = Config::parse(&format!("{blob}reorder_window = 0\n")).unwrap();
        assert_eq!(c.source.blob[0].reorder_window, 0.0);
        for bad in ["-1", "nan", "inf"] {
            let e = Config::parse(&format!("{blob}reorder_window = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("source.blob.reorder_window"), "{bad}: {e}");
        }
    }

    #[test]
    fn live_ring_size() {
        let c = Config::parse("[capture.live]\n").unwrap();
        assert_eq!(c.capture.live.unwrap().ring_mib, 32);
        let c = Config::parse("[capture.live]\nring_mib = 4\n").unwrap();
        assert_eq!(c.capture.live.unwrap().ring_mib, 4);
    }
}
