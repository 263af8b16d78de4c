//! The Azure VM extension handler driven the way the guest agent
//! (WALinuxAgent, `azurelinuxagent/ga/exthandlers.py`) drives it: the
//! handler directory `<lib>/<Publisher>.<Type>-<Version>/` with
//! HandlerManifest.json, HandlerEnvironment.json (written by the "agent"),
//! `config/<N>.settings` with protected settings encrypted to a test
//! certificate by `openssl cms -encrypt` and its `<thumbprint>.crt/.prv` in
//! the lib directory; each command is the manifest's, run through the shell
//! with cwd = the handler directory, WALinuxAgent's environment variables
//! merged over the process environment, and its timeout per command (enable
//! 300 s, install/disable/update 900 s, uninstall 300 s; the process group
//! killed on expiry); the update sequence disable(old) → copy mrseq and
//! status → update(new) → uninstall(old) → install(new) → enable(new).
//!
//! The plain tier runs it on this machine with systemctl and dpkg replaced
//! by scripts that log what they are asked (`VMFLOW_EXTENSION_*`): no root,
//! no systemd. The `system-tests` tier runs the same harness inside a Debian
//! container with systemd as PID 1: the real .deb, the real unit.

#[cfg(feature = "system-tests")]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PUBLISHER_TYPE: &str = "Vmflow.Agent";
const MANIFEST: &str = "packaging/azure-extension/linux/HandlerManifest.json";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What a command did.
#[derive(Debug)]
struct Outcome {
    /// `None`: killed at the timeout.
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn exit_code_env(&self) -> String {
        self.code.map_or("-1".into(), |c| c.to_string())
    }
}

/// Where the guest agent's files live and its commands run: this machine,
/// or a container.
trait Machine {
    fn write(&self, path: &str, bytes: &[u8], mode: u32);
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// Puts a host file at `path` (mode kept).
    fn install(&self, host: &Path, path: &str);
    fn remove_tree(&self, path: &str);
    /// `sh -c command` in `cwd` with `env` added, killed after `timeout`.
    fn run(&self, cwd: &str, command: &str, env: &[(String, String)], timeout: Duration)
        -> Outcome;
}

/// This machine; the process group of a command is killed at its timeout.
struct Host;

impl Machine for Host {
    fn write(&self, path: &str, bytes: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }
    fn install(&self, host: &Path, path: &str) {
        std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
        if std::fs::hard_link(host, path).is_err() {
            std::fs::copy(host, path).unwrap();
        }
    }
    fn remove_tree(&self, path: &str) {
        let _ = std::fs::remove_dir_all(path);
    }
    fn run(
        &self,
        cwd: &str,
        command: &str,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Outcome {
        use std::os::unix::process::CommandExt;
        let started = Instant::now();
        // Output to files, as the guest agent does (no pipe to fill up).
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let deadline = started + timeout;
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() >= deadline {
                // SAFETY: kill has no memory preconditions; the negative pid
                // names the process group the child leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut s = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut s).unwrap();
            s
        };
        Outcome {
            code,
            stdout: text(out),
            stderr: text(err),
            took: started.elapsed(),
        }
    }
}

/// Which handler command, with the guest agent's timeout for it.
#[derive(Clone, Copy, Debug)]
enum Cmd {
    Install,
    Enable,
    Disable,
    Uninstall,
    Update,
}

impl Cmd {
    fn key(self) -> &'static str {
        match self {
            Cmd::Install => "installCommand",
            Cmd::Enable => "enableCommand",
            Cmd::Disable => "disableCommand",
            Cmd::Uninstall => "uninstallCommand",
            Cmd::Update => "updateCommand",
        }
    }
    /// WALinuxAgent: `_enable_extension` 300, `install` 900,
    /// `_disable_extension` 900, `update` 900, `uninstall` the default 300.
    fn timeout(self) -> Duration {
        Duration::from_secs(match self {
            Cmd::Enable | Cmd::Uninstall => 300,
            Cmd::Install | Cmd::Disable | Cmd::Update => 900,
        })
    }
}

/// One unpacked handler version.
#[derive(Clone)]
struct Ext {
    dir: String,
    version: String,
}

/// The guest agent's part.
struct GuestAgent<'m> {
    m: &'m dyn Machine,
    /// `Lib.Dir` (`/var/lib/waagent`): handler directories and certificates.
    lib: String,
    log_root: String,
    /// Added to every command's environment (the process environment the
    /// guest agent merges in).
    env: Vec<(String, String)>,
    /// Every command's output, as the guest agent logs it.
    transcript: std::cell::RefCell<String>,
}

