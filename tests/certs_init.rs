//! `vmflow certs init` end to end: keys are 0600 and their new directory
//! 0700 whatever the umask and whatever was there, and agent names that are
//! not plain names are refused before anything is written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `vmflow certs init DIR --agent NAME…` under `umask`.
fn certs_init(dir: &Path, agents: &[&str], umask: &str) -> Output {
    certs_init_with(dir, agents, umask, &[])
}

fn certs_init_with(dir: &Path, agents: &[&str], umask: &str, flags: &[&str]) -> Output {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_vmflow"))
        .args(["certs", "init"])
        .arg(dir)
        .args(flags);
    for a in agents {
        c.args(["--agent", a]);
    }
    c.output().expect("sh runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

const KEYS: [&str; 3] = ["ca-key.pem", "collector-key.pem", "agent-1-key.pem"];
const CERTS: [&str; 3] = ["ca.pem", "collector.pem", "agent-1.pem"];

#[test]
fn keys_are_0600_whatever_the_umask_and_the_mode_of_the_old_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("certs");
    let out = certs_init(&dir, &[], "000");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&dir), 0o700, "the keys' new directory");
    for f in KEYS {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for f in CERTS {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    // Keys left readable by everyone (copied around, or from an old
    // version): a new run with --force replaces them, and they are 0600
    // again.
    let mut old = Vec::new();
    for f in KEYS {
        let p = dir.join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        old.push(std::fs::read(&p).unwrap());
    }
    let out = certs_init_with(&dir, &[], "000", &["--force"]);
    assert!(out.status.success(), "{out:?}");
    for (f, old) in KEYS.iter().zip(old) {
        let p = dir.join(f);
        assert_eq!(mode(&p), 0o600, "{f} over an old 0644 key");
        assert_ne!(std::fs::read(&p).unwrap(), old, "{f} is a new key");
    }
    for f in CERTS {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    // Nothing else: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = KEYS.iter().chain(&CERTS).map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}

/// Every file under `root`, recursively.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn agent_names_that_are_not_plain_names_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("a").join("b").join("certs");
    let long = "x".repeat(65);
    for bad in [
        "../../escaped",
        "",
        ".hidden",
        "..",
        "a/b",
        "/tmp/abs",
        "x y",
        "é",
        "ca",
        "collector",
        &long,
    ] {
        let out = certs_init(&dir, &["agent-1", bad], "022");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(
            err.contains(&format!("agent name {bad:?}")),
            "{bad:?}: {err}"
        );
        assert_eq!(
            files_under(d.path()),
            Vec::<PathBuf>::new(),
            "{bad:?}: written anyway"
        );
    }
    // The longest plain name is fine, and stays inside DIR.
    let ok = format!("Agent_0.9-{}", "z".repeat(54));
    assert_eq!(ok.len(), 64);
    let out = certs_init(&dir, &[&ok], "022");
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join(format!("{ok}-key.pem")).exists());
    assert!(files_under(d.path()).iter().all(|p| p.starts_with(&dir)));
}

#[test]
fn an_existing_ca_or_key_is_kept_unless_forced_and_every_ca_has_its_own_name() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("certs");
    assert!(certs_init(&dir, &[], "022").status.success());
    let snapshot = |dir: &Path| {
        let mut v: Vec<(PathBuf, Vec<u8>)> = files_under(dir)
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&dir);
    let name = vmflow::tls::cert_names(&dir.join("ca.pem"));
    assert_eq!(name.len(), 1);
    assert!(name[0].starts_with("vmflow CA "), "{name:?}");

    // A second run refuses, names the file, and writes nothing.
    let out = certs_init(&dir, &[], "022");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "overwrote the CA: {err}");
    assert!(
        err.contains("ca.pem") && err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before);

    // A new agent's key that is already there is refused too.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("web-key.pem"), "mine").unwrap();
    let out = certs_init(&other, &["web"], "022");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("web-key.pem"),
        "{err}"
    );
    assert_eq!(std::fs::read(other.join("web-key.pem")).unwrap(), b"mine");

    // --force replaces everything, with a new CA of another name.
    let out = certs_init_with(&dir, &[], "022", &["--force"]);
    assert!(out.status.success(), "{out:?}");
    let new_name = vmflow::tls::cert_names(&dir.join("ca.pem"));
    assert_eq!(new_name.len(), 1);
    assert_ne!(new_name, name, "two CAs with one name");
    assert_ne!(snapshot(&dir), before);
}
