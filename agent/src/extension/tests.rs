//! The handler run in-process against the model filesystem and a fake
//! service manager: power loss mid-enable, idempotent enable, bad settings
//! turned into an error status, and a handler still manageable afterwards.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::config::{Config, Secret};
use crate::disk::sim::SimFs;
use crate::rng::Rng;

const THUMB: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
const KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nTOPSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n";
const HDIR: &str = "/var/lib/waagent/Vmflow.Agent-1.0.0";
const GID: u32 = 4242;

/// What the fake service manager saw and what "runs".
#[derive(Default)]
struct Services {
    actions: Vec<Action>,
    enabled: bool,
    /// The agent config the running unit read when it (re)started.
    running: Option<Vec<u8>>,
    fail: Option<Action>,
}

struct FakeService<'a> {
    fs: &'a SimFs,
    st: Rc<RefCell<Services>>,
    /// The agent configuration the service reads when it starts.
    config: PathBuf,
}

impl ServiceControl for FakeService<'_> {
    fn run(&mut self, a: &Action) -> Result<(), ExtensionError> {
        let mut st = self.st.borrow_mut();
        if st.fail.as_ref() == Some(a) {
            return Err(ExtensionError::Service {
                command: format!("systemctl {a:?}"),
                detail: "exit status: 1".into(),
            });
        }
        st.actions.push(a.clone());
        let config = self.fs.read(&self.config).ok();
        match a {
            Action::Enable(UNIT) | Action::Register => st.enabled = true,
            Action::Restart(UNIT | "vmflow") => st.running = config,
            Action::Start(UNIT | "vmflow") if st.running.is_none() => st.running = config,
            Action::DisableNow(UNIT | "vmflow") => {
                st.enabled = false;
                st.running = None;
            }
            _ => {}
        }
        Ok(())
    }
    fn is_active(&mut self, _unit: &str) -> bool {
        self.st.borrow().running.is_some()
    }
    fn service_gid(&mut self) -> Result<u32, ExtensionError> {
        Ok(GID)
    }
}

/// "Decrypts" `ENC(<thumbprint>):<plaintext>` when the certificate is the
/// one it was encrypted to.
struct FakeCms;

impl Decrypt for FakeCms {
    fn decrypt(&self, der: &[u8], thumbprint: &str, _h: &Handler) -> Result<Secret, String> {
        let text = std::str::from_utf8(der).map_err(|_| "not ours".to_string())?;
        let (head, plain) = text.split_once(':').ok_or("no header")?;
        let want = format!("ENC({thumbprint})");
        if head != want {
            return Err("Error decrypting CMS structure".into());
        }
        Ok(Secret(plain.into()))
    }
}

fn encrypt(thumb: &str, plain: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("ENC({thumb}):{plain}"))
}

fn public() -> Value {
    json!({
        "flow": { "idle_timeout": 30 },
        "export": { "collector": "collector.example:4739", "server_name": "collector" },
    })
}

fn protected() -> Value {
    json!({ "export_key": KEY, "export_cert": "CERT", "export_ca": "CA" })
}

fn settings(public: &Value, protected: Option<&Value>) -> Vec<u8> {
    let mut hs = json!({ "publicSettings": public });
    if let Some(p) = protected {
        hs["protectedSettings"] = json!(encrypt(THUMB, p));
        hs["protectedSettingsCertThumbprint"] = json!(THUMB);
    }
    json!({ "runtimeSettings": [{ "handlerSettings": hs }] })
        .to_string()
        .into_bytes()
}

struct World {
    fs: SimFs,
    st: Rc<RefCell<Services>>,
    layout: Layout,
}

fn hdir() -> PathBuf {
    PathBuf::from(HDIR)
}

fn world() -> World {
    let fs = SimFs::new();
    let h = hdir();
    for d in ["config", "status"] {
        fs.create_dir_all(&h.join(d)).unwrap();
    }
    fs.create_dir_all(Path::new("/var/log/azure/Vmflow.Agent"))
        .unwrap();
    let env = json!([{ "name": "Vmflow.Agent", "version": 1.0, "handlerEnvironment": {
        "logFolder": "/var/log/azure/Vmflow.Agent",
        "configFolder": format!("{HDIR}/config"),
        "statusFolder": format!("{HDIR}/status"),
        "heartbeatFile": format!("{HDIR}/heartbeat.log"),
    }}]);
    fs.write_new(
        &h.join("HandlerEnvironment.json"),
        env.to_string().as_bytes(),
    )
    .unwrap();
    let manifest = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/azure-extension/linux/HandlerManifest.json"),
    )
    .unwrap();
    fs.write_new(&h.join("HandlerManifest.json"), &manifest)
        .unwrap();
    // What the guest agent set up is on disk before any command runs.
    for f in ["HandlerEnvironment.json", "HandlerManifest.json"] {
        fs.sync(&h.join(f)).unwrap();
    }
    fs.sync_dir(&h).unwrap();
    World {
        fs,
        st: Rc::new(RefCell::new(Services::default())),
        layout: Layout::system(),
    }
}

