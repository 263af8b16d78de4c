//! The packet-capture lifecycle on Network Watcher, the job the original
//! service did by hand: make sure a watcher exists, keep one capture running
//! for every target VM, start the next one before the current one stops (the
//! capture-file sources drop the packets both hold), delete finished ones.
//! Continuous capture (rolling local files) is used when asked for.
//!
//! The manager reads time from a clock it is given (the wall clock by
//! default), fresh before every decision, so a round slowed by long-running
//! operations never acts on a stale time, and a test can run hours of
//! renewals in a second.

use serde_json::{json, Value};

use super::arm::{Arm, Method};
use super::AzureError;
use crate::config::CapturesConfig;

/// What a capture is doing, as `queryStatus` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureStatus {
    pub status: String,
    pub start: Option<String>,
    pub stop_reason: Option<String>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureInfo {
    pub name: String,
    pub target: String,
    pub provisioning: String,
}

/// The manager's timeline, for logs, stats and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    WatcherCreated,
    Started {
        name: String,
        at: u64,
    },
    Deleted {
        name: String,
    },
    /// Seconds of time no capture of this target covered (or may not have).
    Gap {
        target: String,
        from: u64,
        to: u64,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagerStats {
    pub started: u64,
    pub renewed: u64,
    pub deleted: u64,
    pub gaps: u64,
    pub refused: u64,
    /// Continuous capture was asked for and refused (renewals used instead).
    pub continuous_refused: u64,
}

pub struct Manager {
    pub arm: Arm,
    /// The configuration with subscription, location, watcher and targets
    /// filled in.
    pub settings: CapturesConfig,
    watcher_checked: bool,
    pub events: Vec<Event>,
    pub stats: ManagerStats,
    /// When each target's newest capture stops (for gap accounting).
    covered_until: std::collections::HashMap<String, u64>,
    clock: Box<dyn Fn() -> u64 + Send>,
}

fn vm_name(target: &str) -> String {
    target
        .rsplit('/')
        .next()
        .unwrap_or("vm")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Manager {
    pub fn new(arm: Arm, settings: CapturesConfig) -> Self {
        Manager {
            arm,
            settings,
            watcher_checked: false,
            events: Vec::new(),
            stats: ManagerStats::default(),
            covered_until: Default::default(),
            clock: Box::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
        }
    }

    /// Unix seconds from `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn watcher_path(&self) -> String {
        let s = &self.settings;
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkWatchers/{}",
            s.subscription, s.resource_group, s.watcher
        )
    }

    fn capture_path(&self, name: &str) -> String {
        format!("{}/packetCaptures/{name}", self.watcher_path())
    }

    /// Creates the regional watcher if it does not exist.
    pub fn ensure_watcher(&mut self) -> Result<(), AzureError> {
        let path = self.watcher_path();
        match self
            .arm
            .call(Method::Get, &path, None, "get network watcher")
        {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                let body = json!({ "location": self.settings.location, "properties": {} });
                let r = self
                    .arm
                    .call(Method::Put, &path, Some(&body), "create network watcher")?;
                self.arm.wait(&r, "create network watcher")?;
                tracing::info!("created network watcher {}", self.settings.watcher);
                self.events.push(Event::WatcherCreated);
            }
            Err(e) => return Err(e),
        }
        self.watcher_checked = true;
        Ok(())
    }

    pub fn list(&mut self) -> Result<Vec<CaptureInfo>, AzureError> {
        let mut out = Vec::new();
        let mut path = format!("{}/packetCaptures", self.watcher_path());
        let mut reply = self
            .arm
            .call(Method::Get, &path, None, "list packet captures")?;
        loop {
            let items = reply
                .body
                .get("value")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for v in items {
                let p = &v["properties"];
                out.push(CaptureInfo {
                    name: v["name"].as_str().unwrap_or("").to_string(),
                    target: p["target"].as_str().unwrap_or("").to_string(),
                    provisioning: p["provisioningState"].as_str().unwrap_or("").to_string(),
                });
            }
            // One page in the hand-written spec; follow nextLink when given.
            match reply
                .body
                .get("nextLink")
                .and_then(Value::as_str)
                .and_then(|l| self.arm.follow_url(l))
            {
                Some(next) if next != path => {
                    path = next;
                    let rel = path
                        .split_once("://")
                        .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string()))
                        .unwrap_or_default();
                    reply = self
                        .arm
                        .call(Method::Get, &rel, None, "list packet captures")?;
                }
                _ => return Ok(out),
            }
        }
    }

    pub fn get(&mut self, name: &str) -> Result<Value, AzureError> {
        let path = self.capture_path(name);
        Ok(self
            .arm
            .call(Method::Get, &path, None, &format!("get capture {name}"))?
            .body)
    }

    /// `queryStatus`: 200 with the result, or 202 and a Location to poll
    /// until it gives the result. A 202's own body is provisional and not
    /// used; when its Location cannot be followed (malformed, or pointing
    /// elsewhere) the status is asked again after Retry-After.
    pub fn status(&mut self, name: &str) -> Result<CaptureStatus, AzureError> {
        let path = format!("{}/queryStatus", self.capture_path(name));
        let op = format!("query status of capture {name}");
        for _ in 0..self.arm.policy.max_polls {
            let r = self.arm.call(Method::Post, &path, None, &op)?;
            if r.status != 202 {
                return parse_status(&r.body).ok_or_else(|| AzureError::Response {
                    op: op.clone(),
                    msg: "no packetCaptureStatus in the answer".into(),
                });
            }
            let usable = r.location.clone().and_then(|l| self.arm.follow_url(&l));
            if usable.is_some() {
                let fixed = super::arm::Reply {
                    location: usable,
                    async_op: None,
                    ..r.clone()
                };
                if let Some(s) = self.arm.wait(&fixed, &op)?.as_ref().and_then(parse_status) {
                    return Ok(s);
                }
            }
            let wait = r.retry_after.unwrap_or(self.arm.policy.poll);
            self.arm.sleep_for(wait);
        }
        Err(AzureError::Response {
            op,
            msg: "no status after repeated queries".into(),
        })
    }

    pub fn create(&mut self, name: &str, target: &str) -> Result<(), AzureError> {
        let s = &self.settings;
        let mut storage = serde_json::Map::new();
        if let Some(id) = &s.storage_id {
            storage.insert("storageId".into(), json!(id));
        }
        if let Some(dir) = &s.local_path {
            // Linux paths; `localPath` with continuous capture, else `filePath`.
            let file = format!("{}/{name}.cap", dir.trim_end_matches('/'));
            let key = if s.continuous {
                "localPath"
            } else {
                "filePath"
            };
            storage.insert(key.into(), json!(file));
        }
        let mut props = json!({
            "target": target,
            "bytesToCapturePerPacket": s.bytes_per_packet,
            "timeLimitInSeconds": s.time_limit,
            "storageLocation": Value::Object(storage),
        });
        if s.continuous {
            props["continuousCapture"] = json!(true);
            props["captureSettings"] = json!({
                "fileCount": s.file_count,
                "fileSizeInBytes": s.file_size,
                "sessionTimeLimitInSeconds": s.time_limit,
            });
            // The session limit governs a continuous capture.
            props["timeLimitInSeconds"] = json!(s.time_limit.min(18_000));
        }
        let body = json!({ "properties": props });
        let op = format!("create capture {name}");
        let r = self
            .arm
            .call(Method::Put, &self.capture_path(name), Some(&body), &op)?;
        self.arm.wait(&r, &op)?;
        let got = self.get(name)?;
        let state = got["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("");
        if state == "Failed" {
            return Err(AzureError::Status {
                op,
                status: 200,
                code: "ProvisioningFailed".into(),
                message: format!("capture {name} failed to provision"),
            });
        }
        Ok(())
    }

    pub fn stop(&mut self, name: &str) -> Result<(), AzureError> {
        let op = format!("stop capture {name}");
        let path = format!("{}/stop", self.capture_path(name));
        let r = self.arm.call(Method::Post, &path, None, &op)?;
        self.arm.wait(&r, &op)?;
        Ok(())
    }

    /// Deletes the capture resource (its files stay); a missing one is fine.
    pub fn delete(&mut self, name: &str) -> Result<(), AzureError> {
        let op = format!("delete capture {name}");
        match self
            .arm
            .call(Method::Delete, &self.capture_path(name), None, &op)
        {
            Ok(r) => {
                self.arm.wait(&r, &op)?;
                Ok(())
            }
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Our capture name for `target` started at `now`, and back.
    pub fn name_for(&self, target: &str, now: u64) -> String {
        format!("{}-{}-{now}", self.settings.name_prefix, vm_name(target))
    }

    fn started_at(&self, name: &str) -> Option<u64> {
        name.strip_prefix(&self.settings.name_prefix)?
            .rsplit('-')
            .next()?
            .parse()
            .ok()
    }

    /// One round: delete finished captures, start or renew what is due.
    pub fn tick(&mut self) -> Result<(), AzureError> {
        if !self.watcher_checked {
            self.ensure_watcher()?;
        }
        let ours: Vec<CaptureInfo> = self
            .list()?
            .into_iter()
            .filter(|c| self.started_at(&c.name).is_some())
            .collect();
        let mut running: Vec<(String, String, u64)> = Vec::new();
        for c in ours {
            let st = self.status(&c.name)?;
            let done =
                matches!(st.status.as_str(), "Stopped" | "Error") || c.provisioning == "Failed";
            if done {
                if st.status == "Error" {
                    tracing::warn!(
                        "capture {} ended in error: {}",
                        c.name,
                        st.errors.join(", ")
                    );
                }
                self.delete(&c.name)?;
                self.stats.deleted += 1;
                self.events.push(Event::Deleted { name: c.name });
            } else if let Some(at) = self.started_at(&c.name) {
                running.push((c.name, c.target.to_ascii_lowercase(), at));
            }
        }
        let limit = self.settings.time_limit;
        for target in self.settings.targets.clone() {
            let now = self.now();
            let key = target.to_ascii_lowercase();
            let newest = running
                .iter()
                .filter(|(_, t, _)| *t == key)
                .max_by_key(|(_, _, at)| *at)
                .cloned();
            match newest {
                None => {
                    if let Some(&until) = self.covered_until.get(&key) {
                        if now > until {
                            self.gap(&target, until, now, "no capture was running");
                        }
                    }
                    self.start(&target, false)?;
                }
                Some((name, _, at)) if now + self.settings.renew_before >= at + limit => {
                    match self.start(&target, true) {
                        Ok(()) => {}
                        Err(e) if matches!(e.status(), Some(400 | 409)) => {
                            // One capture per VM at a time: renew at once and
                            // say what cannot be covered.
                            self.stats.refused += 1;
                            tracing::warn!(
                                "a second capture on {} was refused ({e}); stopping {name} and starting the next at once",
                                vm_name(&target)
                            );
                            self.stop(&name)?;
                            let at = self.now();
                            self.gap(
                                &target,
                                at,
                                at,
                                "renewed without overlap: packets while the next capture starts are not captured",
                            );
                            self.start(&target, false)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn start(&mut self, target: &str, renewal: bool) -> Result<(), AzureError> {
        let now = self.now();
        let name = self.name_for(target, now);
        match self.create(&name, target) {
            // Continuous capture is a preview feature: where the service
            // does not take it, renewals do the same job.
            Err(e) if self.settings.continuous && e.status() == Some(400) => {
                tracing::warn!(
                    "continuous capture refused ({e}); falling back to renewing captures"
                );
                self.settings.continuous = false;
                self.settings.time_limit = self.settings.time_limit.min(18_000);
                self.stats.continuous_refused += 1;
                self.create(&name, target)?;
            }
            r => r?,
        }
        tracing::info!("started capture {name} on {}", vm_name(target));
        self.stats.started += 1;
        if renewal {
            self.stats.renewed += 1;
        }
        self.covered_until
            .insert(target.to_ascii_lowercase(), now + self.settings.time_limit);
        self.events.push(Event::Started { name, at: now });
        Ok(())
    }

    fn gap(&mut self, target: &str, from: u64, to: u64, reason: &str) {
        tracing::warn!(
            "coverage gap on {} from {from} to {to}: {reason}",
            vm_name(target)
        );
        self.stats.gaps += 1;
        self.events.push(Event::Gap {
            target: target.to_string(),
            from,
            to,
            reason: reason.to_string(),
        });
    }
}

fn parse_status(v: &Value) -> Option<CaptureStatus> {
    let status = v.get("packetCaptureStatus")?.as_str()?.to_string();
    Some(CaptureStatus {
        status,
        start: v
            .get("captureStartTime")
            .and_then(Value::as_str)
            .map(str::to_string),
        stop_reason: v
            .get("stopReason")
            .and_then(Value::as_str)
            .map(str::to_string),
        errors: v
            .get("packetCaptureError")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}
