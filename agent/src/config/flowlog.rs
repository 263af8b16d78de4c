//! `[[source.flowlog]]`: a Blob container Azure writes NSG or VNet flow logs
//! to (hourly `PT1H.json` block blobs, one per NIC).

use std::path::PathBuf;

use serde::Deserialize;

use super::blob::BlobConfig;
use super::source::OnStop;
use super::{ConfigError, Seconds, Secret};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowlogConfig {
    /// Names this source's record stream when there are several sources
    /// (default `flowlog-N`).
    pub name: Option<String>,
    /// `https://{account}.blob.core.windows.net` (or Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`).
    pub account_url: String,
    /// `insights-logs-flowlogflowevent` (VNet flow logs, the default) or
    /// `insights-logs-networksecuritygroupflowevent` (NSG flow logs).
    pub container: String,
    /// Only blobs whose names start with this (e.g. `flowLogResourceID=/`
    /// or `resourceId=/SUBSCRIPTIONS/…`).
    pub prefix: String,
    /// Only these NICs (MAC addresses, any case, separators or not); all
    /// when empty.
    pub macs: Vec<String>,
    /// SAS token (query string). Prefer `sas_token_file`; without either,
    /// the `[azure]` identity's token is used.
    pub sas_token: Option<Secret>,
    pub sas_token_file: Option<PathBuf>,
    /// Trust only these CA certificates (PEM) for the account's TLS.
    pub ca_file: Option<PathBuf>,
    /// Seconds between looks for new blocks (the service appends about
    /// once a minute).
    pub poll_interval: Seconds,
    /// Blobs of hours that started longer ago than this are not read, and
    /// their checkpoint entries are dropped: how far back a first start
    /// reads, and how long a finished hour is remembered.
    pub retention: Seconds,
    /// A flow with no tuple for this long (in the logs' time) is closed
    /// with a final segment without counters.
    pub idle_timeout: Seconds,
    /// Open flows kept at most (the one seen longest ago is closed first).
    pub max_open_flows: usize,
    /// Blobs per listing page (the service's default, 5000, when unset).
    pub page_size: Option<u32>,
    pub checkpoint: Option<PathBuf>,
    pub on_stop: OnStop,
    pub shutdown_grace: Seconds,
}

impl Default for FlowlogConfig {
    fn default() -> Self {
        FlowlogConfig {
            name: None,
            account_url: String::new(),
            container: "insights-logs-flowlogflowevent".into(),
            prefix: String::new(),
            macs: Vec::new(),
            sas_token: None,
            sas_token_file: None,
            ca_file: None,
            poll_interval: Seconds(60.0),
            retention: Seconds(3.0 * 3600.0),
            idle_timeout: Seconds(35.0 * 60.0),
            max_open_flows: 1 << 20,
            page_size: None,
            checkpoint: None,
            on_stop: OnStop::Checkpoint,
            shutdown_grace: Seconds(5.0),
        }
    }
}

impl FlowlogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = self;
        Seconds::all_within_bounds(&[
            ("source.flowlog.poll_interval", f.poll_interval),
            ("source.flowlog.retention", f.retention),
            ("source.flowlog.idle_timeout", f.idle_timeout),
            ("source.flowlog.shutdown_grace", f.shutdown_grace),
        ])?;
        if f.account_url.is_empty() || f.container.is_empty() {
            return Err(ConfigError::Invalid(
                "source.flowlog needs account_url and container".into(),
            ));
        }
        if f.sas_token.is_some() && f.sas_token_file.is_some() {
            return Err(ConfigError::Invalid(
                "source.flowlog: give sas_token or sas_token_file, not both".into(),
            ));
        }
        if f.page_size.is_some_and(|n| n == 0 || n > 5000) {
            return Err(ConfigError::Invalid(
                "source.flowlog.page_size: must be in 1..=5000".into(),
            ));
        }
        if f.max_open_flows == 0 {
            return Err(ConfigError::Invalid(
                "source.flowlog.max_open_flows: must be at least 1".into(),
            ));
        }
        for m in &f.macs {
            let hex = m.chars().filter(char::is_ascii_hexdigit).count();
            if hex != 12
                || m.chars()
                    .any(|c| !c.is_ascii_hexdigit() && c != '-' && c != ':')
            {
                return Err(ConfigError::Invalid(format!(
                    "source.flowlog.macs: {m:?} is not a MAC address"
                )));
            }
        }
        Ok(())
    }

    /// The container as a Blob source sees it: what the credentials and
    /// the client are made from (the same SAS, identity and CA choices).
    pub fn storage(&self) -> BlobConfig {
        BlobConfig {
            name: self.name.clone(),
            account_url: self.account_url.clone(),
            container: self.container.clone(),
            prefix: self.prefix.clone(),
            sas_token: self.sas_token.clone(),
            sas_token_file: self.sas_token_file.clone(),
            ca_file: self.ca_file.clone(),
            page_size: self.page_size,
            ..BlobConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn several_flowlog_sources_with_names_and_checks() {
        let cfg = Config::parse(
            r#"
[[source.flowlog]]
account_url = "https://acct.blob.core.windows.net"
sas_token = "sv=2021-12-02&sig=secret"
macs = ["00-0D-3A-F8-78-56"]

[[source.flowlog]]
name = "nsg"
account_url = "https://acct.blob.core.windows.net"
container = "insights-logs-networksecuritygroupflowevent"
prefix = "resourceId=/SUBSCRIPTIONS/"
retention = 7200
"#,
        )
        .unwrap();
        let f = &cfg.source.flowlog;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].container, "insights-logs-flowlogflowevent");
        assert_eq!(f[1].retention.get(), 7200.0);
        assert_eq!(cfg.source.stream_names(), vec!["flowlog-1", "nsg"]);
        // The secret is never printed.
        assert!(!format!("{:?}", f[0]).contains("secret"));
        assert_eq!(f[0].storage().container, f[0].container);
        for bad in [
            "[[source.flowlog]]\ncontainer = \"c\"",
            "[[source.flowlog]]\naccount_url = \"https://a\"\nmacs = [\"nope\"]",
            "[[source.flowlog]]\naccount_url = \"https://a\"\nmax_open_flows = 0",
            "[[source.flowlog]]\naccount_url = \"https://a\"\nretention = -1",
            "[[source.flowlog]]\naccount_url = \"https://a\"\nwhat = 1",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