impl GuestAgent<'_> {
    /// Unpacks the handler zip's content for `version`: manifest, handler
    /// binary, .deb; then writes HandlerEnvironment.json as
    /// `create_handler_env` does.
    fn unpack(&self, version: &str, binary: &Path, deb: &Path) -> Ext {
        let dir = format!("{}/{PUBLISHER_TYPE}-{version}", self.lib);
        self.m.install(
            &workspace().join(MANIFEST),
            &format!("{dir}/HandlerManifest.json"),
        );
        self.m.install(binary, &format!("{dir}/bin/vmflow"));
        self.m.install(
            deb,
            &format!("{dir}/{}", deb.file_name().unwrap().to_str().unwrap()),
        );
        let env = json!([{
            "name": PUBLISHER_TYPE,
            "version": 1.0,
            "handlerEnvironment": {
                "logFolder": format!("{}/{PUBLISHER_TYPE}", self.log_root),
                "configFolder": format!("{dir}/config"),
                "statusFolder": format!("{dir}/status"),
                "heartbeatFile": format!("{dir}/heartbeat.log"),
                "eventsFolder": format!("{}/{PUBLISHER_TYPE}/events", self.log_root),
                "eventsFolder_preview": format!("{}/{PUBLISHER_TYPE}/events", self.log_root),
            }
        }]);
        self.m.write(
            &format!("{dir}/HandlerEnvironment.json"),
            env.to_string().as_bytes(),
            0o644,
        );
        self.m.write(&format!("{dir}/status/.keep"), b"", 0o644);
        Ext {
            dir,
            version: version.into(),
        }
    }

    fn put_settings(&self, ext: &Ext, seq: u64, bytes: &[u8]) {
        self.m
            .write(&format!("{}/config/{seq}.settings", ext.dir), bytes, 0o600);
    }

    /// Runs the manifest's command for `cmd` as `launch_command` does.
    fn command(&self, ext: &Ext, cmd: Cmd, seq: u64, extra: &[(&str, String)]) -> Outcome {
        let manifest: Value = serde_json::from_slice(
            &self
                .m
                .read(&format!("{}/HandlerManifest.json", ext.dir))
                .unwrap(),
        )
        .unwrap();
        let line = manifest[0]["handlerManifest"][cmd.key()].as_str().unwrap();
        // "Some extensions erroneously begin cmd with a slash" (#1170).
        let full = format!("{}/{}", ext.dir, line.trim_start_matches('/'));
        let mut env: Vec<(String, String)> = vec![
            ("AZURE_GUEST_AGENT_EXTENSION_PATH".into(), ext.dir.clone()),
            (
                "AZURE_GUEST_AGENT_EXTENSION_VERSION".into(),
                ext.version.clone(),
            ),
            (
                "AZURE_GUEST_AGENT_WIRE_PROTOCOL_ADDRESS".into(),
                "168.63.129.16".into(),
            ),
            ("ConfigSequenceNumber".into(), seq.to_string()),
            (
                "AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES".into(),
                r#"[{"Key": "ExtensionTelemetryPipeline", "Value": "1.0"}]"#.into(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env.extend(self.env.iter().cloned());
        let o = self.m.run(&ext.dir, &full, &env, cmd.timeout());
        let mut t = self.transcript.borrow_mut();
        t.push_str(&format!(
            "{cmd:?} {}: {:?}\n{}{}",
            ext.version, o.code, o.stdout, o.stderr
        ));
        o
    }

    fn install(&self, ext: &Ext, seq: u64, uninstall_code: &str) -> Outcome {
        self.command(
            ext,
            Cmd::Install,
            seq,
            &[(
                "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE",
                uninstall_code.into(),
            )],
        )
    }

    fn enable(&self, ext: &Ext, seq: u64) -> Outcome {
        self.command(
            ext,
            Cmd::Enable,
            seq,
            &[(
                "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE",
                "NOT_RUN".into(),
            )],
        )
    }

    /// `_update_extension_handler_and_return_if_failed` then
    /// `update_with_install` and the enable that follows.
    fn update(&self, old: &Ext, new: &Ext, seq: u64) -> Vec<(&'static str, Outcome)> {
        let mut steps = Vec::new();
        let disable = self.command(old, Cmd::Disable, seq, &[]);
        let disable_code = disable.exit_code_env();
        steps.push(("disable(old)", disable));
        // copy_status_files: mrseq and the status files, old → new.
        if let Some(b) = self.m.read(&format!("{}/mrseq", old.dir)) {
            self.m.write(&format!("{}/mrseq", new.dir), &b, 0o600);
        }
        if let Some(b) = self.m.read(&format!("{}/status/{seq}.status", old.dir)) {
            self.m
                .write(&format!("{}/status/{seq}.status", new.dir), &b, 0o600);
        }
        steps.push((
            "update(new)",
            self.command(
                new,
                Cmd::Update,
                seq,
                &[
                    ("VERSION", new.version.clone()),
                    (
                        "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION",
                        old.version.clone(),
                    ),
                    ("AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE", disable_code),
                ],
            ),
        ));
        let uninstall = self.command(old, Cmd::Uninstall, seq, &[]);
        let uninstall_code = uninstall.exit_code_env();
        steps.push(("uninstall(old)", uninstall));
        // remove_ext_handler
        self.m.remove_tree(&old.dir);
        steps.push(("install(new)", self.install(new, seq, &uninstall_code)));
        steps.push((
            "enable(new)",
            self.command(
                new,
                Cmd::Enable,
                seq,
                &[("AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE", uninstall_code)],
            ),
        ));
        steps
    }

    /// `[0].status` of `<N>.status`, checked against what `parse_ext_status`
    /// validates.
    fn status(&self, ext: &Ext, seq: u64) -> Option<Value> {
        let b = self.m.read(&format!("{}/status/{seq}.status", ext.dir))?;
        let v: Value = serde_json::from_slice(&b).expect("status file is JSON");
        let s = v[0]["status"].clone();
        assert!(
            ["transitioning", "success", "warning", "error"]
                .contains(&s["status"].as_str().unwrap()),
            "{s}"
        );
        assert_eq!(s["formattedMessage"]["lang"], "en-US");
        assert!(s["formattedMessage"]["message"].is_string());
        assert!(v[0]["timestampUTC"].as_str().unwrap().ends_with('Z'));
        Some(s)
    }

    fn heartbeat(&self, ext: &Ext) -> Option<Value> {
        let b = self.m.read(&format!("{}/heartbeat.log", ext.dir))?;
        let v: Value = serde_json::from_slice(&b).expect("heartbeat is JSON");
        Some(v[0]["heartbeat"].clone())
    }
}

// In `common` when that is compiled (system-tests); on its own otherwise.
#[cfg(feature = "system-tests")]
use common::test_cert;
// `pfx` and the Wine variant are the Windows handler test's.
#[cfg(not(feature = "system-tests"))]
#[allow(dead_code)]
#[path = "common/test_cert.rs"]
mod test_cert;
use test_cert::{make_cert, TestCert};

impl TestCert {
    fn put_into(&self, m: &dyn Machine, lib: &str) {
        let prv = self.crt.with_extension("prv");
        m.install(&self.crt, &format!("{lib}/{}.crt", self.thumbprint));
        m.install(&prv, &format!("{lib}/{}.prv", self.thumbprint));
    }
}

/// A settings file as `update_settings` writes it.
fn settings(public: &Value, protected: Option<(&TestCert, &Value)>) -> Vec<u8> {
    let mut hs = json!({ "publicSettings": public });
    if let Some((cert, p)) = protected {
        hs["protectedSettings"] = json!(cert.encrypt(p));
        hs["protectedSettingsCertThumbprint"] = json!(cert.thumbprint);
    }
    json!({ "runtimeSettings": [{ "handlerSettings": hs }] })
        .to_string()
        .into_bytes()
}

fn mode_and_gid(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o777, m.gid())
}

