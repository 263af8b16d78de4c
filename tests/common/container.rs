//! A Debian bookworm container with systemd as PID 1, for tests that need a
//! real init: package installs, units, reloads, stops. Booted with
//! `systemd-nspawn` from the pristine root `scripts/container-root.sh`
//! caches under `target/container/`, each on its own overlay, so tests are
//! independent, can run in parallel and never change the cache. Commands run
//! inside through `nsenter` into every namespace of the container's systemd.
//!
//! A container that cannot boot is a test failure that says why, never a
//! silent pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Debian release of the cached root (and of the host the binary is
/// built on, so it runs inside unchanged).
pub const SUITE: &str = "bookworm";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Container {
    machine: String,
    /// The container's own cgroups (one per hierarchy systemd uses).
    cgroups: Vec<PathBuf>,
    /// Per-test directory: the overlay's upper, work and merged (root)
    /// directories and the console log.
    dir: PathBuf,
    merged: PathBuf,
    nspawn: Child,
    leader: u32,
}

/// The cargo target directory this test binary was built in.
pub fn target_dir() -> PathBuf {
    // CARGO_BIN_EXE_vmflow is <target>/<profile>/vmflow.
    Path::new(env!("CARGO_BIN_EXE_vmflow"))
        .parent()
        .and_then(Path::parent)
        .expect("the vmflow binary lives in <target>/<profile>/")
        .to_path_buf()
}

