//! nfdump's nfcapd as the reference IPFIX collector: started on a UDP port
//! (here or in a network namespace), stopped, and its flows read back with
//! `nfdump -o raw`.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nfcapd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// The network namespace it runs in (`None`: this one).
    netns: Option<String>,
    ip: [u8; 4],
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nfcapd {
    pub fn start(dir: &Path) -> Nfcapd {
        Nfcapd::start_on(dir, free_udp_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Nfcapd {
        Nfcapd::spawn(dir, None, [127, 0, 0, 1], port)
    }

    /// In network namespace `netns`, bound to `ip`.
    pub fn start_in(dir: &Path, netns: &str, ip: [u8; 4], port: u16) -> Nfcapd {
        Nfcapd::spawn(dir, Some(netns.to_string()), ip, port)
    }

    fn spawn(dir: &Path, netns: Option<String>, ip: [u8; 4], port: u16) -> Nfcapd {
        let flows = dir.join("flows");
        std::fs::create_dir_all(&flows).unwrap();
        let log = std::fs::File::create(dir.join("nfcapd.log")).unwrap();
        // `ip netns exec` execs the program: the child's pid is nfcapd's.
        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nfcapd"]);
                c
            }
            None => Command::new("nfcapd"),
        };
        let bind = std::net::Ipv4Addr::from(ip).to_string();
        let child = cmd
            .args(["-b", &bind, "-p", &port.to_string(), "-w"])
            .arg(&flows)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nfcapd (Debian package nfdump) runs");
        let n = Nfcapd {
            child,
            port,
            dir: dir.to_path_buf(),
            netns,
            ip,
        };
        n.wait_until(|| n.bound(), "nfcapd listening");
        n
    }

    pub fn wait_until(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// nfcapd's line of /proc/net/udp (of its namespace), split.
    fn socket(&self) -> Option<Vec<String>> {
        let table = match &self.netns {
            None => std::fs::read_to_string("/proc/net/udp").unwrap(),
            Some(ns) => {
                let o = Command::new("ip")
                    .args(["netns", "exec", ns, "cat", "/proc/net/udp"])
                    .output()
                    .unwrap();
                String::from_utf8(o.stdout).unwrap()
            }
        };
        // /proc/net/udp writes the address as the host-order u32 in hex.
        let want = format!("{:08X}:{:04X}", u32::from_le_bytes(self.ip), self.port);
        table.lines().skip(1).find_map(|l| {
            let f: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            (f.get(1) == Some(&want)).then_some(f)
        })
    }

    /// The socket's receive queue in bytes (`None`: not bound).
    pub fn rx_queue(&self) -> Option<u64> {
        let f = self.socket()?;
        let q = f[4].split(':').nth(1).unwrap();
        Some(u64::from_str_radix(q, 16).unwrap())
    }

    /// Datagrams the kernel dropped for a full receive buffer.
    pub fn drops(&self) -> Option<u64> {
        self.socket()?.last()?.parse().ok()
    }

    fn bound(&self) -> bool {
        self.rx_queue().is_some()
    }

    /// Sends each message and waits until nfcapd has read it, so no
    /// datagram is lost to a full socket buffer.
    pub fn send_all(&self, messages: &[&[u8]]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for m in messages {
            s.send_to(m, ("127.0.0.1", self.port)).unwrap();
            self.wait_until(|| self.rx_queue() == Some(0), "nfcapd to read");
        }
    }

    /// Stops nfcapd (it writes its file on SIGTERM) and returns the flows
    /// nfdump reads from it.
    pub fn stop_and_read(mut self) -> Vec<HashMap<String, String>> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "nfcapd exit {st:?}");
        let files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("flows"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("nfcapd.2")
            })
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let out = Command::new("nfdump")
            .arg("-r")
            .arg(&files[0])
            .args(["-o", "raw", "-q"])
            .env("TZ", "UTC")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success());
        parse_raw(&String::from_utf8(out.stdout).unwrap())
    }
}

/// `nfdump -o raw`: one "Flow Record:" block per flow, `key = value` lines.
pub fn parse_raw(text: &str) -> Vec<HashMap<String, String>> {
    let mut flows = Vec::new();
    let mut cur: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        if line.starts_with("Flow Record") {
            flows.extend(cur.take());
            cur = Some(HashMap::new());
        } else if let (Some(c), Some((k, v))) = (cur.as_mut(), line.split_once(" = ")) {
            let v = v.trim();
            let v = v.split(" [").next().unwrap().split(' ').next().unwrap();
            c.insert(k.trim().to_string(), v.to_string());
        }
    }
    flows.extend(cur);
    flows
}
