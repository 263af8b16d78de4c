//! NATS authentication from a file, read afresh at every connection: a
//! renewed credentials file (a new user JWT), a rotated password or seed is
//! used from the next reconnect, without a restart. A user JWT that expires
//! makes the server close the connection, so the reconnect after it is
//! exactly when a renewed file is needed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_nats::{Auth, AuthError, ConnectOptions};
use nkeys::KeyPair;

use super::{JetStreamError, NatsAuth};

/// What a file proves who the client is with.
enum Secret {
    /// A credentials file: the user JWT, signed for with its seed.
    Jwt {
        jwt: String,
        key: KeyPair,
    },
    Nkey(KeyPair),
    UserPassword(String, String),
    Token(String),
}

/// The file and what it held when last read well.
struct FileAuth {
    auth: NatsAuth,
    last: Mutex<(Arc<Secret>, Option<String>)>,
}

/// Connect options that authenticate with `auth`'s file at every
/// (re)connection. The file is read once here too, so an unusable one stops
/// the caller at start; errors name the file, never its content.
pub(super) fn options(auth: &NatsAuth) -> Result<ConnectOptions, JetStreamError> {
    let secret = read(auth)?;
    let fa = Arc::new(FileAuth {
        auth: auth.clone(),
        last: Mutex::new((Arc::new(secret), None)),
    });
    Ok(ConnectOptions::with_auth_callback(move |nonce| {
        let r = fa.sign(&nonce);
        async move { r }
    }))
}

impl FileAuth {
    /// The file as it is now, or the last good one (with a warning, once per
    /// new problem) when it cannot be read or used.
    fn sign(&self, nonce: &[u8]) -> Result<Auth, AuthError> {
        let secret = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            match read(&self.auth) {
                Ok(s) => *last = (Arc::new(s), None),
                Err(e) => {
                    let said = e.to_string();
                    if last.1.as_deref() != Some(&said) {
                        tracing::warn!("{said}; connecting with what it held before");
                        last.1 = Some(said);
                    }
                }
            }
            last.0.clone()
        };
        let mut auth = Auth::new();
        // The key's errors say what failed, never the key.
        let signed = |k: &KeyPair| k.sign(nonce).map_err(AuthError::new);
        match &*secret {
            Secret::Jwt { jwt, key } => {
                auth.jwt = Some(jwt.clone());
                auth.signature = Some(signed(key)?);
            }
            Secret::Nkey(key) => {
                auth.nkey = Some(key.public_key());
                auth.signature = Some(signed(key)?);
            }
            Secret::UserPassword(user, pass) => {
                auth.username = Some(user.clone());
                auth.password = Some(pass.clone());
            }
            Secret::Token(t) => auth.token = Some(t.clone()),
        }
        Ok(auth)
    }
}

fn read(auth: &NatsAuth) -> Result<Secret, JetStreamError> {
    let text = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| JetStreamError::AuthFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let bad = |path: &PathBuf, reason: &str| JetStreamError::AuthFile {
        path: path.clone(),
        reason: reason.to_string(),
    };
    match auth {
        NatsAuth::Creds(path) => {
            let why = "not a NATS credentials file (a user JWT and an nkey seed)";
            let t = text(path)?;
            let (jwt, seed) = creds(&t).ok_or_else(|| bad(path, why))?;
            let key = KeyPair::from_seed(seed).map_err(|_| bad(path, why))?;
            Ok(Secret::Jwt {
                jwt: jwt.to_string(),
                key,
            })
        }
        NatsAuth::Nkey(path) => {
            let t = text(path)?;
            let seed = t.trim();
            let why = "not a user nkey seed (SU…)";
            if !seed.starts_with("SU") || seed.contains(char::is_whitespace) {
                return Err(bad(path, why));
            }
            Ok(Secret::Nkey(
                KeyPair::from_seed(seed).map_err(|_| bad(path, why))?,
            ))
        }
        NatsAuth::File(path) => {
            let t = text(path)?;
            let t = t.trim();
            if t.is_empty() || t.contains('\n') {
                return Err(bad(path, "expected one line: user:password, or a token"));
            }
            Ok(match t.split_once(':') {
                Some((user, pass)) => Secret::UserPassword(user.into(), pass.into()),
                None => Secret::Token(t.into()),
            })
        }
    }
}

/// The user JWT and the seed of a credentials file, as `nsc` writes it: the
/// first and second value each alone on a line between two lines of dashes
/// (`-----BEGIN NATS USER JWT-----` … `------END NATS USER JWT------`).
fn creds(text: &str) -> Option<(&str, &str)> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let fence = |l: &str| l.len() > 6 && l.starts_with("---") && l.ends_with("---");
    let value = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '='))
    };
    let mut found = lines
        .windows(3)
        .filter(|w| fence(w[0]) && value(w[1]) && fence(w[2]))
        .map(|w| w[1]);
    Some((found.next()?, found.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds_text(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    #[test]
    fn a_credentials_file_gives_its_jwt_and_seed() {
        let t = creds_text("eyJ0eXAi.eyJqdGki.sig-_=", "SUAIO3FHUX5PNV2LQ");
        assert_eq!(
            creds(&t),
            Some(("eyJ0eXAi.eyJqdGki.sig-_=", "SUAIO3FHUX5PNV2LQ"))
        );
        // Windows line ends, as the file may have been copied.
        let crlf = t.replace('\n', "\r\n");
        assert_eq!(
            creds(&crlf),
            Some(("eyJ0eXAi.eyJqdGki.sig-_=", "SUAIO3FHUX5PNV2LQ"))
        );
        assert_eq!(creds("user: someone, password: secret\n"), None);
        assert_eq!(creds(&t[..t.find("-----BEGIN USER").unwrap()]), None);
    }

    /// Each connection reads the file: a renewed one is used at once; one
    /// that turned unusable leaves the last good secret in use.
    #[test]
    fn every_connection_reads_the_file_and_keeps_the_last_good_one() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("u.creds");
        let write = |jwt: &str, key: &KeyPair| {
            std::fs::write(&path, creds_text(jwt, &key.seed().unwrap())).unwrap()
        };
        let (a, b) = (KeyPair::new_user(), KeyPair::new_user());
        write("first.jwt", &a);
        let auth = NatsAuth::Creds(path.clone());
        let fa = FileAuth {
            auth: auth.clone(),
            last: Mutex::new((Arc::new(read(&auth).unwrap()), None)),
        };
        let nonce = b"nonce";
        let check = |want_jwt: &str, key: &KeyPair| {
            let got = fa.sign(nonce).unwrap();
            assert_eq!(got.jwt.as_deref(), Some(want_jwt));
            key.verify(nonce, got.signature.as_deref().unwrap())
                .unwrap();
        };
        check("first.jwt", &a);
        write("renewed.jwt", &b);
        check("renewed.jwt", &b);
        std::fs::write(&path, "half a file").unwrap();
        check("renewed.jwt", &b);
        std::fs::remove_file(&path).unwrap();
        check("renewed.jwt", &b);
        write("third.jwt", &a);
        check("third.jwt", &a);
    }
}
