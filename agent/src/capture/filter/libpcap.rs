//! tcpdump's filter language compiled by libpcap itself, loaded at run time
//! (`libpcap.so.0.8` on Debian and Ubuntu): the binary needs no libpcap to
//! start or to run without a filter, and the build needs no libpcap-dev.
//! Only the compiler is used, on a handle that reads nothing: for live
//! capture `pcap_open_dead` (no device, no privilege); for files a savefile
//! handle over a bare 24-byte file header in memory, because libpcap
//! compiles a few things differently for a file than for a live device
//! (`ip6` on BSD loopback frames matches every BSD's AF_INET6 in a file, only
//! the host's live), and tcpdump -r compiles for a file. The program is
//! copied out before it is freed.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use super::program::Insn;
use super::CompileFailure;

/// The names libpcap goes by: Debian's soname first, then other
/// distributions' (Fedora, Arch: `libpcap.so.1`), then a development link.
const NAMES: &[&str] = &["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"];

/// `PCAP_NETMASK_UNKNOWN`: `ip broadcast` is then refused instead of
/// guessed.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// `struct bpf_insn` of pcap/bpf.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct bpf_program` of pcap/bpf.h.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut BpfInsn,
}

/// `pcap_t`, only ever behind a pointer.
#[repr(C)]
struct Pcap {
    _opaque: [u8; 0],
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut Pcap;
type Compile = unsafe extern "C" fn(*mut Pcap, *mut BpfProgram, *const c_char, c_int, u32) -> c_int;
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type GetErr = unsafe extern "C" fn(*mut Pcap) -> *mut c_char;
type Close = unsafe extern "C" fn(*mut Pcap);
type FopenOffline = unsafe extern "C" fn(*mut libc::FILE, *mut c_char) -> *mut Pcap;

/// `PCAP_ERRBUF_SIZE`.
const ERRBUF_SIZE: usize = 256;

struct Libpcap {
    /// Kept loaded for the life of the process (it sits in a static), so the
    /// function pointers below stay valid.
    _lib: libloading::Library,
    open_dead: OpenDead,
    compile: Compile,
    freecode: FreeCode,
    geterr: GetErr,
    close: Close,
    fopen_offline: FopenOffline,
}

static LIBPCAP: OnceLock<Result<Libpcap, String>> = OnceLock::new();

/// libpcap before 1.8 compiled through global parser state; one compile at
/// a time is cheap insurance against an old library on the host.
static COMPILING: Mutex<()> = Mutex::new(());

type Symbols = (OpenDead, Compile, FreeCode, GetErr, Close, FopenOffline);

/// The functions used, looked up in `lib`.
///
/// # Safety
/// `lib` must be libpcap, whose symbols of these names have the types
/// [`Symbols`] gives them; the pointers must not outlive `lib`.
unsafe fn symbols(lib: &libloading::Library) -> Result<Symbols, libloading::Error> {
    // SAFETY: the caller's promise, above.
    unsafe {
        Ok((
            *lib.get::<OpenDead>(b"pcap_open_dead\0")?,
            *lib.get::<Compile>(b"pcap_compile\0")?,
            *lib.get::<FreeCode>(b"pcap_freecode\0")?,
            *lib.get::<GetErr>(b"pcap_geterr\0")?,
            *lib.get::<Close>(b"pcap_close\0")?,
            *lib.get::<FopenOffline>(b"pcap_fopen_offline\0")?,
        ))
    }
}

fn load() -> Result<Libpcap, String> {
    let mut tried = Vec::new();
    for name in NAMES {
        // SAFETY: loading a shared library runs its initializers. libpcap's
        // do no more than set up its own globals; it is the library tcpdump
        // loads the same way, and nothing else of ours runs meanwhile.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(l) => l,
            Err(e) => {
                tried.push(format!("{name}: {e}"));
                continue;
            }
        };
        // SAFETY: the types `symbols` gives each symbol are the C
        // signatures pcap/pcap.h declares for them (the structs above mirror
        // its own); the pointers are used only while `lib` is loaded, and
        // `lib` moves into the returned value, which lives in a static and
        // is never dropped.
        let (open_dead, compile, freecode, geterr, close, fopen_offline) =
            unsafe { symbols(&lib) }.map_err(|e| format!("{name}: {e}"))?;
        return Ok(Libpcap {
            _lib: lib,
            open_dead,
            compile,
            freecode,
            geterr,
            close,
            fopen_offline,
        });
    }
    Err(tried.join("; "))
}

/// What the program is compiled for.
#[derive(Clone, Copy)]
pub enum Target {
    /// A live socket's frames of this DLT_ value.
    Live { dlt: u32 },
    /// A capture file's packets of this LINKTYPE_ value (libpcap maps it to
    /// its DLT_ as when it reads a file).
    File { linktype: u32 },
}

