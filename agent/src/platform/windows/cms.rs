//! Protected settings of the Azure VM extension: CMS (PKCS#7)
//! EnvelopedData encrypted to a certificate the platform put in
//! `LocalMachine\My`, decrypted by CryptoAPI's low-level message functions
//! (what `CryptDecryptMessage` and .NET's `EnvelopedCms` do; the private
//! key never leaves its key store).
//!
//! When the certificate is not in the store, a PKCS#12 file (no password)
//! may stand in for it: it is imported into a memory store whose key is not
//! persisted, and the same code decrypts. On Azure the
//! store has the certificate; the file is for Wine, which has no way to
//! put one there for a test. The caller says which was used.

use std::io;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use windows_sys::Win32::Security::Cryptography::{
    CertCloseStore, CertCompareCertificateName, CertCompareIntegerBlob, CertFindCertificateInStore,
    CertFreeCertificateContext, CertOpenStore, CryptAcquireCertificatePrivateKey, CryptMsgClose,
    CryptMsgControl, CryptMsgGetParam, CryptMsgOpenToDecode, CryptMsgUpdate, CryptReleaseContext,
    NCryptFreeObject, PFXImportCertStore, AT_KEYEXCHANGE, AT_SIGNATURE, CERT_CONTEXT,
    CERT_FIND_SHA1_HASH, CERT_INFO, CERT_NCRYPT_KEY_SPEC, CERT_STORE_OPEN_EXISTING_FLAG,
    CERT_STORE_PROV_SYSTEM_W, CERT_STORE_READONLY_FLAG, CERT_SYSTEM_STORE_LOCAL_MACHINE,
    CMSG_CONTENT_PARAM, CMSG_CTRL_DECRYPT, CMSG_CTRL_DECRYPT_PARA, CMSG_CTRL_DECRYPT_PARA_0,
    CMSG_RECIPIENT_COUNT_PARAM, CMSG_RECIPIENT_INFO_PARAM, CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG,
    CRYPT_ACQUIRE_SILENT_FLAG, CRYPT_INTEGER_BLOB, CRYPT_KEY_FLAGS, HCERTSTORE,
    PKCS12_NO_PERSIST_KEY, PKCS_7_ASN_ENCODING, X509_ASN_ENCODING,
};

const ENCODING: u32 = PKCS_7_ASN_ENCODING | X509_ASN_ENCODING;

/// Where the private key came from.
#[derive(Debug)]
pub enum KeySource {
    /// The certificate in `LocalMachine\My`.
    Store,
    /// The PKCS#12 stand-in, and why the store did not serve.
    File { path: PathBuf, store_error: String },
}

/// A certificate store handle, closed on drop.
struct Store(HCERTSTORE);

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: self.0 is a store handle CertOpenStore or
        // PFXImportCertStore returned (never null: checked at creation) and
        // closed only here, once; the contexts taken from it were freed.
        unsafe { CertCloseStore(self.0, 0) };
    }
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// 40 hex digits → the 20-byte SHA-1 hash CryptoAPI names certificates by.
fn sha1_of(thumbprint: &str) -> io::Result<[u8; 20]> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "not a 40-digit hex thumbprint");
    if thumbprint.len() != 40 || !thumbprint.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&thumbprint[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A certificate context, freed on drop.
struct Cert(*const CERT_CONTEXT);

impl Drop for Cert {
    fn drop(&mut self) {
        // SAFETY: self.0 is a non-null context CertFindCertificateInStore
        // returned (checked at creation), freed only here, once.
        unsafe { CertFreeCertificateContext(self.0) };
    }
}

/// The certificate with this SHA-1 hash in `store`, if it is there.
fn find(store: &Store, sha1: &[u8; 20]) -> Option<Cert> {
    let blob = CRYPT_INTEGER_BLOB {
        cbData: 20,
        pbData: sha1.as_ptr() as *mut u8,
    };
    // SAFETY: store.0 is an open store; blob points at 20 live bytes that
    // CertFindCertificateInStore only reads during the call; no previous
    // context is passed. A non-null result is a context we own (Cert).
    let ctx = unsafe {
        CertFindCertificateInStore(
            store.0,
            ENCODING,
            0,
            CERT_FIND_SHA1_HASH,
            &blob as *const CRYPT_INTEGER_BLOB as *const core::ffi::c_void,
            null(),
        )
    };
    (!ctx.is_null()).then_some(Cert(ctx))
}

/// A decoding message, closed on drop.
struct Msg(*mut core::ffi::c_void);

impl Drop for Msg {
    fn drop(&mut self) {
        // SAFETY: self.0 is the non-null handle CryptMsgOpenToDecode
        // returned, closed only here, once.
        unsafe { CryptMsgClose(self.0) };
    }
}

impl Msg {
    /// A parameter of the message, in a buffer aligned for any structure
    /// CryptoAPI puts there (u64 words), and its length in bytes.
    fn param(&self, kind: u32, index: u32) -> io::Result<(Vec<u64>, usize)> {
        let mut size = 0u32;
        // SAFETY: self.0 is an open message; a null buffer asks only for
        // the size, written to `size`.
        if unsafe { CryptMsgGetParam(self.0, kind, index, null_mut(), &mut size) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u64; (size as usize).div_ceil(8)];
        // SAFETY: buf is writable for at least `size` bytes (rounded up to
        // whole words) and 8-aligned; CryptMsgGetParam writes at most
        // `size` bytes and stores how many it wrote.
        if unsafe { CryptMsgGetParam(self.0, kind, index, buf.as_mut_ptr().cast(), &mut size) } == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok((buf, size as usize))
    }
}

/// A private key handle CryptAcquireCertificatePrivateKey gave, released
/// on drop when it is ours to release.
struct Key {
    handle: usize,
    spec: u32,
    ours: bool,
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.ours {
            return;
        }
        if self.spec == CERT_NCRYPT_KEY_SPEC {
            // SAFETY: a CNG key handle we own (spec says which kind), freed once.
            unsafe { NCryptFreeObject(self.handle) };
        } else {
            // SAFETY: a CSP handle we own, released once.
            unsafe { CryptReleaseContext(self.handle, 0) };
        }
    }
}

