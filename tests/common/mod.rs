//! Test helpers: frames and capture files built byte by byte, independently of
//! vmflow's own readers and of its synthetic generator.
#![allow(dead_code, clippy::too_many_arguments)]

pub mod agents;
pub mod arm_standin;
pub mod azurite;
pub mod capture_files;
pub mod container;
pub mod fleet;
pub mod flowlogs;
pub mod http_stub;
pub mod nats;
pub mod netns;
pub mod nfcapd;
pub mod scrape;
pub mod test_cert;
pub mod tmpfs;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub fn vmflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmflow"))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("vmflow runs")
}

/// Runs `cmd` with `input` on its standard input (a pipe, written from
/// another thread so a large input cannot deadlock against the output).
/// A write the command cut short by exiting is not an error here: callers
/// judge its output.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("the command runs");
    writer.join().expect("the writer thread ends");
    out
}

/// Writes a MaxMind-format database to `path` with mmdb-writer (installed
/// by scripts/test.sh beside the ASN database): `inserts` are Python
/// statements on the writer `w`, with `IPSet` and `MmdbU32` in scope.
pub fn write_mmdb(path: &Path, inserts: &str) {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ipdb/py");
    let script = format!(
        "import sys\nfrom mmdb_writer import MMDBWriter, MmdbU32\nfrom netaddr import IPSet\n\
         w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type='vmflow-test', \
         languages=['en'], description={{'en': 'test'}})\n{inserts}\nw.to_db_file(sys.argv[1])\n"
    );
    run_ok(
        Command::new("python3")
            .env("PYTHONPATH", py)
            .args(["-c", &script])
            .arg(path),
    );
}

/// Runs a command that must succeed; its stderr is the failure message.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `vmflow replay` and returns (records, stderr, success).
pub fn replay(files: &[PathBuf], extra: &[&str]) -> (Vec<Value>, String, bool) {
    let out = run(vmflow().arg("replay").args(extra).args(files));
    let stdout = String::from_utf8(out.stdout).expect("utf8 stdout");
    let records = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Reads `key=value` from the summary line on stderr.
pub fn summary(stderr: &str, key: &str) -> Option<u64> {
    stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

pub fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|r| r.to_string());
    v
}

// ---- packets ----------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Pkt {
    pub ts_ns: u64,
    /// The IP packet (header and whatever payload bytes are kept).
    pub ip: Vec<u8>,
    /// Its length on the wire (IP layer).
    pub ip_len: u32,
}

