//! Azure Resource Manager calls for Network Watcher: bearer-token requests
//! with `api-version`, retries on throttling (429, honouring Retry-After) and
//! transient 5xx, and the long-running-operation protocol (Azure-AsyncOperation
//! preferred, else Location, each with Retry-After).

use std::time::Duration;

use serde_json::Value;

use super::auth::Tokens;
use super::{check_endpoint, error_text, redact, AzureError};

pub struct Arm {
    http: ureq::Agent,
    endpoint: String,
    pub api_version: String,
    tokens: Tokens,
    /// How the client waits (Retry-After, backoff, LRO polls); tests pass
    /// one that records instead of sleeping.
    sleep: Box<dyn FnMut(Duration) + Send>,
    pub policy: RetryPolicy,
    pub stats: ArmStats,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries of one request before its error is returned.
    pub tries: u32,
    /// First backoff (doubled each time, capped) when no Retry-After is given.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// LRO poll interval when the service gives no Retry-After.
    pub poll: Duration,
    /// Polls of one operation before giving up on it.
    pub max_polls: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            tries: 6,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_secs(5),
            max_polls: 120,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmStats {
    pub requests: u64,
    pub throttled: u64,
    pub server_errors: u64,
    pub lro_polls: u64,
    /// Location headers that could not be used as given.
    pub bad_locations: u64,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub async_op: Option<String>,
    pub location: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

impl Arm {
    pub fn new(endpoint: &str, api_version: &str, tokens: Tokens) -> Result<Self, AzureError> {
        check_endpoint(endpoint, "management API")?;
        Ok(Arm {
            http: super::http_agent(Duration::from_secs(60)),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            api_version: api_version.to_string(),
            tokens,
            sleep: Box::new(std::thread::sleep),
            policy: RetryPolicy::default(),
            stats: ArmStats::default(),
        })
    }

    pub fn sleep_for(&mut self, d: Duration) {
        (self.sleep)(d);
    }

    pub fn with_sleep(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.sleep = Box::new(sleep);
        self
    }

    /// `path` is an ARM resource path (`/subscriptions/...`); `api-version`
    /// is added. Retries throttling and transient failures; returns any
    /// other status to the caller.
    pub fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<Reply, AzureError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{path}{sep}api-version={}",
            self.endpoint, self.api_version
        );
        self.call_url(method, &url, body, op)
    }

    fn call_url(
        &mut self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<Reply, AzureError> {
        let mut delay = self.policy.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let res = self.once(method, url, body, op);
            let wait = match &res {
                Ok(r) if r.status == 429 => {
                    self.stats.throttled += 1;
                    Some(r.retry_after.unwrap_or(delay))
                }
                Ok(r) if r.status >= 500 => {
                    self.stats.server_errors += 1;
                    Some(r.retry_after.unwrap_or(delay))
                }
                Err(e) if e.is_transient() => Some(delay),
                _ => None,
            };
            match (wait, tries < self.policy.tries) {
                (Some(w), true) => {
                    let w = w.min(self.policy.max_backoff);
                    tracing::info!("{op}: throttled or unavailable; retrying in {w:?}");
                    (self.sleep)(w);
                    delay = (delay * 2).min(self.policy.max_backoff);
                }
                _ => {
                    let r = res?;
                    if r.status >= 400 {
                        return Err(status_error(op, &r));
                    }
                    return Ok(r);
                }
            }
        }
    }

