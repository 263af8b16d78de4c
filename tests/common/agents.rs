//! Running the real agent and collector binaries: processes whose stderr is
//! collected as it arrives, certificates, configurations, and the records a
//! collector wrote, as multisets.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A child process whose stderr lines are collected as they arrive.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Ends when the child's stderr closes (it exited, children included).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let sink = lines.clone();
        let err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let (m, c) = &*sink;
                m.lock().unwrap().push(l);
                c.notify_all();
            }
        });
        Proc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for a stderr line containing `needle` (the process's own report).
    pub fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let (m, c) = &*self.lines;
        let deadline = Instant::now() + limit;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no line with {needle:?} in:\n{}",
                g.join("\n")
            );
            g = c.wait_timeout(g, left).unwrap().0;
        }
    }

    pub fn text(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// SIGTERM: the process stops the way its configuration says.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL at a moment the restart must skip spooled records: a spool
    /// segment was written after the newest checkpoint (checkpoints come
    /// after the spool is flushed, so a newer segment holds records the
    /// checkpoint does not). Killing at a random moment leaves nothing past
    /// the checkpoint a few times in a hundred, and then the resume path
    /// under test is not taken. What decides the restart is the state on
    /// disk after the kill, so that is checked again.
    pub fn kill_past_checkpoint(&mut self, spool: &Path, checkpoint: &Path) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let newest_segment = || {
            std::fs::read_dir(spool)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
                .filter_map(|e| mtime(&e.path()))
                .max()
        };
        let past = || match (mtime(checkpoint), newest_segment()) {
            (Some(c), Some(s)) => s > c,
            _ => false,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !past() {
            assert!(
                Instant::now() < deadline,
                "no records spooled after a checkpoint in {}",
                spool.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        self.kill();
        assert!(
            past(),
            "a checkpoint landed between the look and the kill (microseconds)"
        );
    }

    /// Waits for exit (bounded) and returns success.
    pub fn wait(&mut self, limit: Duration) -> bool {
        self.wait_code(limit) == Some(0)
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Every line it wrote is read once its stderr is closed.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not finish:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn collector(certs: &Path, out: &Path, listen: &str) -> (Proc, String) {
    collector_with(certs, out, listen, "", &[])
}

/// A collector started by `sh` after `shell` (e.g. `umask 000; ulimit -n
/// 1024;`), with `extra` arguments.
pub fn collector_with(
    certs: &Path,
    out: &Path,
    listen: &str,
    shell: &str,
    extra: &[&str],
) -> (Proc, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{shell} exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_vmflow"))
        .args(["collect", "--listen", listen])
        .arg("--cert")
        .arg(certs.join("collector.pem"))
        .arg("--key")
        .arg(certs.join("collector-key.pem"))
        .arg("--client-ca")
        .arg(certs.join("ca.pem"))
        .arg("--out")
        .arg(out)
        .args(extra);
    let p = Proc::spawn(&mut cmd);
    let line = p.wait_line("listening on", Duration::from_secs(20));
    let addr = line.rsplit(' ').next().unwrap().to_string();
    (p, addr)
}

/// An agent started by `sh` after `shell`.
pub fn agent_with(cfg: &Path, shell: &str) -> Proc {
    Proc::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{shell} exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .arg("run")
            .arg("--config")
            .arg(cfg),
    )
}

/// A loopback port nothing listens on (yet), for a server a test starts
/// later. Taken below the kernel's ephemeral range (32768–60999 by
/// default): a port that binding to port 0 hands out is an ephemeral one,
/// which another test's outgoing connection may hold by the time the server
/// binds it (a NATS node once never came up that way). Never the same port
/// twice in one test process; processes start at different places.
pub fn free_port() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % PORTS,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..PORTS {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + PORTS)
}

pub fn certs_init(dir: &Path, agents: &[&str]) {
    let mut cmd = vmflow();
    cmd.args(["certs", "init"]).arg(dir);
    for a in agents {
        cmd.args(["--agent", a]);
    }
    assert!(run(&mut cmd).status.success());
}

pub fn agent_config(
    dir: &Path,
    name: &str,
    cap: &Path,
    certs: &Path,
    agent: &str,
    collector: &str,
    extra: &str,
) -> PathBuf {
    agent_config_with(
        dir,
        name,
        &format!("[source]\nfiles = [{cap:?}]\n"),
        certs,
        agent,
        collector,
        extra,
    )
}

/// An agent configuration with `source` (TOML) and `extra` lines under [export].
pub fn agent_config_with(
    dir: &Path,
    name: &str,
    source: &str,
    certs: &Path,
    agent: &str,
    collector: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        "{source}[export]\ncollector = {collector:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\nspool_dir = {:?}\n{extra}",
        certs.join("ca.pem"),
        certs.join(format!("{agent}.pem")),
        certs.join(format!("{agent}-key.pem")),
        dir.join(format!("spool-{name}")),
    );
    write(dir, &format!("{name}.toml"), text.as_bytes())
}

pub fn synth_cap(dir: &Path, packets: u64) -> PathBuf {
    synth_cap_seeded(dir, "cap.pcap", packets, 11)
}

pub fn synth_cap_seeded(dir: &Path, name: &str, packets: u64, seed: u64) -> PathBuf {
    let cap = dir.join(name);
    let out = run(vmflow()
        .args([
            "synth",
            "--packets",
            &packets.to_string(),
            "--concurrent",
            "3000",
            "--snaplen",
            "128",
            "--seed",
            &seed.to_string(),
        ])
        .arg("--out")
        .arg(&cap));
    assert!(out.status.success());
    cap
}

/// Records as canonical JSON lines, counted (a multiset).
pub fn multiset(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    m
}

pub fn replayed(cap: &Path) -> BTreeMap<String, u64> {
    let out = run(vmflow().arg("replay").arg(cap));
    assert!(out.status.success());
    multiset(&String::from_utf8(out.stdout).unwrap())
}

pub fn collected(out: &Path, agent: &str) -> BTreeMap<String, u64> {
    let mut text = String::new();
    let dir = out.join(agent);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            text.push_str(&std::fs::read_to_string(p).unwrap());
        } else if p.extension().is_some_and(|x| x == "blocks") {
            // A `--store blocks` hour file, as NDJSON.
            let o = run(vmflow().arg("cat").arg(&p));
            text.push_str(&String::from_utf8(o.stdout).unwrap());
        }
    }
    multiset(&text)
}

/// The highest batch the collector holds for `agent`'s default stream (over
/// all its epochs).
pub fn collector_seq(out: &Path, agent: &str) -> u64 {
    std::fs::read_to_string(out.join(agent).join("state"))
        .ok()
        .and_then(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("epoch "))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
                .max()
        })
        .unwrap_or(0)
}

pub fn wait_seq(out: &Path, agent: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while collector_seq(out, agent) < at_least {
        assert!(
            Instant::now() < deadline,
            "collector never reached batch {at_least}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn agent(cfg: &Path) -> Proc {
    Proc::spawn(vmflow().arg("run").arg("--config").arg(cfg))
}

pub fn stat(text: &str, key: &str) -> u64 {
    summary(text, key).unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// Records a stopped tail ended with `shutdown` are the ones replay ends
/// with `end_of_input`: a multiset with that one difference removed.
pub fn as_replayed(m: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, n) in m {
        let k = k.replace(
            "\"end_reason\":\"shutdown\"",
            "\"end_reason\":\"end_of_input\"",
        );
        *out.entry(k).or_insert(0) += n;
    }
    out
}
