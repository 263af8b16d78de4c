//! TLS 1.3 with client certificates, for both ends of the export path. Errors
//! name files, never their contents (keys are secrets).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use rustls::pki_types::pem;

/// A certificate, key or CA that cannot be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("TLS: {}: no certificate in file", path.display())]
    NoCertificate { path: PathBuf },
    // The parser's error says what kind of PEM problem it was, not the key.
    #[error("TLS: {}: cannot read private key ({source})", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("TLS: {}: {source}", path.display())]
    Rejected {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS: {}: {source}", path.display())]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS: {0}")]
    Setup(#[source] rustls::Error),
}

fn pem_err(path: &Path) -> impl Fn(pem::Error) -> TlsError + '_ {
    move |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    }
}

fn rejected(path: &Path) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |source| TlsError::Rejected {
        path: path.to_path_buf(),
        source,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let list: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(pem_err(path))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(path))?;
    if list.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(list)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.to_path_buf(),
        source,
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(rejected(path))?;
    }
    Ok(roots)
}

/// The agent's side: verify the collector against `ca`, present `cert`/`key`.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key_path: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(cert)?, key(key_path)?)
        .map_err(rejected(cert))?;
    Ok(Arc::new(cfg))
}

/// The collector's side: present `cert`/`key`, require a client certificate
/// issued by `client_ca`.
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider())
            .build()
            .map_err(|source| TlsError::Verifier {
                path: client_ca.to_path_buf(),
                source,
            })?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Setup)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(rejected(cert))?;
    Ok(Arc::new(cfg))
}

/// An agent's identity: its certificate's subject common name, as written
/// (the collector maps it to a directory one-to-one, see `collect::names`).
pub fn agent_cn(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = x.subject().iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_string())
}

/// The subject common names of the certificates in `path` (a CA file), for
/// messages that say which CA is meant; empty if the file does not parse.
pub fn cert_names(path: &Path) -> Vec<String> {
    certs(path)
        .map(|list| list.iter().filter_map(agent_cn).collect())
        .unwrap_or_default()
}

/// The first certificate in `path` is valid now (not expired, not yet to
/// come); the message names the file and the date.
pub fn validity(path: &Path) -> Result<(), String> {
    let list = certs(path).map_err(|e| e.to_string())?;
    let (_, x) = x509_parser::parse_x509_certificate(list[0].as_ref())
        .map_err(|e| format!("TLS: {}: {e}", path.display()))?;
    let v = x.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        return Err(format!(
            "TLS: {}: expired on {}",
            path.display(),
            v.not_after
        ));
    }
    if now < v.not_before {
        return Err(format!(
            "TLS: {}: not valid before {}",
            path.display(),
            v.not_before
        ));
    }
    Ok(())
}

/// The client certificate in `cert` chains to a CA in `ca` (as a collector
/// with `--client-ca ca` would check it).
pub fn issued_by(cert: &Path, ca: &Path) -> Result<(), String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca).map_err(|e| e.to_string())?),
        provider(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let chain = certs(cert).map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            let names = cert_names(ca);
            format!("not accepted by the CA in {} {names:?}: {e}", ca.display())
        })
}
