//! Files and directories `run` reads or writes, and the certificates.

use std::path::Path;

use super::Report;

pub fn readable_file(key: &str, p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Err(e) => Err(format!("{key}: {}: {e}", p.display())),
        Ok(m) if m.is_dir() => Err(format!(
            "{key}: {}: is a directory, not a file",
            p.display()
        )),
        Ok(_) => std::fs::File::open(p)
            .map(|_| ())
            .map_err(|e| format!("{key}: {}: cannot read: {e}", p.display())),
    }
}

pub fn readable_dir(key: &str, p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Err(e) => Err(format!("{key}: {}: {e}", p.display())),
        Ok(m) if !m.is_dir() => Err(format!("{key}: {}: is not a directory", p.display())),
        Ok(_) => std::fs::read_dir(p)
            .map(|_| ())
            .map_err(|e| format!("{key}: {}: cannot list: {e}", p.display())),
    }
}

/// `p` exists as a directory this process can write in, or can be created
/// (its nearest existing ancestor is such a directory). Tried for real: a
/// file created and removed, since permissions alone miss read-only mounts.
pub fn writable_dir(key: &str, p: &Path) -> Result<(), String> {
    let mut at = p;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(format!("{key}: {}: is not a directory", at.display()));
            }
            // (Not a directory: a file further up, found on the way.)
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match at.parent() {
                    Some(up) if !up.as_os_str().is_empty() => at = up,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(format!("{key}: {}: {e}", at.display())),
        }
    }
    let probe = at.join(format!(".vmflow-check-{}", std::process::id()));
    let what = if at == p {
        "cannot write in it"
    } else {
        "cannot be created"
    };
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "{key}: {}: {what} ({}: {e})",
            p.display(),
            at.display()
        )),
    }
}

/// The certificates parse, the key matches the certificate, the
/// certificate is valid now and (a warning only: the collector's
/// `--client-ca` may be another CA) chains to `ca`.
pub fn certificates(section: &str, ca: &Path, cert: &Path, key: &Path, r: &mut Report) {
    use crate::tls::TlsError;
    match crate::tls::client_config(ca, cert, key) {
        Ok(_) => {}
        Err(TlsError::Rejected {
            source: rustls::Error::InconsistentKeys(_),
            ..
        }) => {
            return r.problem(format!(
                "{section}.key ({}) is not the key of {section}.cert ({})",
                key.display(),
                cert.display()
            ))
        }
        Err(e) => return r.problem(e.to_string()),
    }
    match crate::tls::validity(cert) {
        Ok(()) => {}
        Err(e) => r.problem(e),
    }
    if let Err(e) = crate::tls::issued_by(cert, ca) {
        r.warnings.push(format!(
            "{}: {e} (fine only if the collector's --client-ca is another CA)",
            cert.display()
        ));
    }
}
