//! Azurite (the real Blob storage emulator, npm package `azurite`) started
//! on a free loopback port for one test, and SAS tokens signed with its
//! well-known development key.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;

pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    /// `http://127.0.0.1:{port}/devstoreaccount1`
    pub account_url: String,
}

/// The azurite-blob binary: `AZURITE_BLOB`, or where scripts/test.sh installs it.
fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("AZURITE_BLOB") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("target/azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "Azurite is not installed at {} (scripts/test.sh installs it; or set AZURITE_BLOB)",
        p.display()
    );
    p
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::spawn(&[])
    }

    /// Over HTTPS with this certificate, accepting Entra ID bearer tokens
    /// (`--oauth basic`: issuer, audience and lifetime are checked).
    pub fn start_https(cert: &std::path::Path, key: &std::path::Path) -> Azurite {
        Self::spawn(&[
            "--oauth".into(),
            "basic".into(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ])
    }

    fn spawn(extra: &[String]) -> Azurite {
        let mut child = Command::new(binary())
            .args([
                "--inMemoryPersistence",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--disableTelemetry",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = l.split("listens on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("azurite reported its port");
        Azurite {
            child,
            account_url: format!("{url}/{ACCOUNT}"),
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An account SAS for blobs (signed version 2021-12-02), permissions `sp`,
/// expiring at `expiry` (ISO 8601), signed with `key`.
pub fn account_sas(sp: &str, expiry: &str, key: &str) -> String {
    let sv = "2021-12-02";
    let (ss, srt, spr) = ("b", "sco", "https,http");
    let to_sign = [ACCOUNT, sp, ss, srt, "", expiry, "", spr, sv, "", ""].join("\n");
    let k = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64 key");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k),
        to_sign.as_bytes(),
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={}&sig={}",
        enc(expiry),
        enc(spr),
        enc(&sig)
    )
}

/// A SAS valid for the whole test run with every permission.
pub fn full_sas() -> String {
    account_sas("rwdlac", "2099-01-01T00:00:00Z", KEY)
}