impl World {
    fn put(&self, seq: u64, bytes: &[u8]) {
        let p = hdir().join(format!("config/{seq}.settings"));
        self.fs.write_new(&p, bytes).unwrap();
        self.fs.sync(&p).unwrap();
        self.fs.sync_dir(&hdir().join("config")).unwrap();
    }

    fn run_on(
        &self,
        fs: &dyn Fs,
        f: fn(&mut Ctx) -> Result<String, ExtensionError>,
        seq: Option<u64>,
    ) -> Result<String, ExtensionError> {
        let mut svc = FakeService {
            fs: &self.fs,
            st: self.st.clone(),
            config: self.layout.agent_config(),
        };
        let mut ctx = Ctx {
            fs,
            svc: &mut svc,
            decrypt: &FakeCms,
            layout: self.layout.clone(),
            handler_dir: hdir(),
            env_seq: seq.map(|s| s.to_string()),
            updating_from: Some("1.0.0".into()),
            now: 1_700_000_000,
        };
        f(&mut ctx)
    }

    fn run(
        &self,
        f: fn(&mut Ctx) -> Result<String, ExtensionError>,
        seq: Option<u64>,
    ) -> Result<String, ExtensionError> {
        self.run_on(&self.fs, f, seq)
    }

    fn status(&self, seq: u64) -> Option<(String, String, String)> {
        let b = self
            .fs
            .read(&hdir().join(format!("status/{seq}.status")))
            .ok()?;
        let v: Value = serde_json::from_slice(&b)
            .unwrap_or_else(|_| panic!("torn status: {:?}", String::from_utf8_lossy(&b)));
        let s = &v[0]["status"];
        Some((
            s["status"].as_str().unwrap().to_string(),
            s["formattedMessage"]["message"]
                .as_str()
                .unwrap()
                .to_string(),
            s["operation"].as_str().unwrap().to_string(),
        ))
    }

    fn read(&self, p: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.fs.read(p.as_ref()).ok()
    }

    fn actions(&self) -> Vec<Action> {
        std::mem::take(&mut self.st.borrow_mut().actions)
    }

    fn mrseq(&self) -> Option<u64> {
        environment::read_mrseq(&self.fs, &hdir())
    }

    /// Every file the guest agent or anyone may read: no secret in any.
    fn assert_no_secret_outside_key_file(&self) {
        let l = Layout::system();
        for p in [
            hdir().join("status/0.status"),
            hdir().join("status/1.status"),
            hdir().join("status/2.status"),
            hdir().join("heartbeat.log"),
            hdir().join("mrseq"),
            l.agent_config(),
            l.dropin(),
            l.heartbeat_service(),
        ] {
            if let Some(b) = self.read(&p) {
                let s = String::from_utf8_lossy(&b);
                assert!(!s.contains("TOPSECRET"), "{}: {s}", p.display());
            }
        }
    }
}

fn enable(c: &mut Ctx) -> Result<String, ExtensionError> {
    super::enable(c)
}