/// The pristine root, checked to be complete.
fn pristine_root() -> PathBuf {
    let t = target_dir();
    let root = t.join("container").join(SUITE);
    let stamp = t.join("container").join(format!("{SUITE}.stamp"));
    assert!(
        stamp.is_file() && root.join("lib/systemd/systemd").exists(),
        "no container root at {} (or its build did not finish): run \
         scripts/container-root.sh (scripts/test.sh does)",
        root.display()
    );
    root
}

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "booting a systemd container needs root (overlay mounts, systemd-nspawn): \
         run the README's test command"
    );
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn host(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn host_ok(argv: &[&str]) {
    let o = host(argv);
    assert!(o.status.success(), "{argv:?}: {}", text(&o));
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`;
/// panics naming `what` when the time is up.
pub fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_telling(timeout, f, || what.to_string())
}

/// [`poll`], with what to say on a timeout made only then (e.g. what a
/// process printed meanwhile).
pub fn poll_telling<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    what: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Container {
    /// Boots a fresh Debian bookworm container with systemd as PID 1 from the
    /// cached root (on a per-test overlay, so tests are independent and can
    /// run in parallel) and waits for `systemctl is-system-running --wait`.
    /// Panics with a clear message if it cannot boot.
    pub fn boot(name: &str) -> Container {
        require_root();
        let lower = pristine_root();
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        // Unique per process and per call: also the hostname, and nspawn
        // keys its runtime files by it.
        let machine = format!(
            "vmf-{clean}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = target_dir().join("container").join("run").join(&machine);
        let _ = std::fs::remove_dir_all(&dir);
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("root"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        host_ok(&[
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            &opts,
            merged.to_str().unwrap(),
        ]);
        let console = std::fs::File::create(dir.join("console.log")).unwrap();
        // A private network: the container has only its loopback until a
        // test gives it a NIC (`veth`), and its ports never meet the host's
        // or another test's.
        // Each container in a cgroup of its own: with --keep-unit the
        // container's systemd roots its units at nspawn's cgroup, and two
        // containers sharing one would share (and kill) each other's units.
        let cgroups = own_cgroups(&machine);
        let nspawn = Command::new("sh")
            .args([
                "-c",
                "for g in $VMFLOW_CGROUPS; do echo $$ > \"$g/cgroup.procs\" || exit 97; done; exec \"$@\"",
                "sh",
                "systemd-nspawn",
            ])
            .env(
                "VMFLOW_CGROUPS",
                cgroups
                    .iter()
                    .map(|p| p.to_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .args(["-q", "-D"])
            .arg(&merged)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=read-only",
                "-M",
                &machine,
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("systemd-nspawn does not start ({e}): install systemd-container")
            });
        let mut c = Container {
            machine,
            cgroups,
            dir,
            merged,
            nspawn,
            leader: 0,
        };
        let pid = c.nspawn.id();
        c.leader = poll(
            "the container's systemd to start",
            Duration::from_secs(60),
            || {
                if let Ok(Some(st)) = c.nspawn.try_wait() {
                    panic!(
                        "the container did not boot: systemd-nspawn exited with {st}\n{}",
                        c.console()
                    );
                }
                let children =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
                let leader: u32 = children.split_whitespace().next()?.parse().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{leader}/comm")).ok()?;
                (comm.trim() == "systemd").then_some(leader)
            },
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // Before the container's D-Bus and systemd's own socket are up
            // systemctl fails to connect: try again until it answers.
            let o = c.exec(&["timeout", "100", "systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            match state.as_str() {
                "running" => break,
                "degraded" => panic!(
                    "the container booted degraded:\n{}\n{}",
                    String::from_utf8_lossy(
                        &c.sh("systemctl --failed --no-pager; journalctl -b --no-pager -p warning")
                            .stdout
                    ),
                    c.console()
                ),
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the container never reached `running` (last: {}):\n{}",
                text(&o),
                c.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// Host path of the container's root filesystem.
    pub fn root(&self) -> &Path {
        &self.merged
    }

    /// PID (host view) of the container's systemd.
    pub fn leader_pid(&self) -> u32 {
        self.leader
    }

    /// The machine name (also the container's hostname).
    pub fn name(&self) -> &str {
        &self.machine
    }

    fn nsenter(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.leader.to_string(), "-m", "-u", "-i", "-n", "-p"])
            .args(["-r", "-w", "--"])
            .args(argv)
            // The container's own environment, not the test's.
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// Runs `argv` inside the container (as root, in all its namespaces).
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.nsenter(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {argv:?}: {e}"))
    }

    /// `sh -c script` inside the container.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// `sh -c script` inside the container; panics with its output unless it
    /// succeeds. Returns its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "in container {}: {script}\n{}",
            self.machine,
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Copies a host file into the container (parent directories created,
    /// mode kept). Written from inside, so the container's own symlinks
    /// (/lib, /bin, …) resolve as they do there.
    pub fn copy_in(&self, host: &Path, inside: &str) {
        use std::os::unix::fs::PermissionsExt;
        let bytes =
            std::fs::read(host).unwrap_or_else(|e| panic!("copy_in {}: {e}", host.display()));
        let mode = std::fs::metadata(host).unwrap().permissions().mode() & 0o7777;
        self.write(inside, &bytes, mode);
    }

    /// Writes `bytes` to the file `inside` the container with `mode`.
    pub fn write(&self, inside: &str, bytes: &[u8], mode: u32) {
        let script =
            format!("mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\" && chmod {mode:o} \"$1\"");
        let mut child = self
            .nsenter(&["sh", "-c", &script, "sh", inside])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "writing {inside}: {}", text(&o));
    }

    /// Reads a file inside the container (through the overlay's merged root).
    pub fn read(&self, inside: &str) -> Option<Vec<u8>> {
        std::fs::read(self.merged.join(inside.trim_start_matches('/'))).ok()
    }

    /// A property of a unit (`systemctl show -p PROP --value`).
    pub fn show(&self, unit: &str, prop: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_string()
    }

    /// Waits until the unit is active with a main process; returns its PID.
    pub fn wait_active(&self, unit: &str) -> u32 {
        poll(&format!("{unit} active"), Duration::from_secs(30), || {
            let state = self.show(unit, "ActiveState");
            let pid: u32 = self.show(unit, "MainPID").parse().unwrap();
            (state == "active" && pid != 0).then_some(pid)
        })
    }

    /// The journal of the unit's current run (not of the runs before it).
    pub fn journal_now(&self, unit: &str) -> String {
        let id = self.show(unit, "InvocationID");
        String::from_utf8_lossy(
            &self
                .exec(&[
                    "journalctl",
                    "--no-pager",
                    "-o",
                    "cat",
                    &format!("_SYSTEMD_INVOCATION_ID={id}"),
                ])
                .stdout,
        )
        .into_owned()
    }

    /// Waits up to 30 s for `needle` in the journal of the unit's current
    /// run; the failure shows the unit's whole journal and status.
    pub fn wait_log(&self, unit: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.journal_now(unit).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the journal of {unit} after 30 s:\n{}\n{}",
                self.journal(unit),
                String::from_utf8_lossy(
                    &self
                        .exec(&["systemctl", "status", "--no-pager", unit])
                        .stdout
                )
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A unit's journal.
    pub fn journal(&self, unit: &str) -> String {
        String::from_utf8_lossy(
            &self
                .exec(&["journalctl", "-u", unit, "--no-pager", "-o", "cat"])
                .stdout,
        )
        .into_owned()
    }

    /// The console (systemd's boot messages), for failure messages.
    pub fn console(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- console of {} (last lines)\n{}",
            self.machine,
            tail.join("\n")
        )
    }

    /// Gives the container a NIC, as a VM has: one end of a veth pair,
    /// renamed `ifname` inside with `inside_addr` (CIDR), the other end in a
    /// fresh network namespace on the host with `peer_addr` (CIDR). IPv6 is
    /// left off both ends so that only the test's own traffic crosses.
    pub fn veth(&self, ifname: &str, inside_addr: &str, peer_addr: &str) -> Veth {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}x{n}", std::process::id());
        let v = Veth {
            netns: format!("vmfp{id}"),
            peer_if: format!("vp{id}"),
            inside_if: ifname.to_string(),
        };
        let tmp = format!("vi{id}");
        let leader = self.leader.to_string();
        host_ok(&["ip", "netns", "add", &v.netns]);
        host_ok(&[
            "ip", "link", "add", &v.peer_if, "type", "veth", "peer", "name", &tmp,
        ]);
        host_ok(&["ip", "link", "set", &v.peer_if, "netns", &v.netns]);
        host_ok(&["ip", "link", "set", &tmp, "netns", &leader]);
        let ns = |args: &[&str]| {
            let mut a = vec!["ip", "-n", v.netns.as_str()];
            a.extend_from_slice(args);
            host_ok(&a);
        };
        ns(&["link", "set", &v.peer_if, "addrgenmode", "none"]);
        ns(&["addr", "add", peer_addr, "dev", &v.peer_if]);
        ns(&["link", "set", &v.peer_if, "up"]);
        ns(&["link", "set", "lo", "up"]);
        self.sh_ok(&format!(
            "ip link set {tmp} name {ifname} && ip link set {ifname} addrgenmode none \
             && ip addr add {inside_addr} dev {ifname} && ip link set {ifname} up"
        ));
        v
    }
}

/// The host side of `Container::veth`: a network namespace holding the
/// peer end. Dropping it deletes the namespace (and so the pair).
pub struct Veth {
    pub netns: String,
    pub peer_if: String,
    pub inside_if: String,
}

impl Veth {
    /// A command run in the peer's namespace.
    pub fn exec(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).args(argv);
        c
    }

    /// Runs `argv` in the peer's namespace; panics with its output on failure.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let o = self.exec(argv).output().unwrap();
        assert!(
            o.status.success(),
            "{argv:?} in {}: {}",
            self.netns,
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM makes systemd-nspawn shut the container down in order;
        // a container that does not go within 30 s is killed.
        let pid = self.nspawn.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let merged = self.merged.to_string_lossy().into_owned();
        if !host(&["umount", &merged]).status.success() {
            let _ = host(&["umount", "-l", &merged]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for g in &self.cgroups {
            rmdir_tree(g);
        }
    }
}

/// Makes a cgroup for the container under this process's own, in each
/// hierarchy systemd tracks processes with: `name=systemd` (cgroup v1 or
/// hybrid hosts) and the unified v2 one.
fn own_cgroups(machine: &str) -> Vec<PathBuf> {
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut dirs = Vec::new();
    for line in mine.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let mount = match ctrl {
            "name=systemd" => Path::new("/sys/fs/cgroup/systemd"),
            "" if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() => {
                Path::new("/sys/fs/cgroup/unified")
            }
            "" => Path::new("/sys/fs/cgroup"),
            _ => continue,
        };
        if !mount.join("cgroup.procs").exists() {
            continue;
        }
        let d = mount
            .join(path.trim_start_matches('/'))
            .join(format!("vmflow-{machine}"));
        rmdir_tree(&d);
        std::fs::create_dir(&d)
            .unwrap_or_else(|e| panic!("cannot make the container's cgroup {}: {e}", d.display()));
        dirs.push(d);
    }
    assert!(
        !dirs.is_empty(),
        "no cgroup hierarchy for systemd found: {mine}"
    );
    dirs
}

/// Removes a cgroup and the ones the container's systemd made under it
/// (deepest first: cgroups go with rmdir, and only once empty).
fn rmdir_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// Path of the .deb built by scripts/package-deb.sh for this checkout;
/// panics with a clear message if it is absent or older than the binary.
pub fn built_deb() -> PathBuf {
    built_deb_version(env!("CARGO_PKG_VERSION"))
}

/// The version the upgrade test installs over `built_deb()`: the same
/// binary packaged again as a newer version (scripts/test.sh builds it with
/// `VMFLOW_DEB_VERSION`).
pub fn upgrade_version() -> String {
    format!("{}+upgradetest", env!("CARGO_PKG_VERSION"))
}

/// Path of the .deb of `version` built by scripts/package-deb.sh (with
/// `VMFLOW_DEB_VERSION=version` unless it is Cargo.toml's).
pub fn built_deb_version(version: &str) -> PathBuf {
    // As scripts/package-deb.sh writes them: other versions in a directory
    // of their own (cargo-deb replaces the other versions in its output one).
    let dir = if version == env!("CARGO_PKG_VERSION") {
        "debian"
    } else {
        "debian-versions"
    };
    let deb = target_dir()
        .join(dir)
        .join(format!("vmflow_{version}_amd64.deb"));
    let how = if version == env!("CARGO_PKG_VERSION") {
        "scripts/package-deb.sh".to_string()
    } else {
        format!("VMFLOW_DEB_VERSION={version} scripts/package-deb.sh")
    };
    let built = std::fs::metadata(&deb)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run {how} (scripts/test.sh does)",
                deb.display()
            )
        });
    // Not the binary's time: test builds (other features) relink it without
    // changing it. What goes into the package is the sources and packaging/.
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let newest = ["agent/src", "engine/src", "proto/src", "packaging"]
        .iter()
        .map(|d| newest_mtime(&ws.join(d)))
        .chain(["Cargo.lock", "agent/Cargo.toml"].map(|f| newest_mtime(&ws.join(f))))
        .max()
        .unwrap();
    assert!(
        built >= newest,
        "{} is older than the sources: run {how} again (scripts/test.sh does)",
        deb.display()
    );
    deb
}

fn newest_mtime(p: &Path) -> std::time::SystemTime {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let own = m.modified().unwrap();
    if !m.is_dir() {
        return own;
    }
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| newest_mtime(&e.unwrap().path()))
        .fold(own, std::cmp::max)
}
