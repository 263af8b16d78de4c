//! A test certificate as the guest agent holds it (`<THUMBPRINT>.crt` and
//! `.prv`; on Windows a `.pfx` standing in for the LocalMachine\\My store),
//! made with openssl, and protected settings encrypted to it as the
//! platform encrypts them (CMS EnvelopedData, base64). Shared by the Linux
//! extension tests and the Windows handler test under Wine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

/// A certificate and key as the guest agent keeps them
/// (`<lib>/<THUMBPRINT>.crt`, `.prv`), made with openssl.
pub struct TestCert {
    pub thumbprint: String,
    pub crt: PathBuf,
}

pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn make_cert(dir: &Path, cn: &str) -> TestCert {
    let crt = dir.join(format!("{cn}.crt"));
    let prv = dir.join(format!("{cn}.prv"));
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            prv.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ],
        b"",
    );
    let fp = String::from_utf8(openssl(
        &[
            "x509",
            "-in",
            crt.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha1",
        ],
        b"",
    ))
    .unwrap();
    let thumbprint: String = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .chars()
        .filter(|c| *c != ':')
        .collect();
    assert_eq!(thumbprint.len(), 40, "{fp}");
    let named_crt = dir.join(format!("{thumbprint}.crt"));
    std::fs::rename(&crt, &named_crt).unwrap();
    std::fs::rename(&prv, dir.join(format!("{thumbprint}.prv"))).unwrap();
    TestCert {
        thumbprint,
        crt: named_crt,
    }
}

impl TestCert {
    /// The `protectedSettings` value: base64 DER CMS enveloped data
    /// (AES-256 content encryption).
    pub fn encrypt(&self, plain: &Value) -> String {
        self.encrypt_with(plain, "-aes256")
    }

    /// [`Self::encrypt`] with another content cipher (`-des3`, …).
    pub fn encrypt_with(&self, plain: &Value, cipher: &str) -> String {
        let der = openssl(
            &[
                "cms",
                "-encrypt",
                "-binary",
                "-outform",
                "DER",
                cipher,
                self.crt.to_str().unwrap(),
            ],
            plain.to_string().as_bytes(),
        );
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    /// The certificate and key as PKCS#12 with an empty password, in the
    /// algorithms CryptoAPI (and Wine's crypt32) import: 3DES and SHA-1 MAC.
    pub fn pfx(&self, out: &Path) {
        let prv = self.crt.with_extension("prv");
        openssl(
            &[
                "pkcs12",
                "-export",
                "-passout",
                "pass:",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
                "-inkey",
                prv.to_str().unwrap(),
                "-in",
                self.crt.to_str().unwrap(),
                "-out",
                out.to_str().unwrap(),
            ],
            b"",
        );
    }

    /// Protected settings for Wine's crypt32: 3DES content encryption (it
    /// has no AES OIDs: NTE_BAD_ALGID) with a zero IV. Wine imports the
    /// content key but never sets the IV from the message, so it decrypts
    /// with a zero IV; Windows uses the message's. The message is made by
    /// openssl with a random IV, then its content re-encrypted with the
    /// same content key (unwrapped with the private key) under a zero IV,
    /// and its IV field zeroed: still a valid message for any decrypter.
    pub fn encrypt_for_wine(&self, plain: &Value) -> String {
        let b64 = self.encrypt_with(plain, "-des3");
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let find = |der: &[u8], needle: &[u8]| {
            der.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{needle:02x?} not in the message"))
                + needle.len()
        };
        // rsaEncryption AlgorithmIdentifier, then encryptedKey OCTET STRING
        // (RSA-2048: 04 82 01 00 and 256 bytes).
        let at = find(
            &der,
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
            ],
        );
        assert_eq!(&der[at..at + 4], &[0x04, 0x82, 0x01, 0x00]);
        let wrapped = der[at + 4..at + 4 + 256].to_vec();
        let dir = tempfile::tempdir().unwrap();
        let wrapped_path = dir.path().join("wrapped");
        std::fs::write(&wrapped_path, &wrapped).unwrap();
        let prv = self.crt.with_extension("prv");
        let cek = openssl(
            &[
                "pkeyutl",
                "-decrypt",
                "-inkey",
                prv.to_str().unwrap(),
                "-in",
                wrapped_path.to_str().unwrap(),
                "-pkeyopt",
                "rsa_padding_mode:pkcs1",
            ],
            b"",
        );
        assert_eq!(cek.len(), 24, "a 3DES key");
        // des-ede3-cbc OID, then its IV parameter (04 08, 8 bytes).
        let iv_at = find(
            &der,
            &[
                0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07, 0x04, 0x08,
            ],
        );
        der[iv_at..iv_at + 8].fill(0);
        let hex: String = cek.iter().map(|b| format!("{b:02x}")).collect();
        let ct = openssl(
            &[
                "enc",
                "-des-ede3-cbc",
                "-nosalt",
                "-K",
                &hex,
                "-iv",
                "0000000000000000",
            ],
            plain.to_string().as_bytes(),
        );
        // The encrypted content ([0] IMPLICIT, definite length) ends the
        // message; the same plaintext and padding give the same length.
        let n = der.len();
        assert!(ct.len() < n);
        der[n - ct.len()..].copy_from_slice(&ct);
        base64::engine::general_purpose::STANDARD.encode(der)
    }
}
