//! Live capture: one AF_PACKET socket per interface with a TPACKET_V3 receive
//! ring. pnet's datalink channel (the chosen package's default) copies every
//! packet through `recv` and cannot report kernel drops; the ring hands whole
//! blocks of packets over without a syscall per packet, and
//! PACKET_STATISTICS gives the drops. pnet still discovers the interfaces.
//!
//! Ownership protocol of the ring (packet_mmap.rst): the kernel fills a block
//! while its status word is TP_STATUS_KERNEL, then sets TP_STATUS_USER (with a
//! full barrier). From then until we store TP_STATUS_KERNEL back, the kernel
//! neither reads nor writes that block. We only look at a block inside that
//! window, after an Acquire load of its status, and give it back with a
//! Release store once we are done with it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::RawPacket;

pub use super::live_common::{
    IfaceStats, LiveError, RingOptions, DEFAULT_BLOCKS, DEFAULT_BLOCK_KIB,
};

/// Live capture works here.
pub fn available() -> Result<(), LiveError> {
    Ok(())
}

pub struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    block_size: usize,
    blocks: usize,
    next: usize,
    linktype: u32,
    scratch: Vec<u8>,
    stats: IfaceStats,
    ifindex: u32,
    /// Loopback: drop the outgoing copy of every packet (see `walk`).
    skip_outgoing: bool,
}

// SAFETY: `map` points to a mapping owned by this Ring alone (created in
// `open`, unmapped in `drop`); nothing else holds the pointer, so moving the
// Ring to another thread moves sole access with it.
unsafe impl Send for Ring {}

/// The current index of interface `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Interfaces to capture on by default: up, not loopback, with an address.
pub fn default_interfaces() -> Vec<String> {
    pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| i.is_up() && !i.is_loopback() && !i.ips.is_empty())
        .map(|i| i.name)
        .collect()
}