#[test]
fn enable_writes_config_keys_and_dropin_then_restarts() {
    let w = world();
    w.put(0, &settings(&public(), Some(&protected())));
    let msg = w.run(enable, Some(0)).unwrap();
    assert!(msg.contains("restarted"), "{msg}");
    let (st, m, op) = w.status(0).unwrap();
    assert_eq!((st.as_str(), op.as_str()), ("success", "Enable"), "{m}");
    let l = Layout::system();
    let cfg =
        Config::parse(&String::from_utf8(w.read(l.agent_config()).unwrap()).unwrap()).unwrap();
    let x = cfg.export.unwrap();
    assert_eq!(x.key, l.config_dir().join("export.key"));
    assert_eq!(x.cert, l.config_dir().join("export.crt"));
    assert_eq!(x.ca, l.config_dir().join("ca.crt"));
    assert_eq!(x.spool_dir, l.default_spool_dir());
    assert_eq!(x.server_name, "collector");
    assert_eq!(cfg.flow.idle_timeout, crate::config::Seconds(30.0));
    assert_eq!(
        w.read(l.config_dir().join("export.key")).unwrap(),
        KEY.as_bytes()
    );
    let dropin = String::from_utf8(w.read(l.dropin()).unwrap()).unwrap();
    assert!(dropin.contains(
        "ExecStart=\nExecStart=/usr/bin/vmflow run --config /etc/vmflow/extension/vmflow.toml\n"
    ));
    let hb_unit = String::from_utf8(w.read(l.heartbeat_service()).unwrap()).unwrap();
    assert!(hb_unit.contains(&format!("AZURE_GUEST_AGENT_EXTENSION_PATH={HDIR}")));
    assert_eq!(
        w.actions(),
        vec![
            Action::DaemonReload,
            Action::Enable(UNIT),
            Action::Restart(UNIT),
            Action::EnableNow(HEARTBEAT_TIMER),
        ]
    );
    assert_eq!(w.mrseq(), Some(0));
    let hb: Value = serde_json::from_slice(&w.read(hdir().join("heartbeat.log")).unwrap()).unwrap();
    assert_eq!(hb[0]["heartbeat"]["status"], "ready");
    // The key, its directory and the config were shared with the service
    // group before they took their names: never readable by others.
    let log = w.fs.log();
    let key = l.config_dir().join("export.key");
    let share = log
        .iter()
        .position(|e| *e == format!("share {}.tmp {GID}", key.display()))
        .expect("key shared");
    let rename = log
        .iter()
        .position(|e| e.starts_with(&format!("rename {}.tmp", key.display())))
        .unwrap();
    assert!(share < rename);
    assert!(log.contains(&format!("share {} {GID}", l.config_dir().display())));
    assert!(log.contains(&format!("share {}.tmp {GID}", l.agent_config().display())));
    assert!(!log
        .iter()
        .any(|e| e.starts_with(&format!("share {}", l.dropin().display()))));
    w.assert_no_secret_outside_key_file();
}

#[test]
fn a_repeated_enable_restarts_nothing_and_rewrites_nothing() {
    let w = world();
    w.put(0, &settings(&public(), Some(&protected())));
    w.run(enable, Some(0)).unwrap();
    w.actions();
    w.fs.clear_log();
    w.run(enable, Some(0)).unwrap();
    assert_eq!(
        w.actions(),
        vec![
            Action::Enable(UNIT),
            Action::Start(UNIT),
            Action::EnableNow(HEARTBEAT_TIMER)
        ]
    );
    let l = Layout::system();
    let touched: Vec<String> =
        w.fs.log()
            .into_iter()
            .filter(|e| e.starts_with("rename"))
            .collect();
    // Only the status file and the heartbeat are rewritten.
    assert!(
        touched
            .iter()
            .all(|e| e.contains("/status/0.status") || e.contains("heartbeat.log")),
        "{touched:?}"
    );
    assert!(!touched
        .iter()
        .any(|e| e.contains(&*l.config_dir().to_string_lossy())));
    assert_eq!(w.status(0).unwrap().0, "success");
    // Without ConfigSequenceNumber the newest settings file is the one.
    w.run(enable, None).unwrap();
    assert_eq!(w.actions()[1], Action::Start(UNIT));
}

/// An Fs that dies (every change fails) after `budget` changes: the
/// process killed by a power cut at that point.
struct Dying<'a> {
    fs: &'a SimFs,
    left: AtomicUsize,
}

impl Dying<'_> {
    fn step(&self) -> io::Result<()> {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| io::Error::other("power cut"))
    }
}

