//! Log lines: `--log-format json` and `[log] format = "json"` give one JSON
//! object a line carrying the level and the message; the flag wins over the
//! file; `RUST_LOG` chooses what is logged in either format; the top-level
//! `--help` says so.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// A capture from `vmflow synth` and a `run` configuration reading it,
/// exporting over IPFIX/UDP to a port nobody reads (no collector needed).
fn setup(dir: &Path, log: &str) -> std::path::PathBuf {
    let cap = dir.join("s.pcap");
    let out = run(vmflow()
        .args(["synth", "--packets", "500", "--concurrent", "5", "--out"])
        .arg(&cap));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "{log}[source]\nfiles = [{cap:?}]\n[[export.ipfix]]\ncollector = \"127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    cfg
}

/// stderr's log lines: everything but the `run:` summary lines (plain text
/// in either format, like the other commands' summaries).
fn log_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.starts_with("run: "))
        .map(str::to_owned)
        .collect()
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn config_json_gives_json_lines_with_level_and_message() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), "[log]\nformat = \"json\"\n");
    let out = run(vmflow()
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = log_lines(&out.stderr);
    let v = json_lines(&lines);
    assert!(!v.is_empty(), "no log lines");
    for o in &v {
        assert!(o["level"].is_string(), "{o}");
        assert!(o["fields"]["message"].is_string(), "{o}");
    }
    assert!(
        v.iter().any(|o| o["level"] == "INFO"
            && o["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("source finished"))),
        "{lines:?}"
    );
    // The summary lines still end the run.
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(summary(&text, "packets"), Some(500), "{text}");
}

#[test]
fn flag_wins_over_the_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), "[log]\nformat = \"json\"\n");
    let out = run(vmflow()
        .args(["run", "--log-format", "text", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG"));
    assert!(out.status.success());
    let lines = log_lines(&out.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("source finished")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{lines:?}"
    );

    // And the other way: no [log] in the file, the flag (before the
    // subcommand: it is global) asks for JSON.
    let cfg = setup(d.path(), "");
    let out = run(vmflow()
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG"));
    assert!(out.status.success());
    let v = json_lines(&log_lines(&out.stderr));
    assert!(v.iter().any(|o| o["level"] == "INFO"), "{v:?}");
}

#[test]
fn rust_log_chooses_the_lines_in_json_too() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), "[log]\nformat = \"json\"\n");
    let quiet = run(vmflow()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn"));
    assert!(quiet.status.success());
    let v = json_lines(&log_lines(&quiet.stderr));
    assert!(
        v.iter()
            .all(|o| o["level"] == "WARN" || o["level"] == "ERROR"),
        "{v:?}"
    );
    let loud = run(vmflow()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "debug"));
    assert!(loud.status.success());
    let v = json_lines(&log_lines(&loud.stderr));
    assert!(v.iter().any(|o| o["level"] == "INFO"), "{v:?}");
}

#[test]
fn a_bad_format_is_refused_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), "[log]\nformat = \"xml\"\n");
    let out = run(vmflow().args(["run", "--config"]).arg(&cfg));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("format") && text.contains("xml"), "{text}");
    let out = run(vmflow()
        .args(["--log-format", "xml", "run", "--config"])
        .arg(&cfg));
    assert!(!out.status.success());
}

#[test]
fn help_documents_rust_log_and_the_format() {
    let out = run(vmflow().arg("--help"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RUST_LOG") && text.contains("--log-format"),
        "{text}"
    );
}
