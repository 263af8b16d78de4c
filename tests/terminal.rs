//! What someone at a terminal sees: `replay` and `synth` draw a progress
//! bar when stderr is a terminal (a real one: tmux), and nothing of it when
//! stderr is a pipe or a file.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of this test's own, killed when the test ends.
struct Tmux(String);

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux(format!("vmflow-{name}-{}", std::process::id()))
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Runs `line` in a 160×40 terminal; returns the screen once `done`
    /// exists (the line touches it when the command has ended).
    fn screen_after(&self, line: &str, done: &Path) -> String {
        let out = self.cmd(&["new-session", "-d", "-x", "160", "-y", "40", line]);
        assert!(out.status.success(), "{out:?}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done.exists() {
            assert!(Instant::now() < deadline, "the command did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.cmd(&["capture-pane", "-p", "-J"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn bin() -> String {
    env!("CARGO_BIN_EXE_vmflow").to_string()
}

#[test]
fn replay_shows_its_progress_on_a_terminal_and_not_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("c.pcap");
    let out = run(vmflow()
        .args(["synth", "--packets", "300000", "--concurrent", "3000"])
        .args(["--snaplen", "128", "--out"])
        .arg(&cap));
    assert!(out.status.success(), "{out:?}");
    let size = std::fs::metadata(&cap).unwrap().len();

    let tmux = Tmux::new("replay");
    let done = dir.path().join("done");
    let screen = tmux.screen_after(
        &format!(
            "{} replay --out /dev/null {}; touch {}; sleep 600",
            bin(),
            cap.display(),
            done.display()
        ),
        &done,
    );
    // The bar's last state stays above the summary: the whole file read,
    // every packet, the records written.
    let packets = summary(&screen, "packets").expect("the summary is on the screen");
    let records = summary(&screen, "records").unwrap();
    assert_eq!(packets, 300_000, "{screen}");
    let bar = screen
        .lines()
        .find(|l| l.contains(" packets (") && l.contains("/s), "))
        .unwrap_or_else(|| panic!("no progress bar on the terminal:\n{screen}"));
    assert!(bar.contains("(100%)"), "{bar}");
    assert!(bar.contains(&format!("{packets} packets (")), "{bar}");
    assert!(bar.contains(&format!(", {records} records")), "{bar}");
    let mib = format!(
        "{:.2} MiB/{:.2} MiB",
        size as f64 / 1048576.0,
        size as f64 / 1048576.0
    );
    assert!(bar.contains(&mib), "{bar} (want {mib})");

    // stderr a pipe: the summary and nothing else, no escape sequences.
    let out = run(vmflow().args(["replay", "--out", "/dev/null"]).arg(&cap));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(summary(&err, "packets"), Some(300_000));
    assert!(!err.contains("/s), ") && !err.contains('\u{1b}'), "{err}");
}

#[test]
fn synth_shows_the_bytes_it_writes_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("s.pcap");
    let tmux = Tmux::new("synth");
    let done = dir.path().join("done");
    let screen = tmux.screen_after(
        &format!(
            "{} synth --packets 200000 --concurrent 2000 --snaplen 128 --out {}; touch {}; sleep 600",
            bin(),
            cap.display(),
            done.display()
        ),
        &done,
    );
    let size = std::fs::metadata(&cap).unwrap().len();
    let line = screen
        .lines()
        .find(|l| l.contains(" written ("))
        .unwrap_or_else(|| panic!("no progress on the terminal:\n{screen}"));
    let mib = format!("{:.2} MiB written", size as f64 / 1048576.0);
    assert!(line.contains(&mib), "{line} (want {mib})");
}