impl Fs for Dying<'_> {
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.create_dir_all(d)
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        self.fs.list(d)
    }
    fn len(&self, p: &Path) -> io::Result<Option<u64>> {
        self.fs.len(p)
    }
    fn is_dir(&self, p: &Path) -> bool {
        self.fs.is_dir(p)
    }
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        self.fs.read(p)
    }
    fn read_at(&self, p: &Path, o: u64, b: &mut [u8]) -> io::Result<()> {
        self.fs.read_at(p, o, b)
    }
    fn append(&self, p: &Path, d: &[u8]) -> io::Result<()> {
        self.step()?;
        self.fs.append(p, d)
    }
    fn write_at(&self, p: &Path, o: u64, d: &[u8]) -> io::Result<()> {
        self.step()?;
        self.fs.write_at(p, o, d)
    }
    fn write_new(&self, p: &Path, d: &[u8]) -> io::Result<()> {
        self.step()?;
        self.fs.write_new(p, d)
    }
    fn set_len(&self, p: &Path, l: u64) -> io::Result<()> {
        self.step()?;
        self.fs.set_len(p, l)
    }
    fn sync(&self, p: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.sync(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.sync_dir(d)
    }
    fn rename(&self, f: &Path, t: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.rename(f, t)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.remove(p)
    }
    fn restrict(&self, p: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.restrict(p)
    }
    fn share_with_group(&self, p: &Path, g: u32) -> io::Result<()> {
        self.step()?;
        self.fs.share_with_group(p, g)
    }
    fn remove_dir(&self, d: &Path) -> io::Result<()> {
        self.step()?;
        self.fs.remove_dir(d)
    }
}

/// Power lost at every point of an enable that changes the settings (old
/// config and key → new ones), each with several crash outcomes: the status
/// file is the old or a whole new one (never torn), config and key are each
/// the old or the new bytes, `mrseq` never claims settings whose config is
/// not on disk, and the enable the guest agent repeats after the reboot
/// ends with the new config running and `success`, then is a no-op.
#[test]
fn power_loss_mid_enable_leaves_old_or_new_and_the_repeat_converges() {
    let new_public = json!({
        "flow": { "idle_timeout": 45 },
        "export": { "collector": "other.example:4739" },
    });
    let new_key = "-----BEGIN PRIVATE KEY-----\nNEWKEY\n-----END PRIVATE KEY-----\n";
    let new_protected =
        json!({ "export_key": new_key, "export_cert": "CERT2", "export_ca": "CA2" });
    let l = Layout::system();
    let setup = || {
        let w = world();
        w.put(0, &settings(&public(), Some(&protected())));
        w.run(enable, Some(0)).unwrap();
        w.put(1, &settings(&new_public, Some(&new_protected)));
        w.actions();
        w
    };
    let old_config = setup().read(l.agent_config()).unwrap();
    // How many changes a whole enable makes.
    let probe = setup();
    let counter = Dying {
        fs: &probe.fs,
        left: AtomicUsize::new(usize::MAX),
    };
    probe.run_on(&counter, enable, Some(1)).unwrap();
    let total = usize::MAX - counter.left.load(Ordering::SeqCst);
    let new_config = probe.read(l.agent_config()).unwrap();
    assert_ne!(old_config, new_config);
    assert!(total > 20, "{total}");
    let mut outcomes = std::collections::BTreeSet::new();
    for cut in 0..=total {
        for seed in 0..6u64 {
            let w = setup();
            let dying = Dying {
                fs: &w.fs,
                left: AtomicUsize::new(cut),
            };
            let r = w.run_on(&dying, enable, Some(1));
            assert_eq!(r.is_ok(), cut == total, "cut {cut}");
            w.fs.crash(&mut Rng::new(seed * 1000 + cut as u64));
            // Power is back: the unit starts at boot if it was enabled, with
            // the config on disk.
            {
                let mut st = w.st.borrow_mut();
                st.running = if st.enabled {
                    w.read(l.agent_config())
                } else {
                    None
                };
            }
            assert_eq!(w.status(0).unwrap().0, "success");
            let st1 = w.status(1).map(|s| s.0);
            assert!(
                matches!(
                    st1.as_deref(),
                    None | Some("transitioning") | Some("success")
                ),
                "cut {cut}: {st1:?}"
            );
            let config = w.read(l.agent_config()).unwrap();
            assert!(
                config == old_config || config == new_config,
                "cut {cut}: torn config"
            );
            let key = w.read(l.config_dir().join("export.key")).unwrap();
            assert!(
                key == KEY.as_bytes() || key == new_key.as_bytes(),
                "cut {cut}: torn key"
            );
            let mrseq = w.mrseq();
            assert!(
                matches!(mrseq, Some(0) | Some(1)),
                "cut {cut}: mrseq {mrseq:?}"
            );
            if mrseq == Some(1) {
                assert_eq!(config, new_config, "cut {cut}: mrseq ahead of the config");
            }
            outcomes.insert((st1.clone(), config == new_config, mrseq));
            // The guest agent runs enable again.
            w.run(enable, Some(1)).unwrap();
            assert_eq!(w.status(1).unwrap().0, "success", "cut {cut}");
            assert_eq!(w.read(l.agent_config()).unwrap(), new_config);
            assert_eq!(
                w.read(l.config_dir().join("export.key")).unwrap(),
                new_key.as_bytes()
            );
            assert_eq!(w.mrseq(), Some(1));
            assert_eq!(
                w.st.borrow().running.as_deref(),
                Some(&new_config[..]),
                "cut {cut}"
            );
            w.actions();
            w.run(enable, Some(1)).unwrap();
            assert!(!w.actions().contains(&Action::Restart(UNIT)), "cut {cut}");
        }
    }
    // The cuts reached every stage: nothing written, half way, all but the
    // final status.
    assert!(outcomes.contains(&(None, false, Some(0))), "{outcomes:?}");
    assert!(
        outcomes.contains(&(Some("transitioning".into()), true, Some(0))),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(Some("transitioning".into()), true, Some(1))),
        "{outcomes:?}"
    );
}

