//! `vmflow check --config FILE`: a good configuration passes and prints
//! what `run` would do; a bad one lists every problem, not just the first.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn check(cfg: &Path) -> (Output, String, String) {
    let out = run(vmflow().args(["check", "--config"]).arg(cfg));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn a_good_configuration_passes_with_its_plan() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    vmflow::certs::init(&certs, &Default::default()).unwrap();
    let cap = write(d.path(), "cap.pcap", b"not read by check");
    let text = format!(
        "[source]\nfiles = [{cap:?}]\n[export]\ncollector = \"127.0.0.1:4739\"\nca = {:?}\ncert = {:?}\n\
         key = {:?}\nspool_dir = {:?}\n[[export.ipfix]]\ncollector = \"127.0.0.1:2055\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        certs.join("ca.pem"),
        certs.join("agent-1.pem"),
        certs.join("agent-1-key.pem"),
        d.path().join("state").join("spool"),
    );
    let cfg = write(d.path(), "good.toml", text.as_bytes());
    let (out, stdout, stderr) = check(&cfg);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("source: capture files {}", cap.display())),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("output: mutual TLS to collector 127.0.0.1:4739 (server name \"localhost\")")
            && stdout.contains(&format!(
                "{}",
                d.path().join("state").join("spool").display()
            )),
        "{stdout}"
    );
    assert!(
        stdout.contains("output: IPFIX over Udp to 127.0.0.1:2055"),
        "{stdout}"
    );
    assert!(
        stdout.contains("metrics: http://127.0.0.1:0/metrics and /healthz"),
        "{stdout}"
    );
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(!stderr.contains("problem"), "{stderr}");
    // Nothing was created: check only looks.
    assert!(!d.path().join("state").exists());
}

#[test]
fn every_problem_is_listed() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    let opts = vmflow::certs::CertOptions {
        agents: vec!["agent-1".into(), "old".into()],
        expired_agents: vec!["old".into()],
        ..Default::default()
    };
    vmflow::certs::init(&certs, &opts).unwrap();
    let other = d.path().join("other");
    vmflow::certs::init(&other, &Default::default()).unwrap();
    let blocker = write(d.path(), "blocker", b"a file where a directory should be");
    let missing = d.path().join("missing.pcap");
    // Mismatched key and certificate, a capture file that is not there, a
    // spool under a file, a folder that is not there, a service principal
    // without its settings, and a collector name that does not resolve.
    let text = format!(
        "[source]\nfiles = [{missing:?}]\n[[source.folder]]\npath = {:?}\n\
         [[source.blob]]\naccount_url = \"https://acct.blob.core.windows.net\"\ncontainer = \"c\"\n\
         [azure]\nidentity = \"service_principal\"\n\
         [export]\ncollector = \"no-such-host.invalid:4739\"\nca = {:?}\ncert = {:?}\nkey = {:?}\nspool_dir = {:?}\n",
        d.path().join("no-folder"),
        certs.join("ca.pem"),
        certs.join("agent-1.pem"),
        other.join("agent-1-key.pem"),
        blocker.join("spool"),
    );
    let cfg = write(d.path(), "bad.toml", text.as_bytes());
    let (out, stdout, stderr) = check(&cfg);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains("problem: ")).collect();
    for want in [
        "source.files: ".to_string() + &missing.display().to_string(),
        "source.folder.path: ".to_string() + &d.path().join("no-folder").display().to_string(),
        "export.spool_dir: ".to_string() + &blocker.display().to_string() + ": is not a directory",
        format!(
            "export.key ({}) is not the key of export.cert ({})",
            other.join("agent-1-key.pem").display(),
            certs.join("agent-1.pem").display()
        ),
        "azure.tenant is needed".to_string(),
        "azure.client_id is needed".to_string(),
        "azure.client_secret_file is needed".to_string(),
    ] {
        assert!(
            problems.iter().any(|p| p.contains(&want)),
            "{want:?} not among:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("{} problem(s)", problems.len())),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "warning: export.collector = \"no-such-host.invalid:4739\": does not resolve"
        ),
        "{stderr}"
    );
    // The plan is printed all the same.
    assert!(stdout.contains("source: folder"), "{stdout}");

    // An expired certificate and a key of its own: the date is named.
    let text = format!(
        "[source]\nfiles = [{missing:?}]\n[export]\ncollector = \"127.0.0.1:4739\"\nca = {:?}\ncert = {:?}\n\
         key = {:?}\nspool_dir = {:?}\n",
        certs.join("ca.pem"),
        certs.join("old.pem"),
        certs.join("old-key.pem"),
        d.path().join("spool"),
    );
    let cfg = write(d.path(), "expired.toml", text.as_bytes());
    let (out, _, stderr) = check(&cfg);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}: expired on", certs.join("old.pem").display())),
        "{stderr}"
    );

    // A configuration that does not parse: the key is named.
    let cfg = write(d.path(), "typo.toml", b"[flow]\nidle_timeot = 3\n");
    let (out, _, stderr) = check(&cfg);
    assert!(!out.status.success());
    assert!(stderr.contains("idle_timeot"), "{stderr}");
}

