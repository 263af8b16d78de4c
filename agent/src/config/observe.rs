//! `[observe]` and `[[watchlist]]`: which observations are raised from the
//! flow records, with what thresholds, and the address lists to watch for.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Seconds};

/// The administrative services an inbound handshake from outside is worth
/// reporting for: SSH, RDP, WinRM (HTTP, HTTPS), SMB, SQL Server, MySQL,
/// PostgreSQL.
pub const ADMIN_PORTS: [u16; 8] = [22, 3389, 5985, 5986, 445, 1433, 3306, 5432];

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// `vmflow run`: raise observations and ship them with the records (in
    /// the same batches, so they are delivered exactly once with them).
    /// `replay` and `capture` raise them when given `--observations`.
    pub ship: bool,
    /// Repeated connection attempts to one local service from one remote
    /// that never completed a handshake or were reset.
    pub failed_access: bool,
    pub failed_access_attempts: u32,
    pub failed_access_window: Seconds,
    /// An inbound handshake from a remote address completed to one of
    /// `admin_ports`.
    pub exposed_service: bool,
    pub admin_ports: Vec<u16>,
    /// A flow with a remote address on a `[[watchlist]]`.
    pub watchlist: bool,
    /// One remote reaching `scan_targets` distinct local (address, port)
    /// pairs within `scan_window`.
    pub scan: bool,
    pub scan_targets: u32,
    pub scan_window: Seconds,
    /// A local service hearing from a country it has not heard from since
    /// start (its first country is the baseline). Needs `[enrich]`.
    pub new_country: bool,
    /// Entries each kind remembers at most: beyond it new sources are
    /// counted as untracked instead of growing memory.
    pub max_tracked: usize,
    /// Flow ids kept as evidence per observation.
    pub evidence: usize,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            ship: false,
            failed_access: true,
            failed_access_attempts: 10,
            failed_access_window: Seconds(60.0),
            exposed_service: true,
            admin_ports: ADMIN_PORTS.to_vec(),
            watchlist: true,
            scan: true,
            scan_targets: 100,
            scan_window: Seconds(60.0),
            new_country: true,
            max_tracked: 100_000,
            evidence: 16,
        }
    }
}

impl ObserveConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError::Invalid(format!("observe.{k}: {why}")));
        if self.failed_access_attempts == 0 {
            return bad("failed_access_attempts", "must be at least 1");
        }
        if self.scan_targets == 0 {
            return bad("scan_targets", "must be at least 1");
        }
        if self.max_tracked == 0 {
            return bad("max_tracked", "must be at least 1");
        }
        Seconds::all_within_bounds(&[
            ("observe.failed_access_window", self.failed_access_window),
            ("observe.scan_window", self.scan_window),
        ])?;
        for (k, s) in [
            ("failed_access_window", self.failed_access_window),
            ("scan_window", self.scan_window),
        ] {
            if s.get() <= 0.0 {
                return bad(k, "must be more than 0 seconds");
            }
        }
        Ok(())
    }
}

/// `[[watchlist]]`: a named file of addresses and networks, one a line.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchlistConfig {
    pub name: String,
    pub file: PathBuf,
}

/// `[enrich]`: MaxMind-format databases (country, ASN) that observations
/// look remote addresses up in.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    pub mmdb: Vec<PathBuf>,
}