/// Each bad input ends `enable` with an `error` status whose message names
/// the problem and carries no secret; nothing of the running configuration
/// changes, no service is touched, and a later good enable still succeeds.
#[test]
fn bad_settings_are_an_error_status_and_the_handler_stays_manageable() {
    let w = world();
    w.put(0, &settings(&public(), Some(&protected())));
    w.run(enable, Some(0)).unwrap();
    w.actions();
    let l = Layout::system();
    let good_config = w.read(l.agent_config()).unwrap();
    let mut bad_key = public();
    bad_key["flow"]["idle_timeot"] = json!(3);
    let mut no_export = public();
    no_export.as_object_mut().unwrap().remove("export");
    let mut both = public();
    both["export"]["key"] = json!("/etc/ssl/agent.key");
    // (what, the settings file or none, what the message must name)
    type Case<'a> = (&'a str, Option<Vec<u8>>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "unknown public key",
            Some(settings(&bad_key, Some(&protected()))),
            vec!["idle_timeot", "1.settings"],
        ),
        (
            "undecryptable",
            Some({
                let mut v: Value =
                    serde_json::from_slice(&settings(&public(), Some(&protected()))).unwrap();
                v["runtimeSettings"][0]["handlerSettings"]["protectedSettings"] = json!(encrypt(
                    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                    &protected()
                ));
                v.to_string().into_bytes()
            }),
            vec!["cannot decrypt", THUMB, "1.settings"],
        ),
        (
            "not base64",
            Some({
                let mut v: Value =
                    serde_json::from_slice(&settings(&public(), Some(&protected()))).unwrap();
                v["runtimeSettings"][0]["handlerSettings"]["protectedSettings"] =
                    json!("TOPSECRET!!");
                v.to_string().into_bytes()
            }),
            vec!["not valid base64"],
        ),
        (
            "missing file",
            None,
            vec!["missing settings file", "1.settings"],
        ),
        ("empty settings", Some(Vec::new()), vec!["no export object"]),
        (
            "not JSON",
            Some(b"{\"runtimeSettings\": [TOPSECRET".to_vec()),
            vec!["not JSON", "1.settings"],
        ),
        (
            "unknown protected key",
            Some(settings(
                &public(),
                Some(&json!({ "export_kee": "TOPSECRET" })),
            )),
            vec!["export_kee"],
        ),
        (
            "public and protected",
            Some(settings(&both, Some(&protected()))),
            vec!["export.key", "give one"],
        ),
        (
            "key without export",
            Some(settings(&no_export, Some(&protected()))),
            vec!["export_key", "no export object"],
        ),
    ];
    for (what, file, needles) in cases {
        let p = hdir().join("config/1.settings");
        let _ = w.fs.remove(&p);
        if let Some(b) = &file {
            w.put(1, b);
        }
        let e = w.run(enable, Some(1)).unwrap_err().to_string();
        let (st, msg, _) = w.status(1).unwrap();
        assert_eq!(st, "error", "{what}");
        assert_eq!(msg, e, "{what}");
        for n in needles {
            assert!(msg.contains(n), "{what}: {msg:?} lacks {n:?}");
        }
        assert!(!msg.contains("TOPSECRET"), "{what}: {msg}");
        assert_eq!(w.read(l.agent_config()).unwrap(), good_config, "{what}");
        assert!(w.actions().is_empty(), "{what}");
        assert_eq!(w.mrseq(), Some(0), "{what}");
        let hb: Value =
            serde_json::from_slice(&w.read(hdir().join("heartbeat.log")).unwrap()).unwrap();
        assert_eq!(hb[0]["heartbeat"]["status"], "notready", "{what}");
        w.assert_no_secret_outside_key_file();
    }
    // Still manageable: a good enable with the next sequence number works.
    let mut better = public();
    better["flow"]["idle_timeout"] = json!(12);
    w.put(2, &settings(&better, Some(&protected())));
    w.run(enable, Some(2)).unwrap();
    assert_eq!(w.status(2).unwrap().0, "success");
    assert_eq!(w.mrseq(), Some(2));
    assert!(w.actions().contains(&Action::Restart(UNIT)));
    let cfg =
        Config::parse(&String::from_utf8(w.read(l.agent_config()).unwrap()).unwrap()).unwrap();
    assert_eq!(cfg.flow.idle_timeout, crate::config::Seconds(12.0));
}

