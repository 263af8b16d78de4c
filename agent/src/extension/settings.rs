//! `<N>.settings`: public settings (the agent configuration, the same keys
//! as the TOML file, as JSON) and protected settings (key material and
//! secrets), decrypted with the guest agent's `<thumbprint>.crt` / `.prv`
//! on Linux ([`OpensslCms`]) and with the certificate in `LocalMachine\My`
//! on Windows ([`CertStore`]).
//!
//! Protected settings are base64 DER CMS (PKCS#7) EnvelopedData encrypted
//! to the certificate `protectedSettingsCertThumbprint` names. They are
//! decrypted by `openssl cms -decrypt`, as the Azure Linux extensions do
//! (`openssl smime`, HandlerUtil.py): the ciphertext goes in on stdin and
//! the plaintext comes back on stdout, never through a file or a command
//! line. No error message here carries a protected value: they name the
//! key or the certificate instead.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use super::environment::Handler;
use super::ExtensionError;
use crate::config::Secret;

/// `runtimeSettings[0].handlerSettings` of a settings file.
#[derive(Debug, Default)]
pub struct HandlerSettings {
    pub public: Map<String, Value>,
    pub protected: Option<Protected>,
}

/// Encrypted protected settings and the certificate they are encrypted to.
#[derive(Debug)]
pub struct Protected {
    pub base64: String,
    /// Upper-case hex, checked (it becomes a file name).
    pub thumbprint: String,
}

/// What protected settings may carry. Each is written to its own file in
/// the extension's configuration directory, readable by the service only,
/// and the agent configuration points at that file.
#[derive(Debug, Default)]
pub struct Secrets {
    /// The agent's TLS client key (PEM) → `export.key`.
    pub export_key: Option<Secret>,
    /// The agent's certificate (PEM) → `export.cert`.
    pub export_cert: Option<Secret>,
    /// The collector's CA (PEM) → `export.ca`.
    pub export_ca: Option<Secret>,
    /// A service principal's client secret → `azure.client_secret_file`.
    pub azure_client_secret: Option<Secret>,
}

/// The keys protected settings may have, with the file each lands in and
/// the configuration key that points at it.
pub const SECRET_FILES: &[(&str, &str, &str, &str)] = &[
    // (protected key, file name, section, key)
    ("export_key", "export.key", "export", "key"),
    ("export_cert", "export.crt", "export", "cert"),
    ("export_ca", "ca.crt", "export", "ca"),
    (
        "azure_client_secret",
        "azure-client-secret",
        "azure",
        "client_secret_file",
    ),
];

impl Secrets {
    pub fn get(&self, key: &str) -> Option<&Secret> {
        match key {
            "export_key" => self.export_key.as_ref(),
            "export_cert" => self.export_cert.as_ref(),
            "export_ca" => self.export_ca.as_ref(),
            "azure_client_secret" => self.azure_client_secret.as_ref(),
            _ => None,
        }
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<Secret>> {
        match key {
            "export_key" => Some(&mut self.export_key),
            "export_cert" => Some(&mut self.export_cert),
            "export_ca" => Some(&mut self.export_ca),
            "azure_client_secret" => Some(&mut self.azure_client_secret),
            _ => None,
        }
    }
}

/// Reads a settings file. An empty file (what the guest agent writes for an
/// extension without settings) is empty settings.
pub fn parse_settings(path: &Path, bytes: &[u8]) -> Result<HandlerSettings, ExtensionError> {
    let bad = |reason: String| ExtensionError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(HandlerSettings::default());
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        // Line and column only: serde_json's syntax errors quote no input.
        bad(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let hs = v
        .get("runtimeSettings")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("handlerSettings"))
        .and_then(Value::as_object)
        .ok_or_else(|| bad("expected runtimeSettings[0].handlerSettings".into()))?;
    let public = match hs.get("publicSettings") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad("publicSettings is not a JSON object".into())),
    };
    let protected = match hs.get("protectedSettings") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            let thumb = hs
                .get("protectedSettingsCertThumbprint")
                .and_then(Value::as_str)
                .unwrap_or("");
            Some(Protected {
                base64: s.clone(),
                thumbprint: check_thumbprint(thumb).map_err(|r| {
                    ExtensionError::ProtectedSettings {
                        path: path.to_path_buf(),
                        reason: r,
                    }
                })?,
            })
        }
        Some(_) => {
            return Err(ExtensionError::ProtectedSettings {
                path: path.to_path_buf(),
                reason: "protectedSettings is not a base64 string".into(),
            })
        }
    };
    Ok(HandlerSettings { public, protected })
}

/// A certificate thumbprint (SHA-1, 40 hex digits), upper-cased as the
/// guest agent names its files.
fn check_thumbprint(t: &str) -> Result<String, String> {
    if t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t.to_ascii_uppercase())
    } else if t.is_empty() {
        Err("protectedSettingsCertThumbprint is missing".into())
    } else {
        Err(format!(
            "protectedSettingsCertThumbprint {t:?} is not a 40-digit hex thumbprint"
        ))
    }
}