fn csum(h: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// IPv4 header (20 bytes + options) around `l4`, whose full length is `l4_len`.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    l4: &[u8],
    l4_len: usize,
    opts: &[u8],
    id: u16,
    frag: u16,
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let ihl = 20 + opts.len();
    let total = (ihl + l4_len) as u16;
    let mut h = vec![0x40 | (ihl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(opts);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// IPv6 header with an extension chain given as (next header value, bytes).
pub fn ipv6(
    src: [u8; 16],
    dst: [u8; 16],
    first_nh: u8,
    ext_and_l4: &[u8],
    payload_len: usize,
) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[first_nh, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(ext_and_l4);
    h
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u
}

pub fn icmp(ty: u8, code: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut i = vec![ty, code, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&seq.to_be_bytes());
    i
}

pub const A: [u8; 4] = [10, 0, 0, 1];
pub const B: [u8; 4] = [198, 51, 100, 7];
pub const T0: u64 = 1_700_000_000_000_000_000;
pub const MS: u64 = 1_000_000;
pub const S: u64 = 1_000_000_000;

/// A TCP packet A→B (or B→A) with `payload` bytes on the wire, of which none are kept.
pub fn tcp4(ts_ns: u64, fwd: bool, flags: u8, payload: usize) -> Pkt {
    let (s, d, sp, dp) = if fwd {
        (A, B, 40_000, 443)
    } else {
        (B, A, 443, 40_000)
    };
    let ip = ipv4(s, d, 6, &tcp(sp, dp, flags), 20 + payload, &[], 1, 0x4000);
    Pkt {
        ts_ns,
        ip_len: (40 + payload) as u32,
        ip,
    }
}

/// A short, complete TCP conversation A→B: handshake, request, response, FIN/FIN/ACK.
pub fn tcp_conversation(t: u64) -> Vec<Pkt> {
    vec![
        tcp4(t, true, SYN, 0),
        tcp4(t + MS, false, SYN | ACK, 0),
        tcp4(t + 2 * MS, true, ACK, 0),
        tcp4(t + 3 * MS, true, PSH | ACK, 300),
        tcp4(t + 4 * MS, false, ACK, 1448),
        tcp4(t + 5 * MS, false, PSH | ACK, 500),
        tcp4(t + 6 * MS, true, FIN | ACK, 0),
        tcp4(t + 7 * MS, false, FIN | ACK, 0),
        tcp4(t + 8 * MS, true, ACK, 0),
    ]
}

/// A UDP exchange over IPv6 and an ICMP echo pair, to mix protocols.
pub fn mixed(t: u64) -> Vec<Pkt> {
    let mut v6a = [0u8; 16];
    v6a[..2].copy_from_slice(&[0xfd, 0x00]);
    v6a[15] = 1;
    let mut v6b = [0u8; 16];
    v6b[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    v6b[15] = 2;
    let u1 = udp(5353, 53, 40);
    let u2 = udp(53, 5353, 120);
    vec![
        Pkt {
            ts_ns: t,
            ip: ipv6(v6a, v6b, 17, &u1, 48),
            ip_len: 88,
        },
        Pkt {
            ts_ns: t + MS,
            ip: ipv6(v6b, v6a, 17, &u2, 128),
            ip_len: 168,
        },
        Pkt {
            ts_ns: t + 2 * MS,
            ip: ipv4(A, B, 1, &icmp(8, 0, 77, 1), 64, &[], 9, 0),
            ip_len: 84,
        },
        Pkt {
            ts_ns: t + 3 * MS,
            ip: ipv4(B, A, 1, &icmp(0, 0, 77, 1), 64, &[], 10, 0),
            ip_len: 84,
        },
    ]
}

// ---- link layers ------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub enum Link {
    Ethernet,
    /// Tags as (TPID, VLAN id), outermost first.
    Vlan(&'static [(u16, u16)]),
    Sll,
    Sll2,
    Raw,
    Raw4or6,
    NullLe,
    NullBe,
    Loop,
}

impl Link {
    pub fn linktype(self, v6: bool) -> u32 {
        match self {
            Link::Ethernet | Link::Vlan(_) => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Raw => 101,
            Link::Raw4or6 => {
                if v6 {
                    229
                } else {
                    228
                }
            }
            Link::NullLe | Link::NullBe => 0,
            Link::Loop => 108,
        }
    }

    pub fn frame(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip[0] >> 4 == 6;
        let et: u16 = if v6 { 0x86dd } else { 0x0800 };
        let mut f = Vec::new();
        match self {
            Link::Ethernet | Link::Vlan(_) => {
                f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
                if let Link::Vlan(tags) = self {
                    for (tpid, id) in tags {
                        f.extend_from_slice(&tpid.to_be_bytes());
                        f.extend_from_slice(&id.to_be_bytes());
                    }
                }
                f.extend_from_slice(&et.to_be_bytes());
            }
            Link::Sll => {
                f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                f.extend_from_slice(&et.to_be_bytes());
            }
            Link::Sll2 => {
                f.extend_from_slice(&et.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            }
            Link::Raw | Link::Raw4or6 => {}
            Link::NullLe => f.extend_from_slice(&(if v6 { 30u32 } else { 2 }).to_le_bytes()),
            Link::NullBe => f.extend_from_slice(&(if v6 { 24u32 } else { 2 }).to_be_bytes()),
            Link::Loop => f.extend_from_slice(&(if v6 { 10u32 } else { 2 }).to_be_bytes()),
        }
        f.extend_from_slice(ip);
        f
    }
}

/// A captured frame: timestamp, bytes kept, length on the wire, link type.
#[derive(Clone, Debug)]
pub struct Frame {
    pub ts_ns: u64,
    pub data: Vec<u8>,
    pub orig_len: u32,
    pub linktype: u32,
}

pub fn frames(pkts: &[Pkt], link: Link) -> Vec<Frame> {
    pkts.iter()
        .map(|p| {
            let data = link.frame(&p.ip);
            let hdr = data.len() - p.ip.len();
            Frame {
                ts_ns: p.ts_ns,
                orig_len: hdr as u32 + p.ip_len,
                linktype: link.linktype(p.ip[0] >> 4 == 6),
                data,
            }
        })
        .collect()
}

// ---- capture files ------------------------------------------------------------

pub fn pcap(frames: &[Frame], big: bool, nanos: bool) -> Vec<u8> {
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut f = Vec::new();
    f.extend_from_slice(&u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend_from_slice(&u16b(2));
    f.extend_from_slice(&u16b(4));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&u32b(65_535));
    f.extend_from_slice(&u32b(frames.first().map_or(1, |x| x.linktype)));
    for fr in frames {
        let frac = if nanos {
            fr.ts_ns % S
        } else {
            fr.ts_ns % S / 1_000
        };
        f.extend_from_slice(&u32b((fr.ts_ns / S) as u32));
        f.extend_from_slice(&u32b(frac as u32));
        f.extend_from_slice(&u32b(fr.data.len() as u32));
        f.extend_from_slice(&u32b(fr.orig_len));
        f.extend_from_slice(&fr.data);
    }
    f
}

/// pcapng with one interface per distinct link type; interface `i` uses
/// timestamp resolution `res[i % res.len()]` (the if_tsresol byte). Every
/// `spb_every`-th packet (if non-zero) is written as a simple packet block
/// when it is on interface 0.
pub fn pcapng(frames: &[Frame], big: bool, res: &[u8], spb_every: usize) -> Vec<u8> {
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let block = |out: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let mut b = body.to_vec();
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        let len = (b.len() + 12) as u32;
        out.extend_from_slice(&u32b(ty));
        out.extend_from_slice(&u32b(len));
        out.extend_from_slice(&b);
        out.extend_from_slice(&u32b(len));
    };
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&u32b(0x1a2b_3c4d));
    shb.extend_from_slice(&u16b(1));
    shb.extend_from_slice(&u16b(0));
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut ifaces: Vec<u32> = Vec::new();
    for fr in frames {
        if !ifaces.contains(&fr.linktype) {
            ifaces.push(fr.linktype);
        }
    }
    for (i, lt) in ifaces.iter().enumerate() {
        let mut idb = Vec::new();
        idb.extend_from_slice(&u16b(*lt as u16));
        idb.extend_from_slice(&u16b(0));
        idb.extend_from_slice(&u32b(0));
        // if_tsresol, then opt_endofopt.
        idb.extend_from_slice(&u16b(9));
        idb.extend_from_slice(&u16b(1));
        idb.extend_from_slice(&[res[i % res.len()], 0, 0, 0]);
        idb.extend_from_slice(&u16b(0));
        idb.extend_from_slice(&u16b(0));
        block(&mut out, 1, &idb);
    }
    let mut last_ts = None;
    for (n, fr) in frames.iter().enumerate() {
        let iface = ifaces.iter().position(|l| *l == fr.linktype).unwrap();
        let r = res[iface % res.len()];
        // SPBs carry no timestamp: only use one where the packet's time equals the previous one.
        if spb_every > 0
            && n % spb_every == spb_every - 1
            && iface == 0
            && last_ts == Some(fr.ts_ns)
        {
            let mut b = Vec::new();
            b.extend_from_slice(&u32b(fr.orig_len.max(fr.data.len() as u32)));
            b.extend_from_slice(&fr.data);
            // An SPB holds min(orig_len, block) bytes; keep orig == data here.
            assert_eq!(
                fr.orig_len as usize,
                fr.data.len(),
                "SPB frames must be whole"
            );
            block(&mut out, 3, &b);
            continue;
        }
        let ts: u64 = if r & 0x80 != 0 {
            ((u128::from(fr.ts_ns) << (r & 0x7f)) / 1_000_000_000) as u64
        } else if r <= 9 {
            fr.ts_ns / 10u64.pow(9 - u32::from(r))
        } else {
            fr.ts_ns * 10u64.pow(u32::from(r) - 9)
        };
        let mut b = Vec::new();
        b.extend_from_slice(&u32b(iface as u32));
        b.extend_from_slice(&u32b((ts >> 32) as u32));
        b.extend_from_slice(&u32b(ts as u32));
        b.extend_from_slice(&u32b(fr.data.len() as u32));
        b.extend_from_slice(&u32b(fr.orig_len));
        b.extend_from_slice(&fr.data);
        block(&mut out, 6, &b);
        last_ts = Some(fr.ts_ns);
    }
    out
}

/// NetMon 2.x with a frame table (or without, for a file still being
/// written). `minor` picks the record trailer: 0 none, 1 network, 2 +process,
/// 3 +UTC FILETIME.
pub fn netmon(frames: &[Frame], minor: u8, with_table: bool) -> Vec<u8> {
    let t0 = frames.first().map_or(0, |f| f.ts_ns);
    let secs = t0 / S;
    let (y, mo, d) = vmflow::calendar::civil_from_days((secs / 86_400) as i64);
    let (y, mo, d) = (y as u64, u64::from(mo), u64::from(d));
    let sod = secs % 86_400;
    let ms = (t0 % S) / MS;
    let mut h = vec![0u8; 128];
    h[..4].copy_from_slice(b"GMBU");
    h[4] = minor;
    h[5] = 2;
    h[6..8].copy_from_slice(&1u16.to_le_bytes());
    for (i, v) in [y, mo, 0, d, sod / 3600, sod / 60 % 60, sod % 60, ms]
        .iter()
        .enumerate()
    {
        h[8 + 2 * i..10 + 2 * i].copy_from_slice(&(*v as u16).to_le_bytes());
    }
    let start_ns = secs * S + ms * MS;
    let mut out = h;
    let mut table = Vec::new();
    for fr in frames {
        table.push(out.len() as u32);
        let delta_us = (fr.ts_ns - start_ns) / 1_000;
        out.extend_from_slice(&delta_us.to_le_bytes());
        out.extend_from_slice(&fr.orig_len.to_le_bytes());
        out.extend_from_slice(&(fr.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&fr.data);
        let net: u16 = match fr.linktype {
            1 => 1,
            101 => 9,
            lt => 0xe000 + lt as u16,
        };
        if minor >= 1 {
            out.extend_from_slice(&net.to_le_bytes());
        }
        if minor >= 2 {
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        if minor >= 3 {
            let ft = fr.ts_ns / 100 + 116_444_736_000_000_000;
            out.extend_from_slice(&ft.to_le_bytes());
            out.push(0);
        }
    }
    if with_table {
        let off = out.len() as u32;
        for t in &table {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out[24..28].copy_from_slice(&off.to_le_bytes());
        out[28..32].copy_from_slice(&((table.len() * 4) as u32).to_le_bytes());
    }
    out
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