/// A service manager that fails leaves `error`, no `mrseq`, and the next
/// enable of the same settings tries again (it is not skipped).
#[test]
fn a_failed_restart_is_an_error_and_is_retried() {
    let w = world();
    w.put(0, &settings(&public(), Some(&protected())));
    w.st.borrow_mut().fail = Some(Action::Restart(UNIT));
    let e = w.run(enable, Some(0)).unwrap_err().to_string();
    assert!(e.contains("Restart"), "{e}");
    assert_eq!(w.status(0).unwrap().0, "error");
    assert_eq!(w.mrseq(), None);
    w.st.borrow_mut().fail = None;
    w.actions();
    w.run(enable, Some(0)).unwrap();
    assert!(w.actions().contains(&Action::Restart(UNIT)));
    assert_eq!(w.status(0).unwrap().0, "success");
}

/// disable, the update sequence (disable old → update new → uninstall old →
/// install new → enable new) and a final uninstall, as plans carried out.
#[test]
fn disable_update_and_uninstall() {
    let w = world();
    let l = Layout::system();
    w.fs.write_new(&hdir().join("vmflow_0.1.0_amd64.deb"), b"deb")
        .unwrap();
    w.run(super::install, None).unwrap();
    assert_eq!(
        w.actions(),
        vec![
            Action::InstallPackage(hdir().join("vmflow_0.1.0_amd64.deb")),
            Action::DisableNow(UNIT)
        ]
    );
    w.put(0, &settings(&public(), Some(&protected())));
    w.run(enable, Some(0)).unwrap();
    w.actions();
    w.run(super::disable, Some(0)).unwrap();
    assert_eq!(w.actions(), vec![Action::DisableNow(UNIT)]);
    let (st, _, op) = w.status(0).unwrap();
    assert_eq!((st.as_str(), op.as_str()), ("success", "Disable"));
    let hb: Value = serde_json::from_slice(&w.read(hdir().join("heartbeat.log")).unwrap()).unwrap();
    assert_eq!(hb[0]["heartbeat"]["status"], "notready");
    // The update: the new version marks it, the old one's uninstall keeps
    // everything, the new install upgrades, the new enable (same settings,
    // mrseq carried over by the guest agent) starts the unit again.
    w.run(super::update, Some(0)).unwrap();
    assert!(w.read(l.update_marker()).is_some());
    let config = w.read(l.agent_config()).unwrap();
    let msg = w.run(super::uninstall, Some(0)).unwrap();
    assert!(msg.contains("during an update"), "{msg}");
    assert!(w.actions().is_empty());
    assert_eq!(w.read(l.agent_config()).unwrap(), config);
    assert!(w.read(l.dropin()).is_some());
    assert!(w.read(l.update_marker()).is_none());
    w.run(super::install, Some(0)).unwrap();
    w.actions();
    w.run(enable, Some(0)).unwrap();
    assert_eq!(
        w.actions(),
        vec![
            Action::Enable(UNIT),
            Action::Start(UNIT),
            Action::EnableNow(HEARTBEAT_TIMER)
        ]
    );
    assert_eq!(w.st.borrow().running.as_deref(), Some(&config[..]));
    // Removal: everything the extension wrote goes, then the package.
    w.run(super::uninstall, Some(0)).unwrap();
    let a = w.actions();
    assert_eq!(a.first(), Some(&Action::DisableNow(HEARTBEAT_TIMER)));
    assert_eq!(a.last(), Some(&Action::RemovePackage));
    for p in [
        l.agent_config(),
        l.dropin(),
        l.heartbeat_service(),
        l.heartbeat_timer(),
    ] {
        assert!(w.read(&p).is_none(), "{}", p.display());
    }
    assert!(!w.fs.is_dir(&l.config_dir()));
    assert!(!w.fs.is_dir(&l.dropin_dir()));
    // A second uninstall (the guest agent retries) is fine.
    w.run(super::uninstall, Some(0)).unwrap();
    // Installed again in the same directory, where mrseq still says 0: the
    // configuration is gone, so enable applies the settings again.
    assert_eq!(w.mrseq(), Some(0));
    w.run(super::install, Some(0)).unwrap();
    w.actions();
    w.run(enable, Some(0)).unwrap();
    assert!(w.actions().contains(&Action::Restart(UNIT)));
    assert_eq!(w.read(l.agent_config()).unwrap(), config);
}