/// What decrypts CMS EnvelopedData (DER) with the certificate `thumbprint`
/// names (and its key), found where the guest agent of `handler`'s system
/// keeps it. The error is a short reason without any of the input.
pub trait Decrypt {
    fn decrypt(&self, der: &[u8], thumbprint: &str, handler: &Handler) -> Result<Secret, String>;
}

/// `openssl cms -decrypt`, the platform's own tool: OpenSSL is on every
/// image the guest agent runs on (it uses it to unpack these very
/// certificates), and it handles every content cipher the platform picks.
pub struct OpensslCms {
    pub program: PathBuf,
}

impl Decrypt for OpensslCms {
    fn decrypt(&self, der: &[u8], thumbprint: &str, handler: &Handler) -> Result<Secret, String> {
        let cert = &handler.cert_dir().join(format!("{thumbprint}.crt"));
        let key = &handler.cert_dir().join(format!("{thumbprint}.prv"));
        for f in [cert, key] {
            if !f.is_file() {
                return Err(format!("{} not found", f.display()));
            }
        }
        let mut child = Command::new(&self.program)
            .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-recip"])
            .arg(cert)
            .arg("-inkey")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        // Feed stdin from a thread: openssl may write before it has read all.
        let mut stdin = child.stdin.take().ok_or("openssl: no stdin")?;
        let input = der.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let mut out = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        let mut err = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        let _ = feeder.join();
        let status = child.wait().map_err(|e| format!("openssl: {e}"))?;
        if !status.success() {
            // openssl's own diagnostics name the failing step, never the
            // plaintext (it has none yet); keep the first line.
            let first = String::from_utf8_lossy(&err)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .chars()
                .take(200)
                .collect::<String>();
            return Err(format!("openssl cms -decrypt failed ({status}): {first}"));
        }
        String::from_utf8(out)
            .map(Secret)
            .map_err(|_| "the decrypted protected settings are not UTF-8 text".into())
    }
}

/// Windows: CryptoAPI (CryptMsg*) with the certificate in `LocalMachine\My`
/// (the platform seam's `cms`). Only when the store does not have it, a
/// PKCS#12 file `<THUMBPRINT>.pfx` (no password) beside the settings
/// (`configFolder`) stands in, and the handler says so on stderr, which the
/// guest agent logs: Wine, where the tests run, cannot be given a machine
/// certificate. The guest agent never writes such a file.
pub struct CertStore;

impl CertStore {
    /// Where the stand-in key file is looked for.
    pub fn fallback(handler: &Handler, thumbprint: &str) -> PathBuf {
        handler.config_folder.join(format!("{thumbprint}.pfx"))
    }
}

impl Decrypt for CertStore {
    fn decrypt(&self, der: &[u8], thumbprint: &str, handler: &Handler) -> Result<Secret, String> {
        use crate::platform::cms::{decrypt_enveloped, KeySource};
        let fallback = CertStore::fallback(handler, thumbprint);
        let (plain, source) =
            decrypt_enveloped(der, thumbprint, &fallback).map_err(|e| e.to_string())?;
        if let KeySource::File { path, store_error } = source {
            eprintln!(
                "vmflow extension: protected settings: certificate {thumbprint} not in \
                 LocalMachine\\My ({store_error}); decrypted with the key file {} instead",
                path.display()
            );
        }
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| "the decrypted protected settings are not UTF-8 text".into())
    }
}

/// Decrypts and reads protected settings with the certificate they name.
pub fn decrypt_protected(
    path: &Path,
    p: &Protected,
    handler: &Handler,
    dec: &dyn Decrypt,
) -> Result<Secrets, ExtensionError> {
    let fail = |reason: String| ExtensionError::ProtectedSettings {
        path: path.to_path_buf(),
        reason,
    };
    let der = base64_decode(&p.base64)
        .ok_or_else(|| fail("protectedSettings is not valid base64".into()))?;
    let plain = dec.decrypt(&der, &p.thumbprint, handler).map_err(|r| {
        fail(format!(
            "cannot decrypt with the certificate {} ({r})",
            p.thumbprint
        ))
    })?;
    parse_protected(&plain).map_err(fail)
}

/// The decrypted JSON object. Unknown keys and non-string values are
/// errors that name the key; no message quotes a value.
pub fn parse_protected(plain: &Secret) -> Result<Secrets, String> {
    if plain.0.trim().is_empty() {
        return Ok(Secrets::default());
    }
    let v: Value = serde_json::from_str(&plain.0)
        .map_err(|_| "the decrypted protected settings are not JSON".to_string())?;
    let Value::Object(m) = v else {
        return Err("the decrypted protected settings are not a JSON object".into());
    };
    let mut s = Secrets::default();
    for (k, v) in m {
        let known: Vec<&str> = SECRET_FILES.iter().map(|f| f.0).collect();
        let slot = s.slot(&k).ok_or_else(|| {
            format!(
                "unknown protected settings key {k:?} (known: {})",
                known.join(", ")
            )
        })?;
        match v {
            Value::String(text) => *slot = Some(Secret(text)),
            Value::Null => {}
            _ => return Err(format!("protected settings key {k:?} must be a string")),
        }
    }
    Ok(s)
}

