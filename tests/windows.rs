//! The Windows build under Wine, against the Linux build: `vmflow.exe
//! replay` writes byte-identical NDJSON, and `vmflow.exe run` following a
//! folder (Windows paths, files written in pieces while it reads them, the
//! process killed hard mid-file and restarted) ships to a Linux collector
//! exactly the records the Linux replay gives.
//!
//! Needs `wine` (Debian wine64), MinGW (`x86_64-w64-mingw32-gcc`) and the
//! exe from `scripts/package-windows.sh`; `scripts/test.sh` provides all
//! three. The Wine prefix lives in `target/wine-test/prefix` (created once).
//! Wine 8 has no bcryptprimitives.dll, whose `ProcessPrng` Rust's std
//! imports: a stand-in forwarding to RtlGenRandom
//! (`tests/windows/bcryptprimitives.c`) is built next to a copy of the exe
//! in `target/wine-test/bin`. Test-only, never shipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::agents::*;
use common::capture_files::*;
use common::*;

struct Wine {
    prefix: PathBuf,
    exe: PathBuf,
}

fn target_dir() -> PathBuf {
    // target/release/vmflow → target
    Path::new(env!("CARGO_BIN_EXE_vmflow"))
        .parent()
        .and_then(Path::parent)
        .expect("the Linux binary sits in target/<profile>/")
        .to_path_buf()
}

/// Every file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn newer(a: &Path, than: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (m(a), m(than)) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

