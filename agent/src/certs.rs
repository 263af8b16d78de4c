//! `vmflow certs init`: a private CA, a collector certificate and agent
//! certificates, for trying the shipping path out. Production uses the
//! operator's PKI; nothing here is needed for it.

use std::fs;
use std::path::Path;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::Error;

#[derive(Clone, Debug)]
pub struct CertOptions {
    /// DNS names and IP addresses the collector certificate is valid for.
    pub collector_names: Vec<String>,
    /// One agent certificate per name; the name becomes the subject CN, which
    /// is the agent's identity at the collector.
    pub agents: Vec<String>,
    /// Agents (among `agents`) whose certificates expired long ago, for
    /// testing refusals.
    pub expired_agents: Vec<String>,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            collector_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            agents: vec!["agent-1".into()],
            expired_agents: Vec::new(),
        }
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

/// Writes `ca.pem`, `ca-key.pem`, `collector.pem`, `collector-key.pem` and
/// `NAME.pem` / `NAME-key.pem` per agent into `dir`. Keys are written 0600.
pub fn init(dir: &Path, opts: &CertOptions) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "vmflow CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| tls_err("CA", e))?;
    write(dir, "ca.pem", &ca_cert.pem(), false)?;
    write(dir, "ca-key.pem", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |name: &str,
                sans: Vec<String>,
                server: bool,
                expired: bool|
     -> Result<(String, String), Error> {
        let key = KeyPair::generate().map_err(|e| tls_err(name, e))?;
        let mut p = CertificateParams::new(sans).map_err(|e| tls_err(name, e))?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            p.not_before = date_time_ymd(2000, 1, 1);
            p.not_after = date_time_ymd(2001, 1, 1);
        }
        let cert = p.signed_by(&key, &issuer).map_err(|e| tls_err(name, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (c, k) = leaf(
        "vmflow-collector",
        opts.collector_names.clone(),
        true,
        false,
    )?;
    write(dir, "collector.pem", &c, false)?;
    write(dir, "collector-key.pem", &k, true)?;
    for name in &opts.agents {
        let (c, k) = leaf(name, Vec::new(), false, opts.expired_agents.contains(name))?;
        write(dir, &format!("{name}.pem"), &c, false)?;
        write(dir, &format!("{name}-key.pem"), &k, true)?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<(), Error> {
    let path = dir.join(name);
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }
}
