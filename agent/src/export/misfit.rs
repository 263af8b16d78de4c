//! TLS failures that are configuration errors (another CA, another name,
//! an expired certificate, the collector refusing ours): told as such, with
//! what to check, because retrying cannot mend them.

use std::path::{Path, PathBuf};

/// The files the agent's TLS comes from, named in messages about a
/// connection that fails because of them.
#[derive(Clone, Debug, Default)]
pub struct TrustFiles {
    /// `export.ca` and the names of the CAs in it.
    pub ca: PathBuf,
    pub ca_names: Vec<String>,
    /// `export.cert`.
    pub cert: PathBuf,
}

impl TrustFiles {
    /// `ca_names`: the subject names of the CAs in `ca` (`tls::cert_names`).
    pub fn new(ca: &Path, ca_names: Vec<String>, cert: &Path) -> TrustFiles {
        TrustFiles {
            ca: ca.to_path_buf(),
            ca_names,
            cert: cert.to_path_buf(),
        }
    }

    fn ca(&self) -> String {
        let names: Vec<String> = self.ca_names.iter().map(|n| format!("{n:?}")).collect();
        match names.is_empty() {
            true => format!("export.ca ({})", self.ca.display()),
            false => format!("export.ca ({}, {})", self.ca.display(), names.join(", ")),
        }
    }
}

/// A TLS failure that no retry mends: the configured certificates or names
/// do not fit the collector's. `None` for everything else (a network
/// failure, a collector going away), which retrying may mend.
pub fn misconfigured(e: &std::io::Error, server_name: &str, files: &TrustFiles) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C};
    let e = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "the collector's certificate is not signed by {}: check that export.ca is the CA \
                 `vmflow certs init` made for this collector (the ca.pem beside its collector.pem)",
                files.ca()
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the collector's certificate is not valid for export.server_name = {server_name:?}: \
                 set server_name to a name the collector's certificate carries"
            ),
            C::Expired | C::ExpiredContext { .. } => "the collector's certificate has expired: \
                 renew it (or check this machine's clock)"
                .to_string(),
            C::NotValidYet | C::NotValidYetContext { .. } => "the collector's certificate is not \
                 valid yet: check this machine's clock (or the certificate's start date)"
                .to_string(),
            other => format!(
                "the collector's certificate is refused ({other:?}): check it and {}",
                files.ca()
            ),
        },
        rustls::Error::AlertReceived(
            a @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired),
        ) => format!(
            "the collector refused this agent's certificate ({a:?}): check that export.cert ({}) \
             is signed by the CA the collector takes (its --client-ca) and is valid now",
            files.cert.display()
        ),
        _ => return None,
    })
}
