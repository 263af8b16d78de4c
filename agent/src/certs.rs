//! `vmflow certs init`: a private CA, a collector certificate and agent
//! certificates, for trying the shipping path out. Production uses the
//! operator's PKI; nothing here is needed for it.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Why `certs init` stopped; nothing after the failing file was written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(
        "config: agent name {0:?} is not a plain name (1 to 64 of A-Z a-z 0-9 - _ ., not starting with '.')"
    )]
    NotPlain(String),
    #[error(
        "config: agent name {name:?} is taken: {name}.pem and {name}-key.pem are the {whose}'s certificate and key"
    )]
    Reserved { name: String, whose: &'static str },
    #[error("TLS: {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{}: already exists (a CA or key from an earlier `certs init`); --force replaces everything in the directory", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

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
    /// Replace certificates and keys already in the directory (else an
    /// existing one is refused: a new CA would orphan every certificate the
    /// old one signed).
    pub force: bool,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            collector_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            agents: vec!["agent-1".into()],
            expired_agents: Vec::new(),
            force: false,
        }
    }
}

fn tls_err(what: &str, source: rcgen::Error) -> CertsError {
    CertsError::Generate {
        what: what.to_string(),
        source,
    }
}

/// `init` writes NAME.pem and NAME-key.pem for these too: an agent of that
/// name would overwrite the CA's or the collector's.
const RESERVED: [(&str, &str); 2] = [("ca", "CA"), ("collector", "collector")];

/// An agent name becomes two file names in DIR and the certificate's CN (the
/// agent's directory at the collector), so it must be a plain name: 1 to 64
/// (the X.520 bound on a CN) of `A-Za-z0-9-_.`, not starting with `.` (no
/// `..`, no hidden files).
pub fn check_agent_name(name: &str) -> Result<(), CertsError> {
    let plain = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain {
        return Err(CertsError::NotPlain(name.to_string()));
    }
    if let Some((_, whose)) = RESERVED.iter().find(|(file, _)| *file == name) {
        return Err(CertsError::Reserved {
            name: name.to_string(),
            whose,
        });
    }
    Ok(())
}

/// Writes `ca.pem`, `ca-key.pem`, `collector.pem`, `collector-key.pem` and
/// `NAME.pem` / `NAME-key.pem` per agent into `dir` (created 0700). Keys end
/// up 0600 and certificates 0644 whatever the umask and whatever was there.
pub fn init(dir: &Path, opts: &CertOptions) -> Result<(), CertsError> {
    // Every name is checked before anything is written.
    for name in &opts.agents {
        check_agent_name(name)?;
    }
    if !opts.force {
        let names = ["ca", "collector"]
            .into_iter()
            .map(String::from)
            .chain(opts.agents.iter().cloned());
        for name in names {
            for file in [format!("{name}.pem"), format!("{name}-key.pem")] {
                let path = dir.join(file);
                // symlink_metadata: a dangling link is still something there.
                if path.symlink_metadata().is_ok() {
                    return Err(CertsError::Exists { path });
                }
            }
        }
    }
    create_dir(dir)?;
    let ca_key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Each CA has its own name, so "signed by another CA" can say which.
    ca.distinguished_name
        .push(DnType::CommonName, ca_name(ca_key.public_key_raw()));
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
     -> Result<(String, String), CertsError> {
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

/// `vmflow CA` and 8 bytes of the CA's public key in hex: unique per CA,
/// no random source needed beyond the key's own.
fn ca_name(public_key: &[u8]) -> String {
    let hex: String = public_key
        .iter()
        .rev()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("vmflow CA {hex}")
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    // The keys' directory: nobody else needs to list it. An existing
    // directory keeps its mode (the operator chose it); the keys in it are
    // 0600 anyway (on Windows: the folder's inherited ACL, see `platform`).
    crate::platform::owner_only_dir(fs::DirBuilder::new().recursive(true))
        .create(dir)
        .map_err(io_err(dir))
}

/// Replaces `dir/name` with `text`. The content goes to a new temporary file
/// whose mode is set explicitly (open's mode is cut by the umask, and an
/// existing file would keep its old mode), then is renamed over the old
/// file: a key is never readable by others, not even for a moment, and a
/// symlink planted at either name is replaced, not followed.
fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<(), CertsError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover from an interrupted run; create_new below refuses anything
    // still there.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    let mut f = crate::platform::owner_only_file(&mut o)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    crate::platform::set_public(&f, !secret)
        .and_then(|_| f.write_all(text.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    // Closed before the rename: Windows renames no open file.
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))
}