/// The Wine prefix and the exe beside its stand-in DLL, set up once.
fn wine() -> &'static Wine {
    static WINE: OnceLock<Wine> = OnceLock::new();
    WINE.get_or_init(|| {
        let target = target_dir();
        let built = target.join("x86_64-pc-windows-gnu/release/vmflow.exe");
        assert!(
            built.is_file(),
            "{} missing: run scripts/package-windows.sh (scripts/test.sh does)",
            built.display()
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let stale: Vec<PathBuf> = ["agent/src", "engine/src", "proto/src"]
            .iter()
            .flat_map(|d| sources(&root.join(d)))
            .filter(|f| newer(f, &built))
            .collect();
        assert!(
            stale.is_empty(),
            "{} is older than {stale:?}: rebuild it with scripts/package-windows.sh",
            built.display()
        );
        let base = target.join("wine-test");
        let bin = base.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("vmflow.exe");
        if newer(&built, &exe) {
            std::fs::copy(&built, &exe).unwrap();
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/windows/bcryptprimitives.c");
        let dll = bin.join("bcryptprimitives.dll");
        if newer(&src, &dll) {
            let out = Command::new("x86_64-w64-mingw32-gcc")
                .args(["-shared", "-O2", "-o"])
                .arg(&dll)
                .arg(&src)
                .arg("-ladvapi32")
                .output()
                .expect("x86_64-w64-mingw32-gcc runs (Debian gcc-mingw-w64-x86-64)");
            assert!(
                out.status.success(),
                "building the ProcessPrng stand-in: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let prefix = base.join("prefix");
        if !prefix.join("system.reg").is_file() {
            let started = Instant::now();
            let st = wine_env(&mut Command::new("wine"), &prefix)
                .args(["wineboot", "--init"])
                .output()
                .expect("wine runs (Debian wine64)");
            assert!(
                st.status.success() && prefix.join("system.reg").is_file(),
                "wineboot --init failed: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            eprintln!("wine prefix created in {:?}", started.elapsed());
        }
        Wine { prefix, exe }
    })
}

fn wine_env<'a>(cmd: &'a mut Command, prefix: &Path) -> &'a mut Command {
    cmd.env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        // No Mono or Gecko installer dialogs on the first boot.
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
}

/// `vmflow.exe` under Wine.
fn vmflow_exe() -> Command {
    let w = wine();
    let mut c = Command::new("wine");
    wine_env(&mut c, &w.prefix).arg(&w.exe);
    c
}

/// A Linux path as Wine's Z: drive sees it: `Z:\tmp\x`.
fn win(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replay_under_wine_is_byte_identical_to_linux() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Whole frames (no snap length): pcapng's simple packet blocks need them.
    let base = dir.join("base.pcap");
    ok(
        &run(vmflow()
            .args([
                "synth",
                "--packets",
                "40000",
                "--concurrent",
                "300",
                "--seed",
                "5",
            ])
            .arg("--out")
            .arg(&base)),
        "synth",
    );
    let fr = frames_of(&base);
    let mut caps = vec![("synth libpcap".to_string(), base.clone())];
    for (name, bytes) in [
        ("pcap-be-ns", pcap(&fr, true, true)),
        ("pcapng-le-res9", pcapng(&fr, false, &[9], 7)),
        ("pcapng-be-res6", pcapng(&fr, true, &[6], 0)),
        ("netmon-2.1", netmon(&fr, 1, true)),
        ("netmon-2.3-scan", netmon(&fr, 3, false)),
    ] {
        caps.push((name.into(), write(dir, &format!("{name}.cap"), &bytes)));
    }
    // Several threads, as on a VM with more than one core.
    let extra: &[&str] = &["--threads", "2"];
    for (name, path) in &caps {
        let linux = run(vmflow().arg("replay").args(extra).arg(path));
        ok(&linux, &format!("linux replay of {name}"));
        let windows = run(vmflow_exe().arg("replay").args(extra).arg(win(path)));
        ok(&windows, &format!("wine replay of {name}"));
        let lines = linux.stdout.iter().filter(|&&b| b == b'\n').count();
        assert!(lines > 100, "{name}: only {lines} records from Linux");
        assert!(
            windows.stdout == linux.stdout,
            "{name}: vmflow.exe wrote {} bytes ({} lines), Linux {} bytes ({lines} lines); first differing line:\n  wine  {}\n  linux {}",
            windows.stdout.len(),
            windows.stdout.iter().filter(|&&b| b == b'\n').count(),
            linux.stdout.len(),
            first_diff(&windows.stdout, &linux.stdout).0,
            first_diff(&windows.stdout, &linux.stdout).1,
        );
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> (String, String) {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    a.lines()
        .zip(b.lines())
        .find(|(x, y)| x != y)
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .unwrap_or_else(|| ("(one is a prefix of the other)".into(), String::new()))
}

/// Polls `cond` every 10 ms until it holds, failing with `what` after `limit`.
fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGINT: Wine turns it into the console's Ctrl-C, which stops the agent
/// as SIGTERM does on Linux.
fn ctrl_c(p: &Proc) {
    let st = Command::new("kill")
        .args(["-INT", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn run_under_wine_follows_a_folder_over_mtls_and_survives_a_hard_kill() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["win-1"]);
    let cap = synth_cap(dir, 120_000);
    let flow = "[flow]\nidle_timeout = 0.02\nhalf_open_timeout = 0.02\ntcp_linger = 0.001\n";
    let flow_cfg = write(dir, "flow.toml", flow.as_bytes());
    let out = run(vmflow()
        .arg("replay")
        .arg("--config")
        .arg(&flow_cfg)
        .arg(&cap));
    ok(&out, "linux replay");
    let want = multiset(&String::from_utf8(out.stdout).unwrap());
    let (header, recs) = split_records(&std::fs::read(&cap).unwrap());
    let third = recs.len() / 3;
    let file_of = |r: &[Vec<u8>]| {
        let mut v = header.clone();
        r.iter().for_each(|x| v.extend_from_slice(x));
        v
    };
    let files = [
        file_of(&recs[..third]),
        file_of(&recs[third..2 * third]),
        file_of(&recs[2 * third..]),
    ];
    let caps = dir.join("Captures");
    std::fs::create_dir_all(&caps).unwrap();
    let names: Vec<PathBuf> = (1..=3)
        .map(|i| caps.join(format!("packetcapture_00_00_0{i}_000.cap")))
        .collect();

    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    // Windows paths throughout, as on a VM (TOML literal strings).
    let spool = dir.join("spool");
    let cfg_text = format!(
        "{flow}[[source.folder]]\npath = '{}'\npoll_interval = 0.01\ncheckpoint_interval = 1.0\n\
         on_stop = \"finish\"\nshutdown_grace = 60\n\
         [export]\ncollector = \"{addr}\"\nca = '{}'\ncert = '{}'\nkey = '{}'\nspool_dir = '{}'\nbatch_records = 64\n",
        win(&caps),
        win(&certs.join("ca.pem")),
        win(&certs.join("win-1.pem")),
        win(&certs.join("win-1-key.pem")),
        win(&spool),
    );
    let cfg = write(dir, "agent.toml", cfg_text.as_bytes());
    let start = || Proc::spawn(vmflow_exe().arg("run").arg("--config").arg(win(&cfg)));

    let mut a = start();
    write_in_pieces(&names[0], &files[0], 1, 40_000, Duration::ZERO);
    let (f2, n2) = (files[1].clone(), names[1].clone());
    let writer =
        std::thread::spawn(move || write_in_pieces(&n2, &f2, 2, 2_048, Duration::from_millis(2)));
    a.wait_line(
        "packetcapture_00_00_02_000.cap: reading",
        Duration::from_secs(120),
    );
    // Two checkpoints taken inside file 2, and records shipped from it.
    let ckpt = spool.join("folder.checkpoint");
    let modified = || std::fs::metadata(&ckpt).and_then(|m| m.modified()).ok();
    for _ in 0..2 {
        let before = modified();
        until(
            "a checkpoint inside file 2",
            Duration::from_secs(60),
            || modified() != before,
        );
    }
    let seq = collector_seq(&out, "win-1");
    until(
        "records shipped from file 2",
        Duration::from_secs(60),
        || collector_seq(&out, "win-1") > seq,
    );
    // SIGKILL to the Wine process running vmflow.exe.
    a.kill_past_checkpoint(&spool, &ckpt);
    let killed_during_file_2 = !writer.is_finished();
    let mut b = start();
    writer.join().unwrap();
    assert!(
        killed_during_file_2,
        "the writer was still writing file 2 when the agent was killed"
    );
    write_in_pieces(&names[2], &files[2], 3, 40_000, Duration::ZERO);
    b.wait_line(
        "packetcapture_00_00_03_000.cap: reading",
        Duration::from_secs(120),
    );
    ctrl_c(&b);
    assert!(b.wait(Duration::from_secs(180)), "{}", b.text());
    let text = b.text();
    assert!(
        text.contains("packetcapture_00_00_02_000.cap: resuming after packet"),
        "{text}"
    );
    assert!(stat(&text, "resumed_after") > 0, "{text}");
    assert_eq!(stat(&text, "coverage.gaps"), 0, "{text}");
    assert_eq!(stat(&text, "coverage.duplicates"), 0, "{text}");
    let got = as_replayed(collected(&out, "win-1"));
    assert_eq!(
        got.values().sum::<u64>(),
        want.values().sum::<u64>(),
        "record count at the collector vs the Linux replay"
    );
    assert!(
        got == want,
        "collector records differ from the Linux replay"
    );
}

/// The tests that register the `vmflow` service in the one prefix, one at a time.
static SERVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Stops and removes the test's service however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run(vmflow_exe().args(["service", "uninstall"]));
    }
}

/// The Windows service through Wine's Service Control Manager: `vmflow.exe
/// service install` registers it, `service start` runs `service run` (as
/// the SCM would at boot), it ships a folder to a Linux collector, `service
/// stop` ends it as SIGTERM ends `run` (on_stop = finish: every flow ended),
/// and `service uninstall` removes it. What Wine does not do: failure
/// actions (restart on failure) are refused by Wine's SCM — install warns
/// and goes on; Windows' event log is not written.
#[test]
fn service_under_wine_installs_starts_ships_stops_and_uninstalls() {
    let _one = SERVICE.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["svc-1"]);
    let caps = dir.join("Captures");
    std::fs::create_dir_all(&caps).unwrap();
    let cap = synth_cap_seeded(&caps, "packetcapture_00_00_01_000.cap", 30_000, 21);
    let want = replayed(&cap);
    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cfg_text = format!(
        "[[source.folder]]\npath = '{}'\npoll_interval = 0.05\non_stop = \"finish\"\nshutdown_grace = 60\n\
         [export]\ncollector = \"{addr}\"\nca = '{}'\ncert = '{}'\nkey = '{}'\nspool_dir = '{}'\n",
        win(&caps),
        win(&certs.join("ca.pem")),
        win(&certs.join("svc-1.pem")),
        win(&certs.join("svc-1-key.pem")),
        win(&dir.join("spool")),
    );
    let cfg = write(dir, "vmflow.toml", cfg_text.as_bytes());
    // A service left over from an interrupted run would start at boot.
    let _ = run(vmflow_exe().args(["service", "uninstall"]));
    let o = run(vmflow_exe()
        .args(["service", "install", "--config"])
        .arg(win(&cfg)));
    ok(&o, "service install");
    let _installed = Installed;
    let query = || {
        let o = run(
            wine_env(&mut Command::new("wine"), &wine().prefix).args(["sc", "query", "vmflow"])
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // `service start` waits until the SCM says Running, `service stop`
    // until it says Stopped. (A Wine command that finds no Wine process
    // running boots the prefix again, and a boot starts auto-start
    // services: `sc query` between commands may find it running again.)
    ok(
        &run(vmflow_exe().args(["service", "start"])),
        "service start",
    );
    // The service reads the whole file and ships what has timed out.
    until("records from the service", Duration::from_secs(60), || {
        collector_seq(&out, "svc-1") > 0
    });
    let o = run(vmflow_exe().args(["service", "stop"]));
    ok(&o, "service stop");
    // Its log, under Wine's ProgramData (C:\users\Public in Wine 8).
    let drive_c = wine().prefix.join("drive_c");
    let log = [
        drive_c.join("ProgramData/vmflow/vmflow.log"),
        drive_c.join("users/Public/vmflow/vmflow.log"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("the service's log file under ProgramData");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("service: Stop requested"), "{text}");
    assert!(text.contains("service: stopped (exit code 0)"), "{text}");
    // The run's summary lines (stderr for `vmflow run`) are in the log too.
    assert!(text.contains("run: packets="), "{text}");
    assert!(text.contains("run: resumed_after="), "{text}");
    // The running service checks its own restart-on-failure (what an .msi
    // install cannot set); Wine's SCM refuses failure actions, so here it
    // says that it could not.
    assert!(
        text.contains("service: restart on failure set")
            || text.contains("service: restart-on-failure not set"),
        "{text}"
    );
    let got = as_replayed(collected(&out, "svc-1"));
    assert_eq!(
        got.values().sum::<u64>(),
        want.values().sum::<u64>(),
        "records at the collector vs the Linux replay\n{text}"
    );
    assert!(
        got == want,
        "collector records differ from the Linux replay"
    );
    ok(
        &run(vmflow_exe().args(["service", "uninstall"])),
        "service uninstall",
    );
    assert!(
        !query().contains("RUNNING") && !query().contains("STOPPED"),
        "after uninstall: {}",
        query()
    );
}

/// The .msi from `scripts/package-windows.sh`: the tables Windows Installer
/// acts on, checked with msiinfo, then installed and removed with Wine's
/// msiexec. (Wine's msiexec registers the service; that it starts it at
/// boot and that a major upgrade replaces an older version stay
/// unverified here.)
#[test]
fn msi_has_the_service_and_upgrade_tables_and_installs_under_wine() {
    let _one = SERVICE.lock().unwrap_or_else(|e| e.into_inner());
    let w = wine();
    let msi = target_dir().join("x86_64-pc-windows-gnu/release/vmflow.msi");
    assert!(
        msi.is_file()
            && !newer(
                &target_dir().join("x86_64-pc-windows-gnu/release/vmflow.exe"),
                &msi
            ),
        "{} missing or older than vmflow.exe: run scripts/package-windows.sh",
        msi.display()
    );
    let msiinfo = |args: &[&str]| {
        let o = run(Command::new("msiinfo").args(args).arg(&msi));
        ok(&o, &format!("msiinfo {args:?}"));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // `msiinfo export <msi> <table>`: the table name goes last.
    let table = |t: &str| {
        let o = run(Command::new("msiinfo").arg("export").arg(&msi).arg(t));
        ok(&o, &format!("msiinfo export {t}"));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let tables = msiinfo(&["tables"]);
    for t in [
        "File",
        "Component",
        "ServiceInstall",
        "ServiceControl",
        "Upgrade",
    ] {
        assert!(
            tables.lines().any(|l| l.trim() == t),
            "no {t} table in:\n{tables}"
        );
    }
    let files = table("File");
    assert!(files.contains("vmflow.exe"), "File:\n{files}");
    let svc = table("ServiceInstall");
    assert!(
        svc.contains("service run --config") && svc.contains("[CommonAppDataFolder]vmflow"),
        "ServiceInstall:\n{svc}"
    );
    // Auto start (2), own process (16).
    let row = svc.lines().last().unwrap_or_default();
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!(cols.get(3), Some(&"16"), "ServiceType in {row:?}");
    assert_eq!(cols.get(4), Some(&"2"), "StartType in {row:?}");
    let ctl = table("ServiceControl");
    assert!(ctl.contains("vmflow"), "ServiceControl:\n{ctl}");
    let upgrade = table("Upgrade");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        upgrade.contains("{6D3B1F0E-8F6A-4C1E-9A57-2B8C4E1D7A90}") && upgrade.contains(version),
        "Upgrade (stable UpgradeCode, this version {version}):\n{upgrade}"
    );
    // Install and remove with Wine's msiexec.
    let installed = w.prefix.join("drive_c/Program Files/vmflow/vmflow.exe");
    let msiexec = |op: &str| {
        let o = run(wine_env(&mut Command::new("wine"), &w.prefix)
            .args(["msiexec", op])
            .arg(win(&msi))
            .arg("/qn"));
        ok(&o, &format!("msiexec {op}"));
    };
    let _ = run(vmflow_exe().args(["service", "uninstall"]));
    msiexec("/i");
    assert!(installed.is_file(), "{} not installed", installed.display());
    let q = run(wine_env(&mut Command::new("wine"), &w.prefix).args(["sc", "query", "vmflow"]));
    assert!(
        String::from_utf8_lossy(&q.stdout).contains("SERVICE_NAME: vmflow"),
        "the msi registered no service: {}",
        String::from_utf8_lossy(&q.stdout)
    );
    msiexec("/x");
    assert!(
        !installed.exists(),
        "{} left after uninstall",
        installed.display()
    );
}

/// The Windows handler directory the guest agent unpacks the extension zip
/// into, with the handler's own files in `bin\` (the ProcessPrng stand-in
/// beside each copy of the exe: Wine only).
struct WinHandler {
    dir: PathBuf,
}

impl WinHandler {
    /// Unpacks the zip `scripts/package-windows.sh` built, as the guest
    /// agent does.
    fn unpack(root: &Path) -> WinHandler {
        let dir = root.join("Packages/Plugins/Vmflow.Agent/1.0.0");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let zip = target_dir().join(format!(
            "azure-extension/vmflow-extension-windows_{}.zip",
            env!("CARGO_PKG_VERSION")
        ));
        let built = target_dir().join("x86_64-pc-windows-gnu/release/vmflow.exe");
        assert!(
            zip.is_file() && !newer(&built, &zip),
            "{} missing or older than vmflow.exe: run scripts/package-windows.sh",
            zip.display()
        );
        let o = run(Command::new("unzip")
            .arg("-q")
            .arg(&zip)
            .arg("-d")
            .arg(&dir));
        ok(&o, "unzip");
        let bin = dir.join("bin");
        assert!(bin.join("vmflow-handler.cmd").is_file() && bin.join("vmflow.exe").is_file());
        let w = wine();
        std::fs::copy(
            w.exe.with_file_name("bcryptprimitives.dll"),
            bin.join("bcryptprimitives.dll"),
        )
        .unwrap();
        // As the guest agent writes it (the Windows shape: C:\ paths, the
        // heartbeat file in Status).
        let c = |sub: &str| format!(r"C:\Packages\Plugins\Vmflow.Agent\1.0.0\{sub}");
        let env = serde_json::json!([{
            "name": "Vmflow.Agent",
            "version": 1.0,
            "handlerEnvironment": {
                "logFolder": r"C:\WindowsAzure\Logs\Plugins\Vmflow.Agent\1.0.0",
                "configFolder": c("RuntimeSettings"),
                "statusFolder": c("Status"),
                "heartbeatFile": c(r"Status\HeartBeat.Json"),
            }
        }]);
        std::fs::write(dir.join("HandlerEnvironment.json"), env.to_string()).unwrap();
        std::fs::create_dir_all(dir.join("RuntimeSettings")).unwrap();
        std::fs::create_dir_all(dir.join("Status")).unwrap();
        WinHandler { dir }
    }

    /// The manifest's command for `op`, run through Wine's cmd.exe from the
    /// handler directory.
    fn command(&self, op: &str) -> Output {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("HandlerManifest.json")).unwrap())
                .unwrap();
        let line = m[0]["handlerManifest"][format!("{op}Command")]
            .as_str()
            .unwrap()
            .to_string();
        let mut c = Command::new("wine");
        wine_env(&mut c, &wine().prefix)
            .current_dir(&self.dir)
            .args(["cmd", "/c"])
            .args(line.split(' '));
        run(&mut c)
    }

    fn status(&self, seq: u64) -> serde_json::Value {
        let p = self.dir.join(format!("Status/{seq}.status"));
        let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v[0]["status"].clone()
    }
}

/// `sc query vmflow` under Wine.
fn sc_query() -> String {
    let o =
        run(wine_env(&mut Command::new("wine"), &wine().prefix).args(["sc", "query", "vmflow"]));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn settings_json(
    public: &serde_json::Value,
    cert: &common::test_cert::TestCert,
    protected: &serde_json::Value,
) -> Vec<u8> {
    serde_json::json!({ "runtimeSettings": [{ "handlerSettings": {
        "publicSettings": public,
        "protectedSettings": cert.encrypt_for_wine(protected),
        "protectedSettingsCertThumbprint": cert.thumbprint,
    }}]})
    .to_string()
    .into_bytes()
}

/// The Windows VM extension handler under Wine, driven as the guest agent
/// drives it: the zip from `scripts/package-windows.sh` unpacked to
/// `C:\Packages\Plugins\Vmflow.Agent\1.0.0`, the manifest's commands
/// (`bin\vmflow-handler.cmd …`) through cmd.exe from there, settings in
/// `RuntimeSettings\N.settings` with protected settings encrypted to a test
/// certificate (openssl). install copies the exe to Program Files; enable
/// writes the configuration to `ProgramData\vmflow\extension`, registers and
/// starts the service, which connects to a Linux collector; settings
/// encrypted to a certificate this machine lacks give an error status
/// naming it and leave the service running; disable stops it, and the
/// collector then holds exactly the Linux replay's records; a failing
/// service puts its error in its log file and the event log call does not
/// fail; uninstall removes the service, configuration and exe, and keeps
/// the spool.
///
/// Which key path this exercises: Wine's `LocalMachine\My` store is empty
/// (nothing here can put a machine certificate with its key there), so the
/// handler's store lookup fails and it decrypts with the PKCS#12 stand-in
/// `RuntimeSettings\<THUMBPRINT>.pfx` — with the same CryptoAPI calls —
/// and says so; the test checks that it says so. The message is 3DES with
/// a zero IV (`encrypt_for_wine`: Wine's crypt32 has no AES and ignores the
/// IV). Unverified here: the lookup in a real store, AES and real IVs, the
/// ACL on the configuration folder (Wine does not enforce ACLs), what the
/// Application log shows (Wine's ReportEventW only prints to its debug
/// channel).
#[test]
fn extension_handler_under_wine_enables_ships_disables_and_uninstalls() {
    let _one = SERVICE.lock().unwrap_or_else(|e| e.into_inner());
    let w = wine();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["ext-1"]);
    let caps = dir.join("Captures");
    std::fs::create_dir_all(&caps).unwrap();
    let cap = synth_cap_seeded(&caps, "packetcapture_00_00_01_000.cap", 30_000, 33);
    let want = replayed(&cap);
    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");

    let drive_c = w.prefix.join("drive_c");
    let program_data = [drive_c.join("ProgramData"), drive_c.join("users/Public")]
        .into_iter()
        .find(|p| p.is_dir())
        .expect("Wine's ProgramData");
    let data = program_data.join("vmflow");
    let program_files = drive_c.join("Program Files/vmflow");
    // What an interrupted run may have left.
    let _ = run(vmflow_exe().args(["service", "uninstall"]));
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&program_files);
    let _installed = Installed;

    let h = WinHandler::unpack(&drive_c);
    let tenant = common::test_cert::make_cert(dir, "tenant");
    tenant.pfx(
        &h.dir
            .join(format!("RuntimeSettings/{}.pfx", tenant.thumbprint)),
    );
    let pem = |f: &str| std::fs::read_to_string(certs.join(f)).unwrap();
    let public = serde_json::json!({
        "source": { "folder": [{
            "path": win(&caps), "poll_interval": 0.05, "on_stop": "finish", "shutdown_grace": 60,
        }]},
        "export": { "collector": addr, "batch_age": 0.2 },
    });
    let protected = serde_json::json!({
        "export_key": pem("ext-1-key.pem"),
        "export_cert": pem("ext-1.pem"),
        "export_ca": pem("ca.pem"),
    });
    std::fs::write(
        h.dir.join("RuntimeSettings/0.settings"),
        settings_json(&public, &tenant, &protected),
    )
    .unwrap();

    let o = h.command("install");
    ok(&o, "install");
    let exe = program_files.join("vmflow.exe");
    assert!(exe.is_file(), "install put no {}", exe.display());
    // Test-only: Wine 8 lacks ProcessPrng (see the module docs).
    std::fs::copy(
        w.exe.with_file_name("bcryptprimitives.dll"),
        program_files.join("bcryptprimitives.dll"),
    )
    .unwrap();

    // The service log: under ProgramData, which Wine 8 gives services as
    // C:\users\Public. Which one a fresh prefix uses shows only once the
    // service has written, so both are read; and how much of each came
    // before this enable.
    let logs = [
        data.join("vmflow.log"),
        drive_c.join("users/Public/vmflow/vmflow.log"),
    ];
    let read_logs = || {
        logs.iter()
            .map(|p| {
                std::fs::read(p).map_or(String::new(), |b| String::from_utf8_lossy(&b).into_owned())
            })
            .collect::<Vec<String>>()
    };
    let whole_log = || read_logs().concat();
    let log_lens: Vec<usize> = read_logs().iter().map(String::len).collect();
    let o = h.command("enable");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    ok(&o, "enable");
    let st = h.status(0);
    assert_eq!(st["status"], "success", "{st}\n{stderr}");
    assert_eq!(st["operation"], "Enable");
    // The store lookup failed (Wine's is empty) and the handler said it
    // used the stand-in file instead.
    assert!(
        stderr.contains(&format!(
            "certificate {} not in LocalMachine\\My",
            tenant.thumbprint
        )) && stderr.contains(&format!("{}.pfx instead", tenant.thumbprint)),
        "{stderr}"
    );
    let ext = data.join("extension");
    let cfg = std::fs::read_to_string(ext.join("vmflow.toml")).unwrap();
    assert_eq!(
        std::fs::read_to_string(ext.join("export.key")).unwrap(),
        pem("ext-1-key.pem")
    );
    let key_body = pem("ext-1-key.pem");
    let secret_line = key_body.lines().nth(1).unwrap();
    for text in [
        &cfg,
        &stderr,
        &String::from_utf8_lossy(&o.stdout).to_string(),
        &st.to_string(),
    ] {
        assert!(
            !text.contains(secret_line),
            "a key line outside export.key: {text}"
        );
    }
    assert!(cfg.contains(r"extension\export.key"), "{cfg}");
    assert!(sc_query().contains("RUNNING"), "{}", sc_query());
    // The service runs with the extension's configuration and reaches the
    // collector (its flows end, and ship, when disable stops it).
    let since_enable = || {
        read_logs()
            .iter()
            .zip(&log_lens)
            .map(|(t, &n)| t.get(n.min(t.len())..).unwrap_or_default().to_string())
            .collect::<String>()
    };
    until(
        "the service connected to the collector",
        Duration::from_secs(120),
        || {
            let t = since_enable();
            t.contains(r"starting with C:\ProgramData\vmflow\extension\vmflow.toml")
                && t.contains("connected to collector")
        },
    );

    // Settings encrypted to a certificate this machine does not have: an
    // error status that names it, and the service keeps running.
    let stranger = common::test_cert::make_cert(dir, "stranger");
    std::fs::write(
        h.dir.join("RuntimeSettings/1.settings"),
        settings_json(&public, &stranger, &protected),
    )
    .unwrap();
    let o = h.command("enable");
    assert!(
        !o.status.success(),
        "enable with an unknown certificate succeeded"
    );
    let st = h.status(1);
    let msg = st["formattedMessage"]["message"].as_str().unwrap();
    assert_eq!(st["status"], "error", "{st}");
    assert!(
        msg.contains(&stranger.thumbprint) && msg.contains("LocalMachine\\My"),
        "{msg}"
    );
    assert!(!msg.contains(secret_line), "{msg}");
    assert!(sc_query().contains("RUNNING"), "{}", sc_query());
    std::fs::remove_file(h.dir.join("RuntimeSettings/1.settings")).unwrap();

    let o = h.command("disable");
    ok(&o, "disable");
    assert_eq!(h.status(0)["operation"], "Disable");
    assert_eq!(h.status(0)["status"], "success");
    let q = sc_query();
    assert!(
        q.contains("STOPPED") || q.contains("DEMAND_START") || !q.contains("RUNNING"),
        "{q}"
    );
    // The stop ended every flow (on_stop = finish) and shipped it.
    let got = as_replayed(collected(&out, "ext-1"));
    assert_eq!(
        got.values().sum::<u64>(),
        want.values().sum::<u64>(),
        "records at the collector vs the Linux replay"
    );
    assert!(
        got == want,
        "collector records differ from the Linux replay"
    );

    // An error in the service (its configuration gone): the log file has
    // it, and the event log did not refuse it. (Wine's ReportEventW only
    // prints the text on Wine's debug channel: that the Application log
    // shows it stays unverified.)
    let cfg_path = ext.join("vmflow.toml");
    let away = ext.join("vmflow.toml.away");
    std::fs::rename(&cfg_path, &away).unwrap();
    ok(
        &run(wine_env(&mut Command::new("wine"), &w.prefix).args(["sc", "start", "vmflow"])),
        "sc start",
    );
    let error_line = || {
        whole_log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("vmflow.toml"))
    };
    until(
        "the service's error in its log",
        Duration::from_secs(60),
        error_line,
    );
    until(
        "the failed service stopped",
        Duration::from_secs(60),
        || !sc_query().contains("RUNNING"),
    );
    let text = whole_log();
    assert!(!text.contains("event log: cannot report"), "{text}");
    assert!(
        text.contains("run: packets="),
        "summary lines in the log: {text}"
    );
    std::fs::rename(&away, &cfg_path).unwrap();

    let o = h.command("uninstall");
    ok(&o, "uninstall");
    let q = sc_query();
    assert!(
        !q.contains("RUNNING") && !q.contains("STOPPED"),
        "after uninstall: {q}"
    );
    assert!(!ext.exists(), "{} left after uninstall", ext.display());
    assert!(!exe.exists(), "{} left after uninstall", exe.display());
    assert!(data.join("spool").is_dir(), "the spool went with uninstall");
    let _ = std::fs::remove_dir_all(&program_files);
}
