//! `[azure]`: the identity the agent uses, and `[azure.captures]`, the
//! Network Watcher capture lifecycle.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Seconds};

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
    pub poll_interval: Seconds,
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
            poll_interval: Seconds(30.0),
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

impl CapturesConfig {
    /// Time limit and renewal in range; somewhere for captures to go.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        let max = if c.continuous { 604_800 } else { 18_000 };
        if c.time_limit == 0 || c.time_limit > max {
            return Err(ConfigError::Invalid(format!(
                "azure.captures.time_limit = {}: must be in 1..={max}",
                c.time_limit
            )));
        }
        if !(c.poll_interval.get().is_finite() && c.poll_interval.get() > 0.0) {
            return Err(ConfigError::Invalid(
                "azure.captures.poll_interval: must be positive seconds".into(),
            ));
        }
        // The next capture must start while the current one runs, and a
        // round must come round before that moment passes.
        if c.renew_before >= c.time_limit || (c.renew_before as f64) < 2.0 * c.poll_interval.get() {
            return Err(ConfigError::Invalid(format!(
                "azure.captures.renew_before = {}: must be below time_limit ({}) and at least two poll intervals ({} s)",
                c.renew_before,
                c.time_limit,
                2.0 * c.poll_interval.get()
            )));
        }
        if c.local_path.is_none() && c.storage_id.is_none() {
            return Err(ConfigError::Invalid(
                "azure.captures needs local_path or storage_id: captures must go somewhere".into(),
            ));
        }
        Ok(())
    }
}