fn assert_ok(what: &str, o: &Outcome) {
    assert!(o.ok(), "{what}: {o:?}");
}

const AGENT_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nSECRET-AGENT-KEY-BYTES\n-----END PRIVATE KEY-----\n";

/// Every command of the lifecycle on this machine, systemctl and dpkg
/// replaced by logging scripts: what lands where (and with which modes),
/// what the service manager is asked, the status and heartbeat files, bad
/// settings turned into an `error` status, and the update sequence.
#[test]
fn the_guest_agent_lifecycle_with_a_logging_service_manager() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let lib = base.join("waagent");
    let root = base.join("root");
    let state = base.join("state");
    for d in [&lib, &root, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    let log = base.join("calls.log");
    let systemctl = base.join("systemctl");
    std::fs::write(
        &systemctl,
        r#"#!/bin/sh
echo "systemctl $*" >> "$VMFLOW_TEST_LOG"
case "$1" in
  is-active) test -f "$VMFLOW_TEST_STATE/active"; exit $? ;;
  restart|start)
    [ "$2" = vmflow.service ] || exit 0
    # The unit reads what the drop-in's ExecStart names.
    conf=$(sed -n 's/^ExecStart=.* --config //p' "$VMFLOW_EXTENSION_ROOT/etc/systemd/system/vmflow.service.d/extension.conf")
    cp "$conf" "$VMFLOW_TEST_STATE/running.toml" && touch "$VMFLOW_TEST_STATE/active" ;;
  disable) [ "$3" = vmflow.service ] && rm -f "$VMFLOW_TEST_STATE/active" ;;