/// Standard base64 (whitespace ignored), `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if clean.is_empty() || !clean.len().is_multiple_of(4) {
        return None;
    }
    let pad = clean.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let body = clean.len() - pad;
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in &clean[..body] {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Public settings (JSON) as a TOML table with the same keys. JSON null has
/// no TOML form: an error naming the key.
pub fn public_to_toml(public: &Map<String, Value>) -> Result<toml::Table, String> {
    let mut t = toml::Table::new();
    for (k, v) in public {
        t.insert(k.clone(), to_toml(k, v)?);
    }
    Ok(t)
}

fn to_toml(key: &str, v: &Value) -> Result<toml::Value, String> {
    Ok(match v {
        Value::Null => return Err(format!("{key}: null has no TOML form (leave the key out)")),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => return Err(format!("{key}: {n} is out of range")),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| to_toml(&format!("{key}[{i}]"), x))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut t = toml::Table::new();
            for (k, x) in m {
                t.insert(k.clone(), to_toml(&format!("{key}.{k}"), x)?);
            }
            toml::Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGVs\nbG8=").unwrap(), b"hello");
        assert!(base64_decode("aGVsbG8").is_none());
        assert!(base64_decode("a*==").is_none());
        assert!(base64_decode("").is_none());
    }

    #[test]
    fn protected_errors_name_keys_never_values() {
        let e = parse_protected(&Secret(r#"{"export_kee":"TOPSECRET"}"#.into())).unwrap_err();
        assert!(e.contains("export_kee") && !e.contains("TOPSECRET"), "{e}");
        let e = parse_protected(&Secret(r#""TOPSECRET""#.into())).unwrap_err();
        assert!(!e.contains("TOPSECRET"), "{e}");
        let e = parse_protected(&Secret(r#"{"export_key":["TOPSECRET"]}"#.into())).unwrap_err();
        assert!(e.contains("export_key") && !e.contains("TOPSECRET"), "{e}");
        let e = parse_protected(&Secret("{TOPSECRET".into())).unwrap_err();
        assert!(!e.contains("TOPSECRET"), "{e}");
        let s = parse_protected(&Secret(
            r#"{"export_key":"K","azure_client_secret":"S"}"#.into(),
        ))
        .unwrap();
        assert_eq!(s.export_key, Some(Secret("K".into())));
        assert_eq!(s.azure_client_secret, Some(Secret("S".into())));
        assert!(format!("{s:?}").contains("redacted") && !format!("{s:?}").contains("\"K\""));
    }

    #[test]
    fn settings_file_shapes() {
        let p = Path::new("/c/0.settings");
        let s = parse_settings(p, b"").unwrap();
        assert!(s.public.is_empty() && s.protected.is_none());
        let s = parse_settings(
            p,
            br#"{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"flow":{"idle_timeout":5}},
                "protectedSettings":"aGVsbG8=","protectedSettingsCertThumbprint":"1be9a13a00000000000000000000000000000000"}}]}"#,
        )
        .unwrap();
        assert_eq!(s.public["flow"]["idle_timeout"], 5);
        let p2 = s.protected.unwrap();
        assert_eq!(p2.thumbprint, "1BE9A13A00000000000000000000000000000000");
        let e = parse_settings(
            p,
            br#"{"runtimeSettings":[{"handlerSettings":{"protectedSettings":"aGVsbG8=","protectedSettingsCertThumbprint":"../../etc/x"}}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("thumbprint"), "{e}");
        let e = parse_settings(p, b"{\"runtimeSettings\":[]}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.settings") && e.contains("handlerSettings"),
            "{e}"
        );
    }

    #[test]
    fn public_settings_become_the_same_toml_keys() {
        let v: Value = serde_json::from_str(
            r#"{"local_nets":["10.0.0.0/8"],"flow":{"idle_timeout":2.5,"max_flows":1000},"capture":{"live":{"interfaces":["eth0"]}}}"#,
        )
        .unwrap();
        let t = public_to_toml(v.as_object().unwrap()).unwrap();
        let text = toml::to_string(&t).unwrap();
        let cfg = crate::config::Config::parse(&text).unwrap();
        assert_eq!(cfg.flow.idle_timeout, crate::config::Seconds(2.5));
        assert_eq!(cfg.flow.max_flows, 1000);
        let v: Value = serde_json::from_str(r#"{"flow":{"idle_timeout":null}}"#).unwrap();
        let e = public_to_toml(v.as_object().unwrap()).unwrap_err();
        assert!(e.contains("flow.idle_timeout"), "{e}");
    }
}