/// Command-line flags are held to the configuration's rules, with messages
/// that name the flag and the rule, before anything is opened.
#[test]
fn flags_are_validated_like_the_configuration() {
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("s.pcap");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["capture", "-i", "lo", "--snaplen", "20"]
                .into_iter()
                .map(String::from)
                .collect(),
            "--snaplen = 20: must be in 64..=262144",
        ),
        (
            vec!["capture", "-i", "lo", "--ring-block-kib", "5"]
                .into_iter()
                .map(String::from)
                .collect(),
            "--ring-block-kib = 5: must be a multiple of the page size",
        ),
        (
            ["synth", "--packets", "10", "--concurrent", "0", "--out"]
                .into_iter()
                .map(String::from)
                .chain([cap.display().to_string()])
                .collect(),
            "--concurrent = 0",
        ),
        (
            [
                "synth",
                "--packets",
                "10",
                "--concurrent",
                "1",
                "--snaplen",
                "0",
                "--out",
            ]
            .into_iter()
            .map(String::from)
            .chain([cap.display().to_string()])
            .collect(),
            "--snaplen = 0: must be in 64..=262144",
        ),
    ];
    for (args, want) in cases {
        let out = run(vmflow().args(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!cap.exists(), "synth wrote before refusing");

    // --threads 0 means cores - 1, as threads = 0 in the file does.
    let out = run(vmflow()
        .args(["synth", "--packets", "2000", "--concurrent", "50", "--out"])
        .arg(&cap));
    assert!(out.status.success());
    let out = run(vmflow().args(["replay", "--threads", "0"]).arg(&cap));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = run(vmflow().args(["replay", "--threads", "1"]).arg(&cap));
    assert_eq!(out.stdout, one.stdout);
    assert!(!out.stdout.is_empty());

    // An --out that is a file where a directory belongs says so.
    let certs = d.path().join("certs");
    vmflow::certs::init(&certs, &Default::default()).unwrap();
    let file = write(d.path(), "a-file", b"x");
    let out = run(vmflow()
        .args(["collect", "--listen", "127.0.0.1:0", "--cert"])
        .arg(certs.join("collector.pem"))
        .arg("--key")
        .arg(certs.join("collector-key.pem"))
        .arg("--client-ca")
        .arg(certs.join("ca.pem"))
        .arg("--out")
        .arg(&file));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{}: --out is not a directory", file.display())),
        "{err}"
    );
}

#[test]
fn a_metrics_port_already_taken_is_a_problem() {
    let d = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cap = write(d.path(), "cap.pcap", b"not read by check");
    let text = format!(
        "[source]\nfiles = [{cap:?}]\n[[export.ipfix]]\ncollector = \"127.0.0.1:2055\"\n\
         [metrics]\nlisten = \"{addr}\"\n"
    );
    let cfg = write(d.path(), "taken.toml", text.as_bytes());
    let (out, stdout, stderr) = check(&cfg);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "check: problem: metrics.listen: cannot listen on {addr}"
        )),
        "{stderr}"
    );
}
