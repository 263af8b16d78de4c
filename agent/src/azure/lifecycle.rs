//! Running the capture manager from the configuration: fills in what the
//! instance metadata service knows (subscription, region, this VM), then
//! runs rounds on the wall clock until told to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::arm::Arm;
use super::auth::Tokens;
use super::captures::Manager;
use super::{check_endpoint, AzureError};
use crate::config::{AzureConfig, CapturesConfig};

/// This VM's subscription, region and ARM id, from the metadata service.
pub fn instance(imds: &str) -> Result<(String, String, String), AzureError> {
    let op = "instance metadata";
    check_endpoint(imds, op)?;
    let http = super::http_agent(Duration::from_secs(5));
    let url = format!(
        "{}/metadata/instance?api-version=2021-02-01",
        imds.trim_end_matches('/')
    );
    let mut r = http
        .get(&url)
        .header("Metadata", "true")
        .call()
        .map_err(|e| {
            super::credentials::metadata_unreachable(
                op,
                imds,
                &e.to_string(),
                "give subscription, location and targets in [azure.captures], and a service \
                 principal in [azure] (identity = \"service_principal\", tenant, client_id, \
                 client_secret_file)",
            )
        })?;
    let body = r
        .body_mut()
        .read_to_string()
        .map_err(|e| AzureError::Transport {
            op: op.into(),
            msg: e.to_string(),
        })?;
    let v: Value = serde_json::from_str(&body).map_err(|e| AzureError::Response {
        op: op.into(),
        msg: e.to_string(),
    })?;
    let c = &v["compute"];
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Ok((s("subscriptionId"), s("location"), s("resourceId")))
}

/// `c` with subscription, location, watcher and targets filled in (from the
/// instance metadata service where not given).
pub fn settings(c: &CapturesConfig, az: &AzureConfig) -> Result<CapturesConfig, AzureError> {
    let mut c = c.clone();
    if c.subscription.is_empty() || c.location.is_empty() || c.targets.is_empty() {
        let (s, l, id) = instance(&az.imds_endpoint)?;
        if c.subscription.is_empty() {
            c.subscription = s;
        }
        if c.location.is_empty() {
            c.location = l;
        }
        if c.targets.is_empty() && !id.is_empty() {
            c.targets.push(id);
        }
    }
    if c.subscription.is_empty() || c.location.is_empty() || c.targets.is_empty() {
        return Err(AzureError::Credentials(
            "azure.captures: subscription, location and targets are needed (not on an Azure VM?)"
                .into(),
        ));
    }
    if c.watcher.is_empty() {
        c.watcher = format!("NetworkWatcher_{}", c.location);
    }
    Ok(c)
}

pub fn manager(c: &CapturesConfig, az: &AzureConfig) -> Result<Manager, AzureError> {
    let tokens = Tokens::new(
        super::credentials::identity(az)?,
        "https://management.azure.com/",
    );
    let arm = Arm::new(&c.endpoint, &c.api_version, tokens)?;
    Ok(Manager::new(arm, settings(c, az)?))
}

/// Rounds every `poll_interval` until `stop`; an error is logged (once per
/// distinct message) and the next round tries again.
pub fn run(mut m: Manager, poll: Duration, stop: &AtomicBool) {
    let mut last_error = String::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match m.tick() {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::error!("capture lifecycle: {msg}; next round in {poll:?}");
                    last_error = msg;
                }
            }
        }
        while started.elapsed() < poll && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    tracing::info!(
        "capture lifecycle stopped: {} started, {} renewed, {} deleted, {} gaps",
        m.stats.started,
        m.stats.renewed,
        m.stats.deleted,
        m.stats.gaps
    );
}
