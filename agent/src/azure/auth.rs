//! Entra ID access tokens: from the instance metadata service (the VM's
//! managed identity) or by the client-credentials flow (a service principal).
//! Tokens are cached until five minutes before they expire.

use std::time::{Duration, Instant};

use super::{check_endpoint, encode, error_text, redact, AzureError};

#[derive(Clone, Debug)]
pub enum Identity {
    /// The VM's managed identity; `client_id` picks a user-assigned one.
    Managed {
        endpoint: String,
        client_id: Option<String>,
    },
    ServicePrincipal {
        authority: String,
        tenant: String,
        client_id: String,
        secret: String,
    },
}

pub struct Tokens {
    identity: Identity,
    /// App ID URI of the resource, e.g. `https://storage.azure.com/`.
    resource: String,
    cached: Option<(String, Instant)>,
    /// Delays between tries of a transient failure (IMDS guidance: 0, 2, 6, 14, 30 s).
    pub backoff: Vec<Duration>,
}

impl Tokens {
    pub fn new(identity: Identity, resource: &str) -> Self {
        Tokens {
            identity,
            resource: resource.to_string(),
            cached: None,
            backoff: [0, 2, 6, 14, 30].map(Duration::from_secs).to_vec(),
        }
    }

    /// A valid bearer token (fetched or cached).
    pub fn token(&mut self, http: &ureq::Agent) -> Result<String, AzureError> {
        if let Some((t, until)) = &self.cached {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let mut last = None;
        for (i, delay) in self.backoff.clone().into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(delay);
            }
            match self.fetch(http) {
                Ok((t, life)) => {
                    let until = Instant::now() + life.saturating_sub(Duration::from_secs(300));
                    self.cached = Some((t.clone(), until));
                    return Ok(t);
                }
                Err(e) if e.is_transient() || matches!(e.status(), Some(404 | 410)) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| AzureError::Credentials("no token request was made".into())))
    }

    /// Forgets the cached token (the service refused it).
    pub fn invalidate(&mut self) {
        self.cached = None;
    }

    fn fetch(&self, http: &ureq::Agent) -> Result<(String, Duration), AzureError> {
        let (op, res) = match &self.identity {
            Identity::Managed {
                endpoint,
                client_id,
            } => {
                let op = "managed identity token (instance metadata service)".to_string();
                check_endpoint(endpoint, &op)?;
                let mut url = format!(
                    "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                    endpoint.trim_end_matches('/'),
                    encode(&self.resource, false)
                );
                if let Some(c) = client_id {
                    url.push_str(&format!("&client_id={}", encode(c, false)));
                }
                // The metadata service refuses proxied requests; ureq does
                // not read proxy settings from the environment unless asked.
                (op, http.get(&url).header("Metadata", "true").call())
            }
            Identity::ServicePrincipal {
                authority,
                tenant,
                client_id,
                secret,
            } => {
                let op = format!("service principal token (tenant {tenant})");
                check_endpoint(authority, &op)?;
                let url = format!(
                    "{}/{}/oauth2/v2.0/token",
                    authority.trim_end_matches('/'),
                    encode(tenant, false)
                );
                let scope = format!("{}.default", self.resource);
                (
                    op,
                    http.post(&url).send_form([
                        ("client_id", client_id.as_str()),
                        ("client_secret", secret.as_str()),
                        ("grant_type", "client_credentials"),
                        ("scope", scope.as_str()),
                    ]),
                )
            }
        };
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let mut resp = res.map_err(|e| {
            let msg = redact(&e.to_string(), &secrets);
            match &self.identity {
                Identity::Managed { endpoint, .. } => super::credentials::metadata_unreachable(
                    &op,
                    endpoint,
                    &msg,
                    super::credentials::INSTEAD_OF_MANAGED,
                ),
                Identity::ServicePrincipal { .. } => AzureError::Transport {
                    op: op.clone(),
                    msg,
                },
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| AzureError::Transport {
                op: op.clone(),
                msg: redact(&e.to_string(), &secrets),
            })?;
        if status != 200 {
            let (code, message) = error_text(&body, &secrets);
            return Err(AzureError::Status {
                op,
                status,
                code,
                message,
            });
        }
        parse_token(&body).map_err(|msg| AzureError::Response { op, msg })
    }

    fn secrets(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Identity::ServicePrincipal { secret, .. } = &self.identity {
            v.push(secret.clone());
        }
        if let Some((t, _)) = &self.cached {
            v.push(t.clone());
        }
        v
    }
}

/// `access_token` and its lifetime. IMDS sends numbers as strings, Entra ID
/// as numbers: both are taken.
fn parse_token(body: &str) -> Result<(String, Duration), String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("no access_token")?
        .to_string();
    let num = |k: &str| -> Option<u64> {
        let x = v.get(k)?;
        x.as_u64().or_else(|| x.as_str()?.trim().parse().ok())
    };
    let life = match (num("expires_in"), num("expires_on")) {
        (Some(s), _) => s,
        (None, Some(on)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            on.saturating_sub(now)
        }
        (None, None) => 300,
    };
    Ok((token, Duration::from_secs(life)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_as_strings_or_numbers() {
        let imds = r#"{"access_token":"eyJ0","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://storage.azure.com/","token_type":"Bearer"}"#;
        assert_eq!(
            parse_token(imds).unwrap(),
            ("eyJ0".into(), Duration::from_secs(3599))
        );
        let entra = r#"{"token_type":"Bearer","expires_in":3599,"access_token":"abc"}"#;
        assert_eq!(parse_token(entra).unwrap().1, Duration::from_secs(3599));
        assert!(parse_token(r#"{"token_type":"Bearer"}"#).is_err());
        assert!(parse_token("<html>").is_err());
    }
}