fn err(iface: &str, what: &'static str) -> LiveError {
    LiveError::Io {
        iface: iface.to_string(),
        what,
        source: io::Error::last_os_error(),
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialized T for the duration of the call
    // and its exact size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Ring {
    pub fn open(iface: &str, opts: &RingOptions) -> Result<Ring, LiveError> {
        let name = CString::new(iface).map_err(|_| LiveError::NoInterface(iface.into()))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(LiveError::NoInterface(iface.into()));
        }
        let arphrd = arphrd_of(iface);
        let linktype = linktype_of(arphrd);
        // Header-only capture in the kernel: the classic BPF program returns
        // the snap length for a packet it keeps, which truncates it before
        // the copy. Without a capture filter it is the one instruction
        // "accept snaplen bytes"; with one, libpcap's program for this
        // interface's frames (the socket is SOCK_RAW: the kernel runs the
        // filter on the frame from its link-layer header, as libpcap's own
        // live capture does), compiled with the same snap length. Attached
        // before the socket is bound, so no unfiltered packet gets in;
        // compiled before the socket is made, so a mistake in the
        // expression is reported as such even without CAP_NET_RAW.
        let snaplen = opts.snaplen.max(64);
        let prog: Vec<libc::sock_filter> = match super::filter::expression(opts.filter.as_deref()) {
            None => vec![libc::sock_filter {
                code: 0x06, // BPF_RET | BPF_K
                jt: 0,
                jf: 0,
                k: snaplen,
            }],
            Some(expr) => match super::filter::compile(expr, linktype, snaplen) {
                Ok(program) => program
                    .insns()
                    .iter()
                    .map(|i| libc::sock_filter {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect(),
                // A link type with no LINKTYPE_ value (a GRE or IPIP tunnel
                // among the default interfaces): libpcap knows its frames no
                // more than the decoder does, so no packet there could be a
                // flow. Take none rather than refuse the whole capture.
                Err(e @ super::filter::FilterError::Compile { .. })
                    if linktype >= UNKNOWN_LINKTYPE =>
                {
                    tracing::warn!("{iface}: {e}; capturing nothing on it");
                    vec![libc::sock_filter {
                        code: 0x06, // BPF_RET | BPF_K
                        jt: 0,
                        jf: 0,
                        k: 0,
                    }]
                }
                Err(source) => {
                    return Err(LiveError::Filter {
                        iface: iface.into(),
                        source,
                    })
                }
            },
        };
        // Protocol 0: the socket receives nothing until it is bound below,
        // after its ring is ready, so no other interface's packets slip in.
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => LiveError::Permission {
                    iface: iface.into(),
                    promiscuous: opts.promiscuous,
                },
                _ => LiveError::Io {
                    iface: iface.into(),
                    what: "socket",
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a new, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let version: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(|_| err(iface, "PACKET_VERSION"))?;
        let fprog = libc::sock_fprog {
            // At most MAX_INSNS (4096): `Program::new` checked it.
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // The kernel copies the program during the call (sk_attach_filter),
        // so `prog` need only outlive it.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
            .map_err(|_| err(iface, "SO_ATTACH_FILTER"))?;
        let frame_size = 2048u32;
        let req = libc::tpacket_req3 {
            tp_block_size: opts.block_size as u32,
            tp_block_nr: opts.blocks as u32,
            tp_frame_size: frame_size,
            tp_frame_nr: (opts.block_size * opts.blocks / frame_size as usize) as u32,
            tp_retire_blk_tov: opts.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|_| err(iface, "PACKET_RX_RING"))?;
        let map_len = opts.block_size * opts.blocks;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // length and offset are what the kernel expects; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(err(iface, "mmap ring"));
        }
        let mut ring = Ring {
            fd,
            map: map.cast(),
            map_len,
            block_size: opts.block_size,
            blocks: opts.blocks,
            next: 0,
            linktype,
            scratch: Vec::with_capacity(opts.snaplen as usize + 64),
            stats: IfaceStats {
                iface: iface.into(),
                ..IfaceStats::default()
            },
            ifindex,
            skip_outgoing: arphrd == u32::from(libc::ARPHRD_LOOPBACK),
        };
        if opts.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex as libc::c_int,
                mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(
                &ring.fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
            )
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) {
                    LiveError::Permission {
                        iface: iface.into(),
                        promiscuous: true,
                    }
                } else {
                    LiveError::Io {
                        iface: iface.into(),
                        what: "promiscuous mode",
                        source: e,
                    }
                }
            })?;
        }
        // SAFETY: a zeroed sockaddr_ll is a valid value; the fields that
        // matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(err(iface, "bind"));
        }
        // Counters start at zero for this capture.
        let _ = ring.kernel_stats();
        ring.stats.kernel_drops = 0;
        Ok(ring)
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn name(&self) -> &str {
        &self.stats.iface
    }

    /// The interface this ring is bound to; a deleted and re-created
    /// interface of the same name has another index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn status(&self, block: usize) -> &AtomicU32 {
        // SAFETY: block_status is the u32 at offset 8 of the block descriptor
        // (tpacket_block_desc → tpacket_hdr_v1), 8-aligned because blocks are
        // page-aligned; the mapping lives as long as `self`. The kernel
        // updates it concurrently, hence the atomic view.
        unsafe { AtomicU32::from_ptr(self.map.add(block * self.block_size + 8).cast()) }
    }

    /// Hands every packet of every block that is ready to `f`; returns the
    /// number of packets.
    pub fn drain<F: FnMut(RawPacket<'_>)>(&mut self, f: &mut F) -> usize {
        let mut n = 0;
        loop {
            if self.status(self.next).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return n;
            }
            // SAFETY: the block is ours (status USER, see the module comment)
            // until the Release store below; the slice does not outlive this
            // iteration, and the block lies inside the mapping.
            let block = unsafe {
                std::slice::from_raw_parts(
                    self.map.add(self.next * self.block_size),
                    self.block_size,
                )
            };
            n += self.walk(block, f);
            self.status(self.next)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.next = (self.next + 1) % self.blocks;
        }
    }

    /// Parses one block's packets; every offset is checked against the block.
    fn walk<F: FnMut(RawPacket<'_>)>(&mut self, block: &[u8], f: &mut F) -> usize {
        let u32_at = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let (Some(num), Some(first)) = (u32_at(block, 12), u32_at(block, 16)) else {
            return 0;
        };
        let mut off = first as usize;
        let mut n = 0;
        for _ in 0..num {
            let Some(h) = block.get(off..off + 40) else {
                break;
            };
            let next = u32_at(h, 0).unwrap_or(0) as usize;
            // The kernel wrote the next packet from another core: start
            // pulling its header and first bytes in while this one is handled.
            if next != 0 {
                if let Some(ahead) = block.get(off + next..off + next + 1) {
                    crate::flow::prefetch(ahead.as_ptr());
                    crate::flow::prefetch(ahead.as_ptr().wrapping_add(64));
                    crate::flow::prefetch(ahead.as_ptr().wrapping_add(128));
                }
            }
            let ts_ns = u64::from(u32_at(h, 4).unwrap_or(0)) * 1_000_000_000
                + u64::from(u32_at(h, 8).unwrap_or(0));
            let snap = u32_at(h, 12).unwrap_or(0) as usize;
            let len = u32_at(h, 16).unwrap_or(0);
            let status = u32_at(h, 20).unwrap_or(0);
            let mac = usize::from(u16::from_ne_bytes([h[24], h[25]]));
            let tci = u32_at(h, 32).unwrap_or(0) as u16;
            // Loopback hands each packet to packet sockets twice: as it
            // leaves (dev_queue_xmit_nit, PACKET_OUTGOING) and as it arrives
            // back. Like libpcap (linux_check_direction) we keep the arriving
            // copy only, so lo counts what tcpdump counts. Other interfaces
            // pay one never-taken branch; the byte read is in the header's
            // cache lines, which are already prefetched.
            let duplicate =
                self.skip_outgoing && block.get(off + PKTTYPE_AT) == Some(&libc::PACKET_OUTGOING);
            let data = if duplicate {
                None
            } else {
                block.get(off + mac..off + mac + snap)
            };
            if let Some(data) = data {
                n += 1;
                self.stats.packets += 1;
                if status & libc::TP_STATUS_VLAN_VALID != 0
                    && self.linktype == 1
                    && data.len() >= 12
                {
                    // The NIC stripped the 802.1Q tag into metadata: put it
                    // back so the decoder sees the VLAN like in a capture file.
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&data[..12]);
                    self.scratch.extend_from_slice(&[0x81, 0x00]);
                    self.scratch.extend_from_slice(&tci.to_be_bytes());
                    self.scratch.extend_from_slice(&data[12..]);
                    f(RawPacket {
                        ts_ns,
                        linktype: 1,
                        orig_len: len + 4,
                        data: &self.scratch,
                    });
                } else {
                    f(RawPacket {
                        ts_ns,
                        linktype: self.linktype,
                        orig_len: len,
                        data,
                    });
                }
            }
            if next == 0 {
                break;
            }
            off += next;
        }
        n
    }

    /// Kernel drops counted so far (without asking the kernel again).
    pub fn drops(&self) -> u64 {
        self.stats.kernel_drops
    }

    /// Reads (and accumulates) the kernel's counters; they reset on read.
    pub fn kernel_stats(&mut self) -> IfaceStats {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.kernel_drops += u64::from(st.tp_drops);
        }
        self.stats.clone()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are exactly what mmap returned in `open`,
        // and no slice into the mapping outlives a `drain` call.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