/// A marker older than an update can take is a leftover: the uninstall
/// after it is a real one. A fresh one keeps everything.
#[test]
fn only_a_fresh_update_marker_keeps_vmflow_installed() {
    let l = Layout::system();
    let now = 1_700_000_000;
    let fresh = machine::update_marker("1.0.0", now - 60);
    let plan = machine::plan_uninstall(&l, Some(&fresh), true, now);
    assert!(plan.actions().is_empty(), "{plan:?}");
    let stale = machine::update_marker("1.0.0", now - machine::UPDATE_MARKER_TTL - 1);
    for marker in [Some(&stale[..]), Some(&b"garbage"[..]), None] {
        let plan = machine::plan_uninstall(&l, marker, true, now);
        assert_eq!(
            plan.actions().last(),
            Some(&&Action::RemovePackage),
            "{marker:?}"
        );
    }
    // A leftover marker goes with the configuration directory.
    let w = world();
    w.run(super::update, Some(0)).unwrap();
    assert!(w.read(l.update_marker()).is_some());
    let mut svc = FakeService {
        fs: &w.fs,
        st: w.st.clone(),
        config: l.agent_config(),
    };
    let mut ctx = Ctx {
        fs: &w.fs,
        svc: &mut svc,
        decrypt: &FakeCms,
        layout: l.clone(),
        handler_dir: hdir(),
        env_seq: None,
        updating_from: None,
        now: 1_700_000_000 + 2 * machine::UPDATE_MARKER_TTL,
    };
    super::uninstall(&mut ctx).unwrap();
    assert!(w.actions().contains(&Action::RemovePackage));
    assert!(w.read(l.update_marker()).is_none());
}

#[test]
fn the_sequence_number_is_the_env_or_the_highest_file() {
    let w = world();
    let cf = hdir().join("config");
    for n in [2u64, 9, 10] {
        w.put(n, b"");
    }
    w.fs.write_new(&cf.join("HandlerState"), b"x").unwrap();
    w.fs.write_new(&cf.join("x.11.settings"), b"x").unwrap();
    assert_eq!(environment::pick_seq(&w.fs, &cf, None).unwrap(), 10);
    assert_eq!(environment::pick_seq(&w.fs, &cf, Some("2")).unwrap(), 2);
    assert!(environment::pick_seq(&w.fs, &cf, Some("x")).is_err());
    assert_eq!(
        environment::pick_seq(&w.fs, Path::new("/none"), None).unwrap(),
        0
    );
}

/// The manifest in the shape WALinuxAgent's `HandlerManifest` reads: a
/// one-element array, every command the handler binary's, heartbeats on,
/// update with install, and `resourceLimits` beside (not inside)
/// `handlerManifest`, naming the unit.
#[test]
fn the_manifest_is_what_the_guest_agent_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/azure-extension/linux/HandlerManifest.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let m = &v[0]["handlerManifest"];
    for (key, cmd) in [
        ("installCommand", "install"),
        ("uninstallCommand", "uninstall"),
        ("updateCommand", "update"),
        ("enableCommand", "enable"),
        ("disableCommand", "disable"),
    ] {
        assert_eq!(m[key], format!("bin/vmflow extension {cmd}"), "{key}");
    }
    assert_eq!(m["reportHeartbeat"], true);
    assert_eq!(m["updateMode"], "UpdateWithInstall");
    assert_eq!(m["supportsMultipleExtensions"], false);
    assert_eq!(v[0]["version"], 1.0);
    assert!(m.get("resourceLimits").is_none());
    assert_eq!(v[0]["resourceLimits"]["services"][0]["name"], UNIT);
    assert!(environment::parse_manifest(&path, &std::fs::read(&path).unwrap()).unwrap());
}

