//! A packet generator for the live-capture benchmark: sends the frames of a
//! capture file out of an interface with sendmmsg(2), 64 frames per call, at
//! a target rate or as fast as possible. tcpreplay sends one frame per
//! syscall and tops out near 400 kpps on the 2-core benchmark machine.
//!
//!   cargo run --release --example blast -- IFACE FILE PPS|max [LOOPS]

use std::ffi::CString;
use std::time::{Duration, Instant};

use vmflow::capture::CaptureReader;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: blast IFACE FILE PPS|max [LOOPS]");
        std::process::exit(2);
    }
    let (iface, file, rate) = (&args[1], &args[2], &args[3]);
    let loops: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let pps: Option<f64> = rate.parse().ok();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut r =
        CaptureReader::open(std::fs::File::open(file).expect("capture file")).expect("capture");
    while let Some(p) = r.next_packet().expect("readable capture") {
        frames.push(p.data.to_vec());
    }
    let name = CString::new(iface.as_str()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "no interface {iface}");
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a zeroed sockaddr_ll is valid; the fields used are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(rc == 0, "bind: {}", std::io::Error::last_os_error());

    const BATCH: usize = 64;
    let total = frames.len() * loops;
    let start = Instant::now();
    let mut sent = 0usize;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    while sent < total {
        if let Some(pps) = pps {
            let due = start + Duration::from_secs_f64(sent as f64 / pps);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        let n = BATCH.min(total - sent);
        iov.clear();
        msgs.clear();
        for k in 0..n {
            let f = &frames[(sent + k) % frames.len()];
            iov.push(libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            });
        }
        for v in iov.iter_mut() {
            // SAFETY: a zeroed mmsghdr is valid; iov points into `iov`,
            // which outlives the sendmmsg call below.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        // SAFETY: `msgs` holds `n` initialized headers whose buffers (frames)
        // are alive and unmodified for the duration of the call.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            panic!("sendmmsg: {e}");
        }
        sent += rc as usize;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "blast: sent {sent} packets in {secs:.3} s: {:.0} pps",
        sent as f64 / secs
    );
    // SAFETY: `fd` is ours and no longer used.
    unsafe { libc::close(fd) };
}