/// Waits until one of the rings has a descriptor event or `timeout_ms` passes.
pub fn wait(rings: &[Ring], timeout_ms: i32) {
    let mut fds: Vec<libc::pollfd> = rings
        .iter()
        .map(|r| libc::pollfd {
            fd: r.fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
}

/// Offset of `sll_pkttype` in a frame: the kernel writes a sockaddr_ll at
/// TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) (tpacket_rcv in af_packet.c).
const PKTTYPE_AT: usize = tpacket_align(std::mem::size_of::<libc::tpacket3_hdr>())
    + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);

/// TPACKET_ALIGN of linux/if_packet.h (libc's is a non-const fn).
const fn tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// An interface's ARPHRD type (Ethernet if unknown).
fn arphrd_of(iface: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/type"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// Where [`linktype_of`] puts ARPHRD types it has no LINKTYPE_ value for.
const UNKNOWN_LINKTYPE: u32 = 0x2_0000;

/// LINKTYPE of an interface from its ARPHRD type.
fn linktype_of(arphrd: u32) -> u32 {
    match arphrd {
        // Ethernet and loopback frames carry an Ethernet header.
        1 | 772 => 1,
        // ARPHRD_NONE (tun) and ARPHRD_RAWIP: packets start at the IP header.
        65534 | 519 => 101,
        other => UNKNOWN_LINKTYPE + other,
    }
}
