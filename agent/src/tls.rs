//! TLS 1.3 with client certificates, for both ends of the export path. Errors
//! name files, never their contents (keys are secrets).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let list: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if list.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate in file",
            path.display()
        )));
    }
    Ok(list)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    // The parser's error says what kind of PEM problem it was, not the key.
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Tls(format!("{}: cannot read private key ({e})", path.display())))
}

fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots
            .add(c)
            .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The agent's side: verify the collector against `ca`, present `cert`/`key`.
pub fn client_config(ca: &Path, cert: &Path, key_path: &Path) -> Result<Arc<ClientConfig>, Error> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    Ok(Arc::new(cfg))
}

/// The collector's side: present `cert`/`key`, require a client certificate
/// issued by `client_ca`.
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, Error> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider())
            .build()
            .map_err(|e| Error::Tls(format!("{}: {e}", client_ca.display())))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    Ok(Arc::new(cfg))
}

/// An agent's identity: its certificate's subject common name, as written
/// (the collector maps it to a directory one-to-one, see `collect::names`).
pub fn agent_cn(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = x.subject().iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_string())
}