/// A libpcap file header in this host's byte order (not byte-swapped, as
/// tcpdump sees a file written on a host like this one), with no records.
fn file_header(linktype: u32, snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&linktype.to_ne_bytes());
    h
}

/// Compiles `expr` for `target` with optimization on; matching packets get
/// `snaplen` as the return value.
pub fn compile(expr: &str, target: Target, snaplen: u32) -> Result<Vec<Insn>, CompileFailure> {
    let pcap = LIBPCAP
        .get_or_init(load)
        .as_ref()
        .map_err(|e| CompileFailure::Missing(e.clone()))?;
    let text = CString::new(expr)
        .map_err(|_| CompileFailure::Refused("the expression holds a NUL byte".into()))?;
    let Ok(snap) = c_int::try_from(snaplen) else {
        return Err(CompileFailure::Refused(format!(
            "snap length {snaplen} out of range"
        )));
    };
    // Read through by the savefile handle: declared before it, so it
    // outlives the handle (closed at the end of this function).
    let mut header = match target {
        Target::File { linktype } => file_header(linktype, snaplen),
        Target::Live { .. } => [0u8; 24],
    };
    let _one = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
    let handle = match target {
        Target::Live { dlt } => {
            let Ok(dlt) = c_int::try_from(dlt) else {
                return Err(CompileFailure::Refused(format!(
                    "link type {dlt} out of range"
                )));
            };
            // SAFETY: pcap_open_dead takes plain integers and returns a new
            // handle or NULL (checked); it is closed below on every path.
            let h = unsafe { (pcap.open_dead)(dlt, snap) };
            if h.is_null() {
                return Err(CompileFailure::Refused(
                    "pcap_open_dead failed (out of memory?)".into(),
                ));
            }
            h
        }
        Target::File { .. } => {
            // SAFETY: fmemopen reads the `header.len()` bytes at `header`,
            // which stay alive and unmoved until the stream is closed (by
            // pcap_close below, or fclose on failure); "r" never writes.
            let fp = unsafe {
                libc::fmemopen(
                    header.as_mut_ptr().cast::<c_void>(),
                    header.len(),
                    c"r".as_ptr(),
                )
            };
            if fp.is_null() {
                return Err(CompileFailure::Refused(format!(
                    "fmemopen: {}",
                    std::io::Error::last_os_error()
                )));
            }
            let mut errbuf = [0 as c_char; ERRBUF_SIZE];
            // SAFETY: `fp` is an open stream and `errbuf` has the
            // PCAP_ERRBUF_SIZE bytes libpcap may write a message into. On
            // success the handle owns `fp` (pcap_close closes it).
            let h = unsafe { (pcap.fopen_offline)(fp, errbuf.as_mut_ptr()) };
            if h.is_null() {
                // SAFETY: libpcap wrote a NUL-terminated message into the
                // zeroed buffer (and a message never fills it whole); `fp`
                // is still ours after the failure and closed once here.
                let msg = unsafe {
                    let m = CStr::from_ptr(errbuf.as_ptr())
                        .to_string_lossy()
                        .into_owned();
                    libc::fclose(fp);
                    m
                };
                return Err(CompileFailure::Refused(msg));
            }
            h
        }
    };
    let mut prog = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: `handle` is the live handle from pcap_open_dead, `prog` a
    // valid bpf_program for libpcap to fill, `text` a NUL-terminated string
    // that outlives the call.
    let r = unsafe { (pcap.compile)(handle, &mut prog, text.as_ptr(), 1, NETMASK_UNKNOWN) };
    let out = if r != 0 {
        // SAFETY: after a failed pcap_compile, pcap_geterr returns the
        // handle's NUL-terminated error buffer (never NULL), valid until the
        // handle is closed below; it is copied out before that.
        let msg = unsafe { CStr::from_ptr((pcap.geterr)(handle)) };
        Err(CompileFailure::Refused(msg.to_string_lossy().into_owned()))
    } else {
        let insns = if prog.bf_insns.is_null() || prog.bf_len == 0 {
            Vec::new()
        } else {
            // SAFETY: a successful pcap_compile left `bf_len` initialized
            // instructions at `bf_insns` (allocated by libpcap, non-NULL as
            // just checked, aligned for bpf_insn); they stay valid until
            // pcap_freecode below, and are copied out before it.
            unsafe { std::slice::from_raw_parts(prog.bf_insns, prog.bf_len as usize) }
                .iter()
                .map(|i| Insn::new(i.code, i.jt, i.jf, i.k))
                .collect()
        };
        // SAFETY: `prog` holds what pcap_compile allocated and is freed
        // once; nothing refers to it afterwards.
        unsafe { (pcap.freecode)(&mut prog) };
        Ok(insns)
    };
    // SAFETY: `handle` came from pcap_open_dead or pcap_fopen_offline, is
    // closed once (with its stream), and nothing uses it (or its error
    // buffer) afterwards.
    unsafe { (pcap.close)(handle) };
    out
}
