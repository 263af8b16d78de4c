//! Network namespaces joined by a veth pair, and the background processes
//! the live tests run in them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};

pub struct Netns {
    pub client: String,
    pub server: String,
    /// The veth ends: `client_if` in `client`, `server_if` in `server`.
    pub client_if: String,
    pub server_if: String,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Netns {
    /// Two namespaces joined by a veth pair: vc<pid> 10.77.0.1 / fd77::1 on the
    /// client side, vs<pid> 10.77.0.2 / fd77::2 on the server side.
    pub fn new() -> Netns {
        // Unique per test process and per call (tests run in parallel).
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let n = Netns {
            client: format!("vmfc{id}"),
            server: format!("vmfs{id}"),
            client_if: format!("vc{id}"),
            server_if: format!("vs{id}"),
        };
        let (c, s, ci, si) = (&n.client, &n.server, &n.client_if, &n.server_if);
        for cmd in [
            format!("ip netns add {c}"),
            format!("ip netns add {s}"),
            format!("ip link add {ci} netns {c} type veth peer name {si} netns {s}"),
            format!("ip -n {c} addr add 10.77.0.1/24 dev {ci}"),
            format!("ip -n {s} addr add 10.77.0.2/24 dev {si}"),
            format!("ip -n {c} addr add fd77::1/64 dev {ci} nodad"),
            format!("ip -n {s} addr add fd77::2/64 dev {si} nodad"),
            format!("ip -n {c} link set {ci} up"),
            format!("ip -n {s} link set {si} up"),
            format!("ip -n {c} link set lo up"),
            format!("ip -n {s} link set lo up"),
        ] {
            sh(&cmd);
        }
        n
    }

    pub fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.server])
            .status();
    }
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills a background child when the test ends, whatever happens.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's stream until a line contains `needle` (the child's own
/// signal that it is ready); panics if the stream ends first.
pub fn wait_for_line(stream: impl std::io::Read, needle: &str) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(needle) => return,
            Some(Ok(_)) => {}
            _ => panic!("stream ended before {needle:?}"),
        }
    }
}

pub fn require_tools() {
    let is_root = sh("id -u").trim() == "0";
    assert!(
        is_root,
        "this test needs root for network namespaces (run the README's test command)"
    );
    for tool in [
        "ip", "tcpdump", "tshark", "curl", "ping", "python3", "iperf3", "setpriv",
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool} >/dev/null"))
            .status()
            .unwrap()
            .success();
        assert!(
            found,
            "{tool} is missing: run the README's test command, which installs it"
        );
    }
}

/// A child whose stderr lines arrive on a channel as it prints them.
pub struct Logged {
    pub child: Bg,
    rx: std::sync::mpsc::Receiver<String>,
    pub lines: Vec<String>,
}

impl Logged {
    pub fn spawn(cmd: &mut Command) -> Logged {
        let mut child = cmd
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Logged {
            child: Bg(child),
            rx,
            lines: Vec::new(),
        }
    }

    /// Waits (20 s at most) for a line containing `needle`; returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        loop {
            let l = self
                .rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.lines));
            self.lines.push(l.clone());
            if l.contains(needle) {
                return l;
            }
        }
    }

    /// Everything printed so far and until the stream goes quiet for a second.
    pub fn text(&mut self) -> String {
        while let Ok(l) = self.rx.recv_timeout(std::time::Duration::from_secs(1)) {
            self.lines.push(l);
        }
        self.lines.join("\n")
    }
}

/// `python3 -m http.server` on 10.77.0.2:8080 in the server namespace,
/// serving `dir`; returns once it says it is serving.
pub fn http_server(ns: &Netns, dir: &std::path::Path) -> Bg {
    http_server_on(ns, "10.77.0.2", dir)
}

/// `python3 -m http.server` on `addr`:8080 in the server namespace.
pub fn http_server_on(ns: &Netns, addr: &str, dir: &std::path::Path) -> Bg {
    let mut http = ns
        .exec(&ns.server)
        .args([
            "python3",
            "-u",
            "-m",
            "http.server",
            "8080",
            "--bind",
            addr,
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_line(http.stdout.take().unwrap(), "Serving HTTP");
    Bg(http)
}

/// Runs a command in a namespace and asserts it succeeded.
pub fn run_in(ns: &Netns, which: &str, args: &[&str]) {
    let out = ns.exec(which).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends a marker datagram from the client and waits (30 s at most) until
/// tcpdump has written it to `cap`: then every packet sent before it is in
/// the file too.
pub fn mark_and_wait(ns: &Netns, cap: &std::path::Path) {
    mark_and_wait_from(ns, &ns.client, "10.77.0.2", cap)
}

/// `mark_and_wait` with the marker sent from namespace `which` to `dst`.
pub fn mark_and_wait_from(ns: &Netns, which: &str, dst: &str, cap: &std::path::Path) {
    let marker = format!("import socket\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'vmflow-capture-marker',('{dst}',9))\n");
    run_in(ns, which, &["python3", "-c", &marker]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read(cap)
        .unwrap_or_default()
        .windows(21)
        .any(|w| w == b"vmflow-capture-marker")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "tcpdump never wrote the marker packet"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `curl` of a URL from the client namespace, `n` times (one connection each).
pub fn curl_n(ns: &Netns, url: &str, n: usize) {
    for _ in 0..n {
        run_in(ns, &ns.client, &["curl", "-sf", "-o", "/dev/null", url]);
    }
}