esac
exit 0
"#,
    )
    .unwrap();
    let dpkg = base.join("dpkg");
    // Locked once when asked to (another package manager at work).
    std::fs::write(
        &dpkg,
        r#"#!/bin/sh
echo "dpkg $*" >> "$VMFLOW_TEST_LOG"
if [ -f "$VMFLOW_TEST_STATE/dpkg-locked" ]; then
  rm "$VMFLOW_TEST_STATE/dpkg-locked"
  echo "dpkg: error: dpkg frontend lock was locked by another process with pid 4242" >&2
  exit 2
fi
"#,
    )
    .unwrap();
    for f in [&systemctl, &dpkg] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = base.join("vmflow_0.1.0_amd64.deb");
    std::fs::write(&deb, b"not really a deb: the fake dpkg only logs").unwrap();
    let deb2 = base.join("vmflow_0.1.1_amd64.deb");
    std::fs::write(&deb2, b"the newer one").unwrap();
    // The service group: the test's own (any user may hand a file to it).
    let group = String::from_utf8(Command::new("id").arg("-gn").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    // SAFETY: getegid has no preconditions and cannot fail.
    let gid = unsafe { libc::getegid() };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let ga = GuestAgent {
        m: &Host,
        lib: s(&lib),
        log_root: s(&base.join("log")),
        env: vec![
            ("VMFLOW_EXTENSION_ROOT".into(), s(&root)),
            ("VMFLOW_EXTENSION_SYSTEMCTL".into(), s(&systemctl)),
            ("VMFLOW_EXTENSION_DPKG".into(), s(&dpkg)),
            ("VMFLOW_EXTENSION_GROUP".into(), group),
            ("VMFLOW_TEST_LOG".into(), s(&log)),
            ("VMFLOW_TEST_STATE".into(), s(&state)),
        ],
        transcript: Default::default(),
    };
    let calls = || {
        let c = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        c
    };
    let certs = tempfile::tempdir().unwrap();
    let cert = make_cert(certs.path(), "waagent-tenant");
    let other = make_cert(certs.path(), "someone-else");
    cert.put_into(&Host, &ga.lib);
    let binary = Path::new(env!("CARGO_BIN_EXE_vmflow"));
    let old = ga.unpack("1.0.0", binary, &deb);

    // Another package manager holds dpkg's lock: install waits its turn.
    std::fs::write(state.join("dpkg-locked"), b"").unwrap();
    let r = ga.install(&old, 0, "NOT_RUN");
    assert_ok("install", &r);
    let dpkg_i = format!(
        "dpkg --force-confold --force-confdef -i {}/vmflow_0.1.0_amd64.deb\n",
        old.dir
    );
    assert_eq!(
        calls(),
        format!("{dpkg_i}{dpkg_i}systemctl disable --now vmflow.service\n")
    );
    assert!(r.stderr.contains("dpkg is locked, retrying"), "{r:?}");

    let public = json!({
        "flow": { "idle_timeout": 20 },
        "capture": { "live": { "interfaces": ["eth0"] } },
        "export": { "collector": "collector.example:4739", "server_name": "collector.example" },
    });
    let protected =
        json!({ "export_key": AGENT_KEY, "export_cert": "CERT PEM", "export_ca": "CA PEM" });
    ga.put_settings(&old, 0, &settings(&public, Some((&cert, &protected))));
    let r = ga.enable(&old, 0);
    assert_ok("enable", &r);
    assert!(r.took < Duration::from_secs(10), "enable took {:?}", r.took);
    assert!(
        r.stdout.starts_with(
            "vmflow extension: vmflow.service restarted with the configuration from 0.settings"
        ),
        "{r:?}"
    );
    let st = ga.status(&old, 0).unwrap();
    assert_eq!(st["status"], "success", "{st}");
    assert_eq!(st["operation"], "Enable");
    assert_eq!(st["name"], PUBLISHER_TYPE);
    assert_eq!(
        calls(),
        "systemctl daemon-reload\nsystemctl enable vmflow.service\nsystemctl restart vmflow.service\n\
         systemctl enable --now vmflow-extension-heartbeat.timer\n"
    );
    let conf_dir = root.join("etc/vmflow/extension");
    let running = std::fs::read_to_string(state.join("running.toml")).unwrap();
    let cfg = vmflow::config::Config::parse(&running).unwrap();
    let x = cfg.export.as_ref().unwrap();
    assert_eq!(x.key, conf_dir.join("export.key"));
    assert_eq!(x.collector, "collector.example:4739");
    assert_eq!(x.spool_dir, root.join("var/lib/vmflow/spool"));
    assert_eq!(cfg.flow.idle_timeout, vmflow::config::Seconds(20.0));
    assert_eq!(
        std::fs::read_to_string(conf_dir.join("export.key")).unwrap(),
        AGENT_KEY
    );
    assert_eq!(mode_and_gid(&conf_dir), (0o750, gid));
    for f in ["export.key", "export.crt", "ca.crt", "vmflow.toml"] {
        assert_eq!(mode_and_gid(&conf_dir.join(f)), (0o640, gid), "{f}");
    }
    let dropin =
        std::fs::read_to_string(root.join("etc/systemd/system/vmflow.service.d/extension.conf"))
            .unwrap();
    assert!(
        dropin.contains(&format!(
            "ExecStart=\nExecStart=/usr/bin/vmflow run --config {}\n",
            conf_dir.join("vmflow.toml").display()
        )),
        "{dropin}"
    );
    let hb_unit =
        std::fs::read_to_string(root.join("etc/systemd/system/vmflow-extension-heartbeat.service"))
            .unwrap();
    assert!(
        hb_unit.contains(&format!("AZURE_GUEST_AGENT_EXTENSION_PATH={}\n", old.dir)),
        "{hb_unit}"
    );
    assert_eq!(ga.heartbeat(&old).unwrap()["status"], "ready");
    assert_eq!(
        std::fs::read_to_string(format!("{}/mrseq", old.dir)).unwrap(),
        "0"
    );

    // The guest agent enables again (a new goal state, a reboot): nothing
    // is rewritten, the unit is not restarted.
    let before = std::fs::metadata(conf_dir.join("vmflow.toml"))
        .unwrap()
        .modified()
        .unwrap();
    assert_ok("enable again", &ga.enable(&old, 0));
    assert_eq!(
        calls(),
        "systemctl enable vmflow.service\nsystemctl start vmflow.service\n\
         systemctl enable --now vmflow-extension-heartbeat.timer\n"
    );
    assert_eq!(
        std::fs::metadata(conf_dir.join("vmflow.toml"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );

    // The timer's command: the heartbeat follows the unit.
    let hb = Host.run(
        "/",
        &format!("{}/bin/vmflow extension heartbeat", old.dir),
        &[
            ga.env.clone(),
            vec![("AZURE_GUEST_AGENT_EXTENSION_PATH".into(), old.dir.clone())],
        ]
        .concat(),
        Duration::from_secs(30),
    );
    assert_ok("heartbeat", &hb);
    assert_eq!(ga.heartbeat(&old).unwrap()["status"], "ready");
    calls();

    // Bad settings: exit non-zero, `error` naming the problem, no secret,
    // the running configuration untouched, no service action.
    let mut unknown = public.clone();
    unknown["flow"]["idle_timeot"] = json!(3);
    // Seq 2 is encrypted to a certificate the guest agent does not have.
    let other_thumb = other.thumbprint.clone();
    // (sequence number, the settings file or none, what the message names)
    type Case<'a> = (u64, Option<Vec<u8>>, Vec<&'a str>);
    let bad: Vec<Case> = vec![
        (
            1,
            Some(settings(&unknown, Some((&cert, &protected)))),
            vec!["idle_timeot", "1.settings"],
        ),
        (
            2,
            Some(settings(&public, Some((&other, &protected)))),
            vec!["cannot decrypt", &other_thumb, "not found", "2.settings"],
        ),
        (3, None, vec!["missing settings file", "3.settings"]),
    ];
    for (seq, file, needles) in bad {
        if let Some(f) = &file {
            ga.put_settings(&old, seq, f);
        }
        let r = ga.enable(&old, seq);
        assert_eq!(r.code, Some(1), "enable {seq}: {r:?}");
        let st = ga.status(&old, seq).unwrap();
        assert_eq!(st["status"], "error", "{st}");
        let msg = st["formattedMessage"]["message"].as_str().unwrap();
        for n in needles {
            assert!(msg.contains(n), "enable {seq}: {msg:?} lacks {n:?}");
        }
        assert!(r.stderr.contains(msg), "{r:?}");
        assert_eq!(calls(), "", "enable {seq} touched the service");
        assert_eq!(
            std::fs::read_to_string(state.join("running.toml")).unwrap(),
            running
        );
        assert_eq!(ga.heartbeat(&old).unwrap()["status"], "notready");
    }

    // Still manageable: good settings 4 apply.
    let mut good = public.clone();
    good["flow"]["idle_timeout"] = json!(7);
    ga.put_settings(&old, 4, &settings(&good, Some((&cert, &protected))));
    assert_ok("enable 4", &ga.enable(&old, 4));
    assert_eq!(ga.status(&old, 4).unwrap()["status"], "success");
    assert!(calls().contains("systemctl restart vmflow.service"));
    let running = std::fs::read_to_string(state.join("running.toml")).unwrap();
    assert!(running.contains("idle_timeout = 7"), "{running}");

    // The update: the package is upgraded in place, never removed, the
    // configuration stays, the heartbeat unit follows the new directory.
    let new = ga.unpack("1.1.0", binary, &deb2);
    ga.put_settings(&new, 4, &settings(&good, Some((&cert, &protected))));
    for (what, o) in ga.update(&old, &new, 4) {
        assert_ok(what, &o);
    }
    let c = calls();
    assert!(!c.contains("dpkg -r"), "{c}");
    assert!(
        c.contains(&format!(
            "dpkg --force-confold --force-confdef -i {}/vmflow_0.1.1_amd64.deb",
            new.dir
        )),
        "{c}"
    );
    assert!(c.ends_with("systemctl enable vmflow.service\nsystemctl start vmflow.service\nsystemctl enable --now vmflow-extension-heartbeat.timer\n"), "{c}");
    assert_eq!(
        std::fs::read_to_string(state.join("running.toml")).unwrap(),
        running
    );
    assert!(!conf_dir.join("updating").exists());
    let hb_unit =
        std::fs::read_to_string(root.join("etc/systemd/system/vmflow-extension-heartbeat.service"))
            .unwrap();
    assert!(
        hb_unit.contains(&format!("AZURE_GUEST_AGENT_EXTENSION_PATH={}\n", new.dir)),
        "{hb_unit}"
    );
    assert_eq!(ga.status(&new, 4).unwrap()["status"], "success");

    // Removal: disable, then uninstall.
    assert_ok("disable", &ga.command(&new, Cmd::Disable, 4, &[]));
    assert_eq!(ga.status(&new, 4).unwrap()["operation"], "Disable");
    assert_ok("uninstall", &ga.command(&new, Cmd::Uninstall, 4, &[]));
    let c = calls();
    assert!(
        c.ends_with("systemctl daemon-reload\ndpkg -r vmflow\n"),
        "{c}"
    );
    assert!(!conf_dir.exists());
    assert!(!root.join("etc/systemd/system/vmflow.service.d").exists());
    assert!(!root
        .join("etc/systemd/system/vmflow-extension-heartbeat.timer")
        .exists());

    // No secret anywhere the guest agent (or anyone) reads.
    let mut everything = c + &ga.transcript.borrow();
    for dir in [&lib, &base.join("log"), &root] {
        for f in walk(dir) {
            if f.extension().is_some_and(|e| e == "prv") {
                continue;
            }
            everything.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
        }
    }
    assert!(!everything.contains("SECRET-AGENT-KEY-BYTES"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A command that hangs is killed at its timeout with its whole process
/// group, as the guest agent does: the harness must hold the guest agent's
/// line. A one-second timeout on a command that sleeps stands in.
#[test]
fn the_harness_kills_a_command_and_its_group_at_the_timeout() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("child.pid");
    let o = Host.run(
        t.path().to_str().unwrap(),
        &format!("sleep 60 & echo $! > {}; wait", pidfile.display()),
        &[],
        Duration::from_secs(1),
    );
    assert_eq!(o.code, None, "{o:?}");
    assert!(o.took < Duration::from_secs(10), "{o:?}");
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    // The background child was in the group: it is gone (or a zombie
    // waiting for its reaper), well before its 60 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child {pid} survived: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same harness inside a Debian container with systemd as PID 1: the
/// real .deb through dpkg, the real vmflow.service, the guest agent's
/// commands run in a `systemd-run --scope` under the extensions slice as
/// WALinuxAgent does (so a child left behind would show there).
#[cfg(feature = "system-tests")]
mod in_container {
    use super::*;
    use common::container::{
        built_deb, built_deb_version, poll, target_dir, upgrade_version, Container, Veth,
    };

    const SLICE: &str = "azure-vmextensions-Vmflow.Agent.slice";
    const INSIDE: &str = "10.79.0.2";
    const PEER: &str = "10.79.0.1";

    struct InContainer<'a>(&'a Container);

    impl Machine for InContainer<'_> {
        fn write(&self, path: &str, bytes: &[u8], mode: u32) {
            self.0.write(path, bytes, mode);
        }
        fn read(&self, path: &str) -> Option<Vec<u8>> {
            self.0.read(path)
        }
        fn install(&self, host: &Path, path: &str) {
            self.0.copy_in(host, path);
        }
        fn remove_tree(&self, path: &str) {
            self.0.sh_ok(&format!("rm -rf '{path}'"));
        }
        fn run(
            &self,
            cwd: &str,
            command: &str,
            env: &[(String, String)],
            timeout: Duration,
        ) -> Outcome {
            let secs = timeout.as_secs().to_string();
            let mut argv: Vec<String> = [
                "timeout",
                "-s",
                "KILL",
                &secs,
                "systemd-run",
                "--scope",
                "--quiet",
                &format!("--slice={SLICE}"),
                "--",
                "env",
                "-C",
                cwd,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
            argv.extend(["sh".into(), "-c".into(), command.into()]);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let started = Instant::now();
            let o = self.0.exec(&argv);
            Outcome {
                // timeout(1) exits 137 when it had to kill.
                code: o.status.code().filter(|c| *c != 137),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                took: started.elapsed(),
            }
        }
    }

    /// `n` datagrams from PEER:sport to INSIDE:dport: one flow.
    fn udp(nic: &Veth, sport: u16, dport: u16, n: usize) {
        let py = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('{PEER}',{sport}))\nfor _ in range({n}): s.sendto(b'vmflow-extension',('{INSIDE}',{dport}))\n"
        );
        nic.run_ok(&["python3", "-c", &py]);
    }

    /// The records the collector unit wrote with `dst_port` (any agent).
    fn collected_to(c: &Container, dport: u16) -> Vec<Value> {
        walk(&c.root().join("var/lib/vmflow-collect"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .flat_map(|p| {
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).expect("NDJSON"))
                    .collect::<Vec<_>>()
            })
            .filter(|r| r["proto"] == 17 && r["dst_port"] == dport && r["src_addr"] == PEER)
            .collect()
    }

    fn wait_for_flow(c: &Container, dport: u16, packets: u64) -> Vec<Value> {
        poll(
            &format!("the UDP flow to port {dport} at the collector"),
            Duration::from_secs(60),
            || {
                let r = collected_to(c, dport);
                let sum: u64 = r.iter().map(|x| x["fwd_packets"].as_u64().unwrap()).sum();
                (sum >= packets).then_some(r)
            },
        )
    }

    /// target/azure-extension/vmflow-extension-linux_<version>.zip, no
    /// older than the .deb it must carry.
    fn the_zip() -> PathBuf {
        let zip = target_dir().join(format!(
            "azure-extension/vmflow-extension-linux_{}.zip",
            env!("CARGO_PKG_VERSION")
        ));
        let deb = built_deb();
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        match (modified(&zip), modified(&deb)) {
            (Ok(z), Ok(d)) if z >= d => zip,
            _ => panic!(
                "{} is missing or older than {}: run scripts/package-extension.sh",
                zip.display(),
                deb.display()
            ),
        }
    }

    fn cmdline(c: &Container, pid: u32) -> String {
        // /proc of the container, not of the overlay's root.
        c.sh_ok(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline"))
    }

    /// install → enable (the unit runs the settings' configuration as
    /// vmflow, outside the handler's cgroup, and ships traffic on the NIC);
    /// bad settings → error, the running agent untouched; the update
    /// sequence with a newer package while the collector is away (the
    /// spool crosses it: the flow captured before arrives after); uninstall
    /// removes the package, the drop-in and the configuration, keeps state.
    #[test]
    fn the_extension_in_a_systemd_container() {
        let c = Container::boot("extension");
        let nic = c.veth("eth1", &format!("{INSIDE}/24"), &format!("{PEER}/24"));
        let m = InContainer(&c);
        let ga = GuestAgent {
            m: &m,
            lib: "/var/lib/waagent".into(),
            log_root: "/var/log/azure".into(),
            env: Vec::new(),
            transcript: Default::default(),
        };
        let certs = tempfile::tempdir().unwrap();
        let cert = make_cert(certs.path(), "waagent-tenant");
        cert.put_into(&m, &ga.lib);
        // The handler package as scripts/package-extension.sh built it,
        // unzipped as the guest agent does.
        let zip = the_zip();
        let unzipped = tempfile::tempdir().unwrap();
        let z = Command::new("unzip")
            .args(["-q", zip.to_str().unwrap(), "-d"])
            .arg(unzipped.path())
            .output()
            .unwrap();
        assert!(z.status.success(), "unzip: {z:?}");
        let binary = unzipped.path().join("bin/vmflow");
        let deb = walk(unzipped.path())
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("the zip carries the .deb");
        assert_eq!(
            std::fs::read(&deb).unwrap(),
            std::fs::read(built_deb()).unwrap()
        );
        assert_eq!(
            std::fs::read(unzipped.path().join("HandlerManifest.json")).unwrap(),
            std::fs::read(workspace().join(MANIFEST)).unwrap()
        );
        let old = ga.unpack("1.0.0", &binary, &deb);

        let r = ga.install(&old, 0, "NOT_RUN");
        assert!(r.ok(), "install: {r:?}\n{}", c.console());
        c.sh_ok("dpkg-query -W -f='${Status}' vmflow | grep -qx 'install ok installed'");
        assert_ne!(
            c.show("vmflow", "ActiveState"),
            "active",
            "the unit waits for enable"
        );

        // The collector side, with the package's certificates; the agent's
        // identity comes to the extension in protected settings.
        c.sh_ok("systemctl start vmflow-collect");
        c.wait_active("vmflow-collect");
        c.wait_log("vmflow-collect", "listening on");
        let pem = |f: &str| {
            String::from_utf8(c.read(&format!("/etc/vmflow/certs/{f}")).unwrap()).unwrap()
        };
        let key = pem("agent-1-key.pem");
        let protected = json!({
            "export_key": key,
            "export_cert": pem("agent-1.pem"),
            "export_ca": pem("ca.pem"),
        });
        let public = json!({
            "flow": { "idle_timeout": 1 },
            "capture": { "live": { "interfaces": ["eth1"], "shutdown_grace": 5 } },
            "export": { "collector": "127.0.0.1:4739", "server_name": "localhost", "batch_age": 0.2 },
        });
        ga.put_settings(&old, 0, &settings(&public, Some((&cert, &protected))));
        let r = ga.enable(&old, 0);
        assert!(r.ok(), "enable: {r:?}\n{}", c.journal("vmflow"));
        assert!(r.took < Duration::from_secs(30), "enable took {:?}", r.took);
        eprintln!("enable (config, drop-in, unit restart) took {:?}", r.took);
        assert_eq!(ga.status(&old, 0).unwrap()["status"], "success");
        let pid = c.wait_active("vmflow");
        assert!(
            cmdline(&c, pid).contains("run --config /etc/vmflow/extension/vmflow.toml"),
            "{}",
            cmdline(&c, pid)
        );
        assert_eq!(
            c.show("vmflow", "ControlGroup"),
            "/system.slice/vmflow.service"
        );
        assert_eq!(c.sh_ok(&format!("stat -c %U /proc/{pid}")).trim(), "vmflow");
        assert_eq!(
            c.sh_ok("stat -c '%a %U %G' /etc/vmflow/extension /etc/vmflow/extension/export.key /etc/vmflow/extension/vmflow.toml"),
            "750 root vmflow\n640 root vmflow\n640 root vmflow\n"
        );
        // The conffile is the package's, untouched.
        c.sh_ok("dpkg --verify vmflow");
        // Nothing of the handler is left in the extensions slice.
        let slice = c.sh(&format!("systemctl show -p ControlGroup --value {SLICE}; systemd-cgls --no-pager -u {SLICE} 2>/dev/null"));
        assert!(
            !String::from_utf8_lossy(&slice.stdout).contains("vmflow run"),
            "{slice:?}"
        );
        c.wait_log("vmflow", "capturing on eth1");
        c.wait_log("vmflow", "connected to collector");
        udp(&nic, 4001, 5301, 3);
        let first = wait_for_flow(&c, 5301, 3);
        // The heartbeat: the timer is on, and its service (run now rather
        // than in a minute) writes the file from the unit's state.
        assert_eq!(
            c.show("vmflow-extension-heartbeat.timer", "ActiveState"),
            "active"
        );
        c.sh_ok(&format!(
            "rm {dir}/heartbeat.log && systemctl start vmflow-extension-heartbeat.service",
            dir = old.dir
        ));
        let hb = ga
            .heartbeat(&old)
            .expect("the heartbeat service wrote the file");
        assert_eq!(hb["status"], "ready", "{hb}");
        assert_eq!(hb["Message"], "vmflow.service is active", "{hb}");

        // Bad settings: error status naming the problem, exit 1, the agent
        // runs on as it was (same process).
        let mut bad = public.clone();
        bad["flow"]["idle_timeot"] = json!(3);
        let other = make_cert(certs.path(), "not-on-this-vm");
        ga.put_settings(&old, 1, &settings(&bad, Some((&cert, &protected))));
        ga.put_settings(&old, 2, &settings(&public, Some((&other, &protected))));
        for (seq, needle) in [
            (1, "idle_timeot".to_string()),
            (
                2,
                format!("cannot decrypt with the certificate {}", other.thumbprint),
            ),
            (3, "3.settings: missing settings file".to_string()),
        ] {
            let r = ga.enable(&old, seq);
            assert_eq!(r.code, Some(1), "{r:?}");
            let st = ga.status(&old, seq).unwrap();
            assert_eq!(st["status"], "error");
            let msg = st["formattedMessage"]["message"].as_str().unwrap();
            assert!(msg.contains(&needle), "{msg:?} lacks {needle:?}");
            assert_eq!(c.wait_active("vmflow"), pid);
        }

        // The update, while the collector is away: a flow captured by the
        // old agent waits in the spool across it.
        c.sh_ok("systemctl stop vmflow-collect");
        udp(&nic, 4002, 5302, 4);
        // Let the flow end (idle 1 s) and be spooled by the running agent:
        // its shutdown on disable(old) spools whatever is still open anyway.
        let new_deb = built_deb_version(&upgrade_version());
        let new = ga.unpack("1.1.0", &binary, &new_deb);
        ga.put_settings(&new, 4, &settings(&public, Some((&cert, &protected))));
        for (what, o) in ga.update(&old, &new, 4) {
            assert!(o.ok(), "{what}: {o:?}\n{}", c.journal("vmflow"));
        }
        c.sh_ok(&format!(
            "dpkg-query -W -f='${{Version}}' vmflow | grep -qx '{}'",
            upgrade_version()
        ));
        let dpkg_log = c.sh_ok("cat /var/log/dpkg.log");
        assert!(!dpkg_log.contains(" remove vmflow"), "{dpkg_log}");
        assert_eq!(ga.status(&new, 4).unwrap()["status"], "success");
        let pid2 = c.wait_active("vmflow");
        assert_ne!(pid2, pid);
        assert!(cmdline(&c, pid2).contains("/etc/vmflow/extension/vmflow.toml"));
        c.sh_ok("systemctl start vmflow-collect");
        c.wait_log("vmflow-collect", "listening on");
        let spooled = wait_for_flow(&c, 5302, 4);
        let sum: u64 = spooled
            .iter()
            .map(|x| x["fwd_packets"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, 4, "the spooled flow doubled: {spooled:?}");
        assert_eq!(
            collected_to(&c, 5301),
            first,
            "a record from before the update came twice"
        );

        // Removal: disable, uninstall.
        for cmd in [Cmd::Disable, Cmd::Uninstall] {
            let o = ga.command(&new, cmd, 4, &[]);
            assert!(o.ok(), "{cmd:?}: {o:?}");
        }
        c.sh_ok("dpkg-query -W -f='${Status}' vmflow | grep -qx 'deinstall ok config-files'");
        c.sh_ok(
            "! test -e /etc/systemd/system/vmflow.service.d/extension.conf \
             && ! test -e /etc/vmflow/extension \
             && ! test -e /etc/systemd/system/vmflow-extension-heartbeat.timer \
             && test -d /var/lib/vmflow/spool",
        );
        assert_ne!(c.show("vmflow", "ActiveState"), "active");
        assert!(!ga.transcript.borrow().contains("BEGIN PRIVATE KEY"));
        assert!(!ga.transcript.borrow().contains(key.lines().nth(1).unwrap()));
    }
}