fn local_machine_my() -> io::Result<Store> {
    let name = wide("My");
    // SAFETY: the provider is the predefined system-store constant, whose
    // parameter is a NUL-terminated UTF-16 store name (`name`, alive for the
    // call); no crypto provider handle is passed.
    let h = unsafe {
        CertOpenStore(
            CERT_STORE_PROV_SYSTEM_W,
            0,
            0,
            CERT_SYSTEM_STORE_LOCAL_MACHINE
                | CERT_STORE_OPEN_EXISTING_FLAG
                | CERT_STORE_READONLY_FLAG,
            name.as_ptr() as *const core::ffi::c_void,
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(Store(h))
}

/// A PKCS#12 file with an empty password, imported with `flags`.
fn import_pfx(pfx: &[u8], flags: CRYPT_KEY_FLAGS) -> io::Result<Store> {
    let len = u32::try_from(pfx.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "key file too large"))?;
    let blob = CRYPT_INTEGER_BLOB {
        cbData: len,
        pbData: pfx.as_ptr() as *mut u8,
    };
    let empty = wide("");
    // SAFETY: blob points at `pfx` (len bytes, alive for the call, only
    // read); the password is a NUL-terminated UTF-16 string alive for the
    // call.
    let mut h = unsafe { PFXImportCertStore(&blob, empty.as_ptr(), flags) };
    if h.is_null() {
        // An empty password may have been encoded as "no password".
        // SAFETY: as above, with a null password (allowed by the API).
        h = unsafe { PFXImportCertStore(&blob, null(), flags) };
    }
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(Store(h))
}

/// Decrypts EnvelopedData `der` with `cert` and its private key: the
/// message's recipient that is `cert` (issuer and serial number), its
/// content-encryption key unwrapped by the private key, the content
/// decrypted (CryptMsg*, which Windows' CryptDecryptMessage is built on and
/// which Wine implements; Wine lacks CryptDecryptMessage itself).
fn decrypt_with(cert: &Cert, der: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(der.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too large"))?;
    // SAFETY: no provider, recipient or stream info: a plain decode of a
    // message whose type comes from its content.
    let h = unsafe { CryptMsgOpenToDecode(ENCODING, 0, 0, 0, null(), null()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    let msg = Msg(h);
    // SAFETY: msg.0 is open; der is `len` readable bytes, the whole message.
    if unsafe { CryptMsgUpdate(msg.0, der.as_ptr(), len, 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let (count, _) = msg.param(CMSG_RECIPIENT_COUNT_PARAM, 0)?;
    // A u32 in the first four bytes: the low half of the first word (x86_64).
    let count = count[0] as u32;
    // SAFETY: cert.0 is a live context; its pCertInfo is valid as long as
    // the context is (we hold it).
    let mine = unsafe { &*(*cert.0).pCertInfo };
    let mut index = None;
    for i in 0..count {
        let (buf, size) = msg.param(CMSG_RECIPIENT_INFO_PARAM, i)?;
        if size < std::mem::size_of::<CERT_INFO>() {
            continue;
        }
        // SAFETY: CryptoAPI wrote a CERT_INFO (with the blobs it points at
        // after it, inside the same buffer) into `buf`, which is 8-aligned,
        // at least that large, and outlives `info`.
        let info = unsafe { &*(buf.as_ptr() as *const CERT_INFO) };
        // SAFETY: all four blobs point at live memory (buf and the
        // certificate context) for the duration of the calls.
        let same = unsafe {
            CertCompareCertificateName(ENCODING, &info.Issuer, &mine.Issuer) != 0
                && CertCompareIntegerBlob(&info.SerialNumber, &mine.SerialNumber) != 0
        };
        if same {
            index = Some(i);
            break;
        }
    }
    let index = index.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the protected settings are not encrypted to this certificate",
        )
    })?;
    let (mut handle, mut spec, mut ours) = (0usize, 0u32, 0);
    // SAFETY: cert.0 is a live context; the out pointers are live locals.
    // The handle is owned by us when `ours` is set (released by Key).
    if unsafe {
        CryptAcquireCertificatePrivateKey(
            cert.0,
            CRYPT_ACQUIRE_SILENT_FLAG | CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG,
            null(),
            &mut handle,
            &mut spec,
            &mut ours,
        )
    } == 0
    {
        return Err(io::Error::last_os_error());
    }
    let key = Key {
        handle,
        spec,
        ours: ours != 0,
    };
    let para = CMSG_CTRL_DECRYPT_PARA {
        cbSize: std::mem::size_of::<CMSG_CTRL_DECRYPT_PARA>() as u32,
        Anonymous: if key.spec == CERT_NCRYPT_KEY_SPEC {
            CMSG_CTRL_DECRYPT_PARA_0 {
                hNCryptKey: key.handle,
            }
        } else {
            CMSG_CTRL_DECRYPT_PARA_0 {
                hCryptProv: key.handle,
            }
        },
        // AT_KEYEXCHANGE or AT_SIGNATURE as the key's provider info says;
        // anything else (Wine's PFX import records 3) as 0, which means
        // AT_KEYEXCHANGE: the key that unwraps content keys.
        dwKeySpec: match key.spec {
            AT_KEYEXCHANGE | AT_SIGNATURE | CERT_NCRYPT_KEY_SPEC => key.spec,
            _ => 0,
        },
        dwRecipientIndex: index,
    };
    // SAFETY: msg.0 is an open, fully updated enveloped message; para is
    // initialised, names a live key handle (key outlives the call) of the
    // kind dwKeySpec says, and a recipient index below the count.
    if unsafe {
        CryptMsgControl(
            msg.0,
            0,
            CMSG_CTRL_DECRYPT,
            &para as *const CMSG_CTRL_DECRYPT_PARA as *const core::ffi::c_void,
        )
    } == 0
    {
        return Err(io::Error::last_os_error());
    }
    let (buf, size) = msg.param(CMSG_CONTENT_PARAM, 0)?;
    let bytes: Vec<u8> = buf
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(size)
        .collect();
    drop(key);
    Ok(bytes)
}

/// Decrypts `der` with the certificate `thumbprint` names: from
/// `LocalMachine\My`, or — only when it is not there — from the PKCS#12
/// file `fallback`. Errors name the certificate and the file, never content.
pub fn decrypt_enveloped(
    der: &[u8],
    thumbprint: &str,
    fallback: &Path,
) -> io::Result<(Vec<u8>, KeySource)> {
    let sha1 = sha1_of(thumbprint)?;
    let store_error = match local_machine_my() {
        Ok(store) => match find(&store, &sha1) {
            Some(cert) => return decrypt_with(&cert, der).map(|p| (p, KeySource::Store)),
            None => "no such certificate there".to_string(),
        },
        Err(e) => format!("cannot open it: {e}"),
    };
    let pfx = std::fs::read(fallback).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "certificate {thumbprint} not in LocalMachine\\My ({store_error}), and no key file {}: {e}",
                fallback.display()
            ),
        )
    })?;
    // The key in memory only (as long as the store) where the system
    // can do that; Wine's crypt32 cannot use such a key for decryption
    // (CRYPT_E_NO_KEY_PROPERTY), so then the key is imported into the
    // account's key container, as a plain PFX import would.
    let mut last = None;
    for flags in [PKCS12_NO_PERSIST_KEY, 0] {
        let attempt = import_pfx(&pfx, flags)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{}: cannot import: {e}", fallback.display()),
                )
            })
            .and_then(|store| {
                let cert = find(&store, &sha1).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{}: holds no certificate {thumbprint}", fallback.display()),
                    )
                })?;
                decrypt_with(&cert, der)
            });
        match attempt {
            Ok(plain) => {
                last = Some(Ok(plain));
                break;
            }
            Err(e) => last = Some(Err(e)),
        }
    }
    let plain = last.unwrap_or_else(|| Err(io::Error::other("no import attempted")))?;
    Ok((
        plain,
        KeySource::File {
            path: fallback.to_path_buf(),
            store_error,
        },
    ))
}
