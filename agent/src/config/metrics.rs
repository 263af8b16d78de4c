//! `[metrics]`: the Prometheus endpoint and `/healthz` (off unless
//! `listen` is given).

use serde::Deserialize;

use super::ConfigError;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve `/metrics` and `/healthz` on; port 0 picks a
    /// free one (the bound address is logged).
    pub listen: Option<String>,
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(l) = &self.listen {
            super::listen_addr("metrics.listen", l)?;
        }
        Ok(())
    }

    /// The address to listen on, resolved.
    pub fn addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|l| super::listen_addr("metrics.listen", l))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn off_by_default_and_checked() {
        assert_eq!(Config::parse("").unwrap().metrics.listen, None);
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9750\"\n").unwrap();
        assert_eq!(
            c.metrics.addr().unwrap(),
            Some("127.0.0.1:9750".parse().unwrap())
        );
        let e = Config::parse("[metrics]\nlisten = \"127.0.0.1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen"), "{e}");
        assert!(Config::parse("[metrics]\nport = 1\n").is_err());
    }
}