/// The README's settings example is accepted as it stands.
#[test]
fn the_readme_example_is_valid_settings() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = &readme[readme.find("## Deploy as an Azure VM extension").unwrap()..];
    let start = section.find("```json\n").unwrap() + 8;
    let end = start + section[start..].find("```").unwrap();
    let v: Value = serde_json::from_str(&section[start..end]).unwrap();
    let secrets = settings::parse_protected(&Secret(v["protectedSettings"].to_string())).unwrap();
    let (text, files, _) = machine::agent_config(
        &Layout::system(),
        Path::new("0.settings"),
        v["settings"].as_object().unwrap(),
        &secrets,
    )
    .unwrap();
    let cfg = Config::parse(&text).unwrap();
    assert_eq!(
        cfg.export.unwrap().key,
        Layout::system().config_dir().join("export.key")
    );
    assert_eq!(files.len(), 3);
}

/// The Windows handler's plans (the Service Control Manager), run against
/// the model filesystem: install copies the exe (the service stopped
/// first), enable writes the configuration and key files and registers and
/// restarts the service, a repeated enable only starts it, disable stops
/// it, uninstall deletes the service, the configuration and the exe and
/// keeps the spool.
#[test]
fn windows_plans_register_restart_stop_and_remove_the_service() {
    let mut w = world();
    w.layout = Layout {
        host: ServiceManager::Scm,
        root: PathBuf::from("/ProgramData/vmflow"),
        service_binary: PathBuf::from("/Program Files/vmflow/vmflow.exe"),
    };
    let l = w.layout.clone();
    let svc = crate::platform::service::NAME;
    assert!(
        w.run(super::install, None).is_err(),
        "install without bin/vmflow.exe"
    );
    let exe = hdir().join("bin/vmflow.exe");
    w.fs.create_dir_all(&hdir().join("bin")).unwrap();
    w.fs.write_new(&exe, b"MZ").unwrap();
    w.run(super::install, None).unwrap();
    assert_eq!(
        w.actions(),
        vec![Action::DisableNow(svc), Action::InstallPackage(exe)]
    );
    w.put(0, &settings(&public(), Some(&protected())));
    let msg = w.run(enable, Some(0)).unwrap();
    assert!(msg.contains("service vmflow restarted"), "{msg}");
    assert_eq!(w.actions(), vec![Action::Register, Action::Restart(svc)]);
    assert_eq!(w.status(0).unwrap().0, "success");
    assert_eq!(w.mrseq(), Some(0));
    let cfg = String::from_utf8(w.read(l.agent_config()).unwrap()).unwrap();
    assert!(l
        .agent_config()
        .starts_with("/ProgramData/vmflow/extension"));
    let key = l.config_dir().join("export.key");
    assert!(
        cfg.contains(&format!("key = \"{}\"", key.display())),
        "{cfg}"
    );
    assert!(
        cfg.contains("spool_dir = \"/ProgramData/vmflow/spool\""),
        "{cfg}"
    );
    assert_eq!(w.read(&key).unwrap(), KEY.as_bytes());
    assert_eq!(w.st.borrow().running.as_deref(), Some(cfg.as_bytes()));
    assert!(
        w.read(l.dropin()).is_none(),
        "no systemd drop-in on Windows"
    );
    w.assert_no_secret_outside_key_file();
    w.run(enable, Some(0)).unwrap();
    assert_eq!(w.actions(), vec![Action::Register, Action::Start(svc)]);
    w.run(super::disable, Some(0)).unwrap();
    assert_eq!(w.actions(), vec![Action::DisableNow(svc)]);
    assert_eq!(w.status(0).unwrap().2, "Disable");
    w.fs.create_dir_all(&l.default_spool_dir()).unwrap();
    let msg = w.run(super::uninstall, Some(0)).unwrap();
    assert_eq!(w.actions(), vec![Action::Unregister, Action::RemovePackage]);
    assert!(!w.fs.is_dir(&l.config_dir()), "{msg}");
    assert!(w.fs.is_dir(&l.default_spool_dir()), "{msg}");
}