    fn once(
        &mut self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        op: &str,
    ) -> Result<Reply, AzureError> {
        self.stats.requests += 1;
        let token = self.tokens.token(&self.http)?;
        let mut headers = vec![("Authorization", format!("Bearer {token}"))];
        let json = match body {
            Some(b) => {
                headers.push(("Content-Type", "application/json".to_string()));
                serde_json::to_vec(b).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let res = super::request(&self.http, method.name(), url, &headers, &json);
        let secrets = [token.as_str()];
        let mut resp = res.map_err(|e| AzureError::Transport {
            op: op.to_string(),
            msg: redact(&e, &secrets),
        })?;
        let h = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let async_op = h("azure-asyncoperation");
        let location = h("location");
        let retry_after = h("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| AzureError::Transport {
                op: op.to_string(),
                msg: redact(&e.to_string(), &secrets),
            })?;
        if status == 401 {
            self.tokens.invalidate();
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else if status >= 400 {
            // Kept as text: error bodies are read by `status_error`.
            Value::String(redact(&text, &secrets))
        } else {
            serde_json::from_str(&text).map_err(|e| AzureError::Response {
                op: format!("{} {op}", method.name()),
                msg: e.to_string(),
            })?
        };
        Ok(Reply {
            status,
            body,
            async_op,
            location,
            retry_after,
        })
    }

    /// An absolute URL for a Location / Azure-AsyncOperation header, if it
    /// may be followed: the token only ever goes to the configured endpoint.
    /// A scheme missing one slash (`https:/host/…`, seen in a published
    /// example) is repaired; anything else unusable is `None`.
    pub fn follow_url(&mut self, header: &str) -> Option<String> {
        let h = header.trim();
        let fixed = if let Some(rest) = h.strip_prefix("https:/").filter(|r| !r.starts_with('/')) {
            self.stats.bad_locations += 1;
            format!("https://{rest}")
        } else if let Some(rest) = h.strip_prefix("http:/").filter(|r| !r.starts_with('/')) {
            self.stats.bad_locations += 1;
            format!("http://{rest}")
        } else if h.starts_with('/') {
            format!("{}{h}", self.endpoint)
        } else {
            h.to_string()
        };
        let host = |u: &str| {
            u.split_once("://")
                .map(|(_, r)| r.split('/').next().unwrap_or("").to_ascii_lowercase())
        };
        if host(&fixed).is_some() && host(&fixed) == host(&self.endpoint) {
            Some(fixed)
        } else {
            self.stats.bad_locations += 1;
            tracing::warn!(
                "ignoring an operation URL that does not point at {} ({})",
                self.endpoint,
                redact(h, &[])
            );
            None
        }
    }

    /// Waits for a long-running operation started by `first` to finish.
    /// `Ok(Some(body))` when the final GET of a Location returned one;
    /// `Ok(None)` when the operation succeeded without a body, or when its
    /// status cannot be followed (then the caller checks the resource).
    pub fn wait(&mut self, first: &Reply, op: &str) -> Result<Option<Value>, AzureError> {
        if !matches!(first.status, 201 | 202) {
            return Ok(Some(first.body.clone()));
        }
        let mut retry = first.retry_after;
        if let Some(url) = first.async_op.clone().and_then(|u| self.follow_url(&u)) {
            for _ in 0..self.policy.max_polls {
                (self.sleep)(retry.unwrap_or(self.policy.poll));
                self.stats.lro_polls += 1;
                let r = self.call_url(Method::Get, &url, None, op)?;
                let status = r
                    .body
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("InProgress")
                    .to_string();
                match status.as_str() {
                    "Succeeded" => return Ok(None),
                    "Failed" | "Canceled" => {
                        let e = r.body.get("error").cloned().unwrap_or(Value::Null);
                        let s =
                            |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        return Err(AzureError::Status {
                            op: op.to_string(),
                            status: 200,
                            code: format!("{status} {}", s("code")),
                            message: s("message"),
                        });
                    }
                    _ => retry = r.retry_after,
                }
            }
            return Err(AzureError::Transport {
                op: op.to_string(),
                msg: "the operation did not finish in time".into(),
            });
        }
        if let Some(url) = first.location.clone().and_then(|u| self.follow_url(&u)) {
            for _ in 0..self.policy.max_polls {
                (self.sleep)(retry.unwrap_or(self.policy.poll));
                self.stats.lro_polls += 1;
                let r = self.call_url(Method::Get, &url, None, op)?;
                if r.status == 202 {
                    retry = r.retry_after;
                    continue;
                }
                return Ok(if r.body.is_null() { None } else { Some(r.body) });
            }
            return Err(AzureError::Transport {
                op: op.to_string(),
                msg: "the operation did not finish in time".into(),
            });
        }
        Ok(None)
    }
}

fn status_error(op: &str, r: &Reply) -> AzureError {
    let text = match &r.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let (code, message) = error_text(&text, &[]);
    AzureError::Status {
        op: op.to_string(),
        status: r.status,
        code,
        message,
    }
}
