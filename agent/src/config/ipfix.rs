//! `[[export.ipfix]]`: IPFIX collectors `vmflow run` also (or only) sends
//! records to. Best effort by nature, unlike the spooled mTLS export: what
//! cannot be sent is counted, never retried from disk.

use std::path::PathBuf;

use serde::Deserialize;
use vmflow_proto::ipfix::{IpfixMode, MAX_MESSAGE, MIN_MESSAGE};

use super::{ConfigError, Seconds};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpfixTransport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpfixModeConfig {
    #[default]
    Biflow,
    Uniflow,
}

impl From<IpfixModeConfig> for IpfixMode {
    fn from(m: IpfixModeConfig) -> IpfixMode {
        match m {
            IpfixModeConfig::Biflow => IpfixMode::Biflow,
            IpfixModeConfig::Uniflow => IpfixMode::Uniflow,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpfixExportConfig {
    /// `host:port` of the IPFIX collector (nfcapd, goflow2, ipfixcol2, …).
    pub collector: String,
    #[serde(default)]
    pub transport: IpfixTransport,
    /// TLS over TCP, with the same kind of settings as `[export]`.
    #[serde(default)]
    pub tls: bool,
    #[serde(default = "default_server_name")]
    pub server_name: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub observation_domain: u32,
    /// UDP: seconds between template resends, so a collector that starts
    /// (or restarts) late learns them. TCP sends them once per connection.
    #[serde(default = "default_template_refresh")]
    pub template_refresh: Seconds,
    #[serde(default)]
    pub mode: IpfixModeConfig,
    /// Largest message in bytes; default 1400 over UDP (one datagram within
    /// a 1500-byte MTU), 65535 over TCP.
    pub max_message: Option<usize>,
    /// Messages per second at most (0: as fast as they come). Over UDP a
    /// whole capture file's records at once would overflow a collector's
    /// socket buffer; default 10000 for UDP (about 250,000 records/s in
    /// 1400-byte messages), unpaced for TCP, which has flow control.
    pub max_rate: Option<u32>,
    /// Record batches waiting for the sender (a TCP collector down, a slow
    /// link); beyond it batches are dropped and counted.
    #[serde(default = "default_queue_batches")]
    pub queue_batches: usize,
}

fn default_server_name() -> String {
    "localhost".into()
}
fn default_template_refresh() -> Seconds {
    Seconds(60.0)
}
fn default_queue_batches() -> usize {
    1024
}

impl IpfixExportConfig {
    pub fn max_message(&self) -> usize {
        self.max_message.unwrap_or(match self.transport {
            IpfixTransport::Udp => 1400,
            IpfixTransport::Tcp => MAX_MESSAGE,
        })
    }

    pub fn max_rate(&self) -> u32 {
        self.max_rate.unwrap_or(match self.transport {
            IpfixTransport::Udp => 10_000,
            IpfixTransport::Tcp => 0,
        })
    }

    /// The TLS files, present exactly when TLS is on.
    pub fn tls_files(&self) -> Option<(&PathBuf, &PathBuf, &PathBuf)> {
        match (self.tls, &self.ca, &self.cert, &self.key) {
            (true, Some(ca), Some(cert), Some(key)) => Some((ca, cert, key)),
            _ => None,
        }
    }

    pub fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("export.ipfix[{i}].{k}");
        let bad = |k: &str, why: String| Err(ConfigError::Invalid(format!("{} {why}", key(k))));
        super::address::host_port(&key("collector"), &self.collector)?;
        let r = self.template_refresh.get();
        if !(r.is_finite() && (0.1..=3600.0).contains(&r)) {
            return bad(
                "template_refresh",
                format!(
                    "= {r}: must be 0.1..=3600 seconds (RFC 7011 advises a few minutes at most)"
                ),
            );
        }
        let m = self.max_message();
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&m) {
            return bad(
                "max_message",
                format!("= {m}: must be in {MIN_MESSAGE}..={MAX_MESSAGE}"),
            );
        }
        if self.queue_batches == 0 || self.queue_batches > 1 << 20 {
            return bad(
                "queue_batches",
                format!("= {}: must be in 1..=1048576", self.queue_batches),
            );
        }
        if self.tls {
            if self.transport != IpfixTransport::Tcp {
                return bad("tls", "= true: needs transport = \"tcp\"".into());
            }
            for (k, v) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
                if v.is_none() {
                    return bad(k, "is missing: tls = true needs ca, cert and key".into());
                }
            }
        } else if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
            return bad(
                "tls",
                "is false but ca/cert/key are set: say tls = true".into(),
            );
        }
        Ok(())
    }
}
