//! Azure clients: Blob storage (capture files), Entra ID tokens (managed
//! identity, service principal) and the Network Watcher ARM API. Plain
//! blocking HTTPS on the source's own thread.
//!
//! Secrets (SAS tokens, client secrets, bearer tokens) never reach a log
//! line or an error: errors name the operation, never the URL, and every
//! message from a server or from the HTTP stack is passed through [`redact`].

pub mod arm;
pub mod auth;
pub mod blob;
pub mod captures;
pub mod credentials;
pub mod lifecycle;

use std::time::Duration;

/// What went wrong talking to Azure.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// The service answered with an error status.
    #[error("{op}: HTTP {status} {code}: {message}")]
    Status {
        op: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: connection, TLS, timeout.
    #[error("{op}: {msg}")]
    Transport { op: String, msg: String },
    #[error("{op}: unreadable response: {msg}")]
    Response { op: String, msg: String },
    #[error("credentials: {0}")]
    Credentials(String),
    /// The instance metadata service did not answer at all: most likely
    /// not an Azure VM, which no quick retry changes (the message says
    /// what to configure instead; followed sources still retry on their
    /// own schedule).
    #[error("{op}: {msg}")]
    NoMetadata { op: String, msg: String },
}

impl AzureError {
    /// Worth retrying later: throttling, server trouble, no connection.
    pub fn is_transient(&self) -> bool {
        match self {
            AzureError::Status { status, .. } => {
                matches!(status, 408 | 429 | 500..=599)
            }
            AzureError::Transport { .. } => true,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Removes anything secret-looking from `text`: the given secrets verbatim,
/// and the value of any `sig=`, `se=`-bearing query string or bearer token.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "[redacted]");
    }
    // A URL's query string may hold a SAS: keep the path, drop the query.
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find('?') {
        cleaned.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '>')
            .unwrap_or(tail.len());
        if tail[..end].contains('=') {
            cleaned.push_str("?[redacted]");
        } else {
            cleaned.push_str(&tail[..end]);
        }
        rest = &tail[end..];
    }
    cleaned.push_str(rest);
    for key in ["sig=", "Bearer "] {
        while let Some(i) = cleaned.find(key) {
            let start = i + key.len();
            let end = cleaned[start..]
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"')
                .map_or(cleaned.len(), |e| start + e);
            if cleaned[start..end] == *"[redacted]" {
                break;
            }
            cleaned.replace_range(start..end, "[redacted]");
        }
    }
    cleaned
}

/// One HTTP agent for every Azure call: bounded times, statuses as values.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    config(timeout).build().into()
}

fn config(timeout: Duration) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // Tokens and SAS must not follow a redirect to another host.
        .max_redirects(0)
}

/// As [`http_agent`], trusting only the CA certificates in `pem` (Azure
/// Stack, a TLS-inspecting proxy, Azurite over HTTPS).
pub fn http_agent_trusting(timeout: Duration, pem: &[u8]) -> Result<ureq::Agent, AzureError> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let certs: Vec<_> = parse_pem(pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(AzureError::Credentials(
            "ca_file holds no PEM certificate".into(),
        ));
    }
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build();
    Ok(config(timeout).tls_config(tls).build().into())
}

/// One request: the method by name, headers, a body (empty for none).
/// Errors are text, for the caller to redact and name its operation.
pub fn request(
    http: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<ureq::http::Response<ureq::Body>, String> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let req = b.body(body).map_err(|e| e.to_string())?;
    http.run(req).map_err(|e| e.to_string())
}

/// Plain HTTP only to this machine (Azurite, the instance metadata service):
/// anything else would put tokens on the wire in clear.
pub fn check_endpoint(url: &str, what: &str) -> Result<(), AzureError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(AzureError::Credentials(format!(
            "{what}: the endpoint must be an https:// URL"
        )));
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    let local = host == "localhost"
        || host == "[::1]"
        || host.starts_with("127.")
        || host == "169.254.169.254";
    if local {
        Ok(())
    } else {
        Err(AzureError::Credentials(format!(
            "{what}: plain http:// is only allowed to loopback or the instance metadata service"
        )))
    }
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved kept).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The Azure error body's code and message (XML for storage, JSON for
/// ARM and Entra ID), redacted, one line.
pub fn error_text(body: &str, secrets: &[&str]) -> (String, String) {
    let pick = |open: &str, close: &str| {
        body.find(open).and_then(|i| {
            let s = i + open.len();
            body[s..].find(close).map(|e| body[s..s + e].to_string())
        })
    };
    let (code, msg) = if body.trim_start().starts_with('<') {
        (pick("<Code>", "</Code>"), pick("<Message>", "</Message>"))
    } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let e = v.get("error").unwrap_or(&v);
        let s = |k: &str| e.get(k).and_then(|x| x.as_str()).map(str::to_string);
        (
            s("code").or_else(|| v.get("error").and_then(|x| x.as_str()).map(str::to_string)),
            s("message").or_else(|| {
                v.get("error_description")
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
            }),
        )
    } else {
        (None, None)
    };
    let first_line = |s: String| {
        s.lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>()
    };
    (
        redact(&code.unwrap_or_default(), secrets),
        redact(&first_line(msg.unwrap_or_default()), secrets),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_sas_and_tokens() {
        let sas = "sv=2021-12-02&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig=abc%2Bdef";
        let line = format!("GET http://127.0.0.1:10000/acct/c?restype=container&{sas} failed; Authorization: Bearer eyJ0eXAi.x.y done");
        let r = redact(&line, &[sas]);
        assert!(!r.contains("abc%2Bdef"), "{r}");
        assert!(!r.contains("eyJ0eXAi"), "{r}");
        assert!(
            r.contains("http://127.0.0.1:10000/acct/c?[redacted]"),
            "{r}"
        );
        assert!(r.contains("done"));
        let r = redact("signature sig=QUJD&se=1 in text", &[]);
        assert!(!r.contains("QUJD"), "{r}");
    }

    #[test]
    fn only_https_or_local_http() {
        assert!(check_endpoint("https://a.blob.core.windows.net", "x").is_ok());
        assert!(check_endpoint("http://127.0.0.1:10000/devstoreaccount1", "x").is_ok());
        assert!(check_endpoint("http://169.254.169.254", "x").is_ok());
        assert!(check_endpoint("http://a.blob.core.windows.net", "x").is_err());
        assert!(check_endpoint("ftp://x", "x").is_err());
    }

    #[test]
    fn error_bodies_of_both_kinds() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message></Error>";
        assert_eq!(
            error_text(xml, &[]),
            (
                "AuthenticationFailed".into(),
                "Server failed to authenticate the request.".into()
            )
        );
        let json = r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#;
        assert_eq!(
            error_text(json, &[]),
            ("TooManyRequests".into(), "slow down".into())
        );
        let entra = r#"{"error":"invalid_client","error_description":"AADSTS7000215: bad secret"}"#;
        assert_eq!(
            error_text(entra, &[]),
            ("invalid_client".into(), "AADSTS7000215: bad secret".into())
        );
    }
}
