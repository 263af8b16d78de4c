//! The capture lifecycle manager against the stand-in management API built
//! from the official examples: the documented contract (watcher creation,
//! long-running operations through Azure-AsyncOperation and Location, the
//! malformed Location of the QueryStatus example, throttling and transient
//! errors with Retry-After), and renewal timelines: the captures the manager
//! keeps running, read back through the capture-folder source, cover every
//! packet exactly once — or, where the service refuses overlapping captures,
//! report each gap.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::agents::synth_cap;
use common::arm_standin::*;
use common::http_stub::{Response, Stub};
use common::*;
use vmflow::azure::arm::Arm;
use vmflow::azure::auth::{Identity, Tokens};
use vmflow::azure::captures::{Event, Manager};
use vmflow::capture::CaptureReader;
use vmflow::config::{CapturesConfig, Config, FolderConfig, OnStop};
use vmflow::export::VecSink;
use vmflow::follow::folder::{FolderPosition, FolderSource};
use vmflow::follow::runner::{self, RunnerOptions};
use vmflow_proto::{EndReason, FlowRecord};

const TOKEN: &str = "arm-token-abc123";
const VM: &str =
    "/subscriptions/subid/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/vm1";

fn imds(token: &'static str) -> Stub {
    Stub::start(move |r| {
        if r.headers.get("metadata").map(String::as_str) != Some("true")
            || r.query.get("resource").map(String::as_str) != Some("https://management.azure.com/")
        {
            return Response::json(
                400,
                r#"{"error":"invalid_request","error_description":"bad"}"#,
            );
        }
        Response::json(
            200,
            &format!(r#"{{"access_token":"{token}","expires_in":"3599"}}"#),
        )
    })
}

fn settings() -> CapturesConfig {
    CapturesConfig {
        subscription: "subid".into(),
        location: "eastus".into(),
        watcher: "NetworkWatcher_eastus".into(),
        targets: vec![VM.into()],
        time_limit: 100,
        renew_before: 20,
        ..CapturesConfig::default()
    }
}

fn manager(arm_url: &str, token_url: &str, sleeps: Arc<Mutex<Vec<Duration>>>) -> Manager {
    let tokens = Tokens::new(
        Identity::Managed {
            endpoint: token_url.into(),
            client_id: None,
        },
        "https://management.azure.com/",
    );
    let arm = Arm::new(arm_url, "2024-05-01", tokens)
        .unwrap()
        .with_sleep(move |d| sleeps.lock().unwrap().push(d));
    Manager::new(arm, settings())
}

#[test]
fn the_client_follows_the_documented_contract() {
    let standin = ArmStandIn::start(TOKEN);
    let token = imds(TOKEN);
    let sleeps = Arc::new(Mutex::new(Vec::new()));
    let mut m = manager(&standin.url, &token.url, sleeps.clone());
    let log = |s: &ArmStandIn| std::mem::take(&mut s.state.lock().unwrap().log);
    let slept = || std::mem::take(&mut *sleeps.lock().unwrap());

    // No watcher yet: created.
    m.ensure_watcher().unwrap();
    assert_eq!(m.events, [Event::WatcherCreated]);
    let l = log(&standin);
    assert!(
        l[0].starts_with("GET ") && l[1].starts_with("PUT "),
        "{l:?}"
    );

    // Create: 201 + Azure-AsyncOperation (Retry-After 2), polled to Succeeded.
    m.create("pc1", VM).unwrap();
    let l = log(&standin);
    assert_eq!(
        l.iter().filter(|x| x.contains("/operations/")).count(),
        2,
        "{l:?}"
    );
    assert!(l.last().unwrap().ends_with("/packetCaptures/pc1"), "{l:?}");
    assert_eq!(slept()[0], Duration::from_secs(2));
    let list = m.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].target.as_str()),
        ("pc1", VM)
    );
    assert_eq!(list[0].provisioning, "Succeeded");

    // queryStatus: 200 at once.
    standin.set_now(10);
    assert_eq!(m.status("pc1").unwrap().status, "Running");
    // The published 202 with its malformed Location: the provisional body
    // (it says Stopped) is not believed; the status is asked again.
    standin.state.lock().unwrap().malformed_status = 1;
    log(&standin);
    let st = m.status("pc1").unwrap();
    assert_eq!(st.status, "Running");
    assert!(m.arm.stats.bad_locations >= 1);
    assert_eq!(log(&standin).len(), 2, "asked twice");
    assert!(
        slept().contains(&Duration::from_secs(3)),
        "Retry-After honoured"
    );
    // A 202 with a proper Location: polled until it gives the result.
    standin.state.lock().unwrap().status_via_location = 1;
    assert_eq!(m.status("pc1").unwrap().status, "Running");
    assert!(log(&standin)
        .iter()
        .any(|x| x.contains("/operationresults/")));

    // Stop (202 + Location, polled), then the status says so.
    m.stop("pc1").unwrap();
    let st = m.status("pc1").unwrap();
    assert_eq!(
        (st.status.as_str(), st.stop_reason.as_deref()),
        ("Stopped", Some("Manual"))
    );
    assert!(st.start.is_some());
    // Delete (202 + Location, then 204); deleting again is fine.
    m.delete("pc1").unwrap();
    m.delete("pc1").unwrap();
    assert!(m.list().unwrap().is_empty());

    // Throttling with Retry-After, then a transient 503: retried.
    {
        let mut s = standin.state.lock().unwrap();
        s.inject.push_back(Inject {
            method: "GET",
            suffix: "/packetCaptures",
            status: 429,
            retry_after: Some(7),
        });
        s.inject.push_back(Inject {
            method: "GET",
            suffix: "/packetCaptures",
            status: 503,
            retry_after: None,
        });
    }
    slept();
    assert!(m.list().unwrap().is_empty());
    assert_eq!(slept(), [Duration::from_secs(7), m.arm.policy.backoff * 2]);
    assert_eq!((m.arm.stats.throttled, m.arm.stats.server_errors), (1, 1));
    // Throttled for longer than the retries last: a clear error.
    for _ in 0..m.arm.policy.tries {
        standin.state.lock().unwrap().inject.push_back(Inject {
            method: "GET",
            suffix: "/packetCaptures",
            status: 429,
            retry_after: Some(1),
        });
    }
    let e = m.list().unwrap_err().to_string();
    assert!(e.contains("HTTP 429"), "{e}");

    // A token the API refuses: 401, and the token is not in the error.
    let wrong = imds("not-the-token-xyz");
    let mut w = manager(&standin.url, &wrong.url, Arc::default());
    let e = w.list().unwrap_err().to_string();
    assert!(
        e.contains("HTTP 401") && !e.contains("not-the-token-xyz"),
        "{e}"
    );
}

/// The test's traffic: a synthetic capture spread evenly over `span` seconds
/// from `t0` (seconds).
fn traffic(dir: &Path, t0: u64, span: u64) -> Vec<Frame> {
    let cap = synth_cap(dir, 60_000);
    let bytes = std::fs::read(cap).unwrap();
    let mut r = CaptureReader::open(std::io::Cursor::new(&bytes[..])).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        v.push(Frame {
            ts_ns: 0,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
            linktype: p.linktype,
        });
    }
    let n = v.len() as u64;
    for (i, f) in v.iter_mut().enumerate() {
        f.ts_ns = t0 * 1_000_000_000 + i as u64 * span * 1_000_000_000 / n;
    }
    v
}

fn replay_frames(frames: &[Frame], dir: &Path) -> Vec<FlowRecord> {
    let path = write(dir, "expected.pcap", &pcap(frames, false, true));
    let mut sink = VecSink::default();
    let r = vmflow::capture::replay(vec![path], &Config::default(), &mut sink);
    assert!(r.error.is_none());
    sink.0
}

fn canon(v: Vec<FlowRecord>) -> Vec<FlowRecord> {
    let mut v: Vec<FlowRecord> = v
        .into_iter()
        .map(|mut r| {
            if r.end_reason == EndReason::Shutdown {
                r.end_reason = EndReason::EndOfInput;
            }
            r.gap = false;
            r
        })
        .collect();
    v.sort();
    v
}

struct Timeline {
    got: Vec<FlowRecord>,
    want: Vec<FlowRecord>,
    src: FolderSource,
    m: Manager,
    caps: BTreeMap<String, Cap>,
    /// Packets recorded by more than one capture (each extra copy counted).
    extra_copies: u64,
}

/// Runs the manager over 600 virtual seconds against the stand-in, writes
/// the files its captures recorded, and reads them back as the agent would.
fn timeline(refuse: bool) -> Timeline {
    let d = tempfile::tempdir().unwrap();
    let (t0, span, delay) = (1_760_000_000u64, 600u64, 2u64);
    let frames = traffic(d.path(), t0, span);
    let standin = ArmStandIn::start(TOKEN);
    {
        let mut s = standin.state.lock().unwrap();
        s.refuse_concurrent = refuse;
        s.startup_delay = delay;
        // Throttling and a server error along the way.
        s.inject.push_back(Inject {
            method: "PUT",
            suffix: "",
            status: 429,
            retry_after: Some(4),
        });
        s.inject.push_back(Inject {
            method: "POST",
            suffix: "/queryStatus",
            status: 500,
            retry_after: None,
        });
    }
    let token = imds(TOKEN);
    let clock = standin.now.clone();
    let mut m = manager(&standin.url, &token.url, Arc::default())
        .with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
    let end = t0 + span;
    let mut t = t0;
    while t <= end {
        standin.set_now(t);
        m.tick().unwrap();
        t += 5;
    }
    let caps = standin.state.lock().unwrap().caps.clone();
    // Each capture recorded the traffic while it ran (after its start-up).
    let folder = d.path().join("captures");
    std::fs::create_dir_all(&folder).unwrap();
    let mut copies: BTreeMap<usize, u64> = BTreeMap::new();
    for c in caps.values() {
        let (from, to) = (
            (c.created + delay) * 1_000_000_000,
            c.end().min(end) * 1_000_000_000,
        );
        let mine: Vec<Frame> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.ts_ns >= from && f.ts_ns < to)
            .map(|(i, f)| {
                *copies.entry(i).or_default() += 1;
                f.clone()
            })
            .collect();
        if !mine.is_empty() {
            write(
                &folder,
                &format!("{}.cap", c.name),
                &pcap(&mine, false, true),
            );
        }
    }
    let covered: Vec<Frame> = copies.keys().map(|&i| frames[i].clone()).collect();
    let want = replay_frames(&covered, d.path());
    let extra_copies = copies.values().map(|n| n - 1).sum();

    let f = FolderConfig {
        path: folder.clone(),
        max_silence: vmflow::config::Seconds(1.0),
        overlap_window: vmflow::config::Seconds(1.0),
        on_stop: OnStop::Finish,
        ..FolderConfig::default()
    };
    let mut src = FolderSource::new(f.clone(), FolderPosition::new(&f));
    let mut sink = VecSink::default();
    let opts = RunnerOptions {
        fs: vmflow::disk::real(),
        key: "folder:t".into(),
        checkpoint: d.path().join("ck"),
        poll: Duration::from_millis(1),
        interval: Duration::from_secs(3600),
        on_stop: OnStop::Finish,
        live: None,
        observer: None,
    };
    let rep = runner::run(
        &Config::default(),
        &mut src,
        None,
        &mut sink,
        &opts,
        &AtomicBool::new(true),
    );
    assert!(rep.report.error.is_none());
    Timeline {
        got: sink.0,
        want,
        src,
        m,
        caps,
        extra_copies,
    }
}

#[test]
fn renewals_overlap_so_nothing_is_missed_or_counted_twice() {
    let t = timeline(false);
    // Captures start at t0, t0+80 s, …, t0+560 s: 100 s each, renewed 20 s early.
    let renewals = t.m.stats.renewed;
    assert_eq!((t.m.stats.started, renewals), (8, 7), "{:?}", t.m.stats);
    assert_eq!(t.m.stats.refused, 0);
    assert_eq!(t.m.stats.gaps, 0, "{:?}", t.m.events);
    assert!(t.m.arm.stats.throttled >= 1 && t.m.arm.stats.server_errors >= 1);
    // Finished captures were deleted; only the running one is left.
    let alive: Vec<_> = t.caps.values().filter(|c| !c.deleted).collect();
    assert_eq!(alive.len(), 1, "{alive:?}");
    // Every packet once: the overlaps were recognised packet by packet.
    let seq = &t.src.pos.sequence;
    assert!(
        t.extra_copies > 1_000,
        "overlaps hold packets: {}",
        t.extra_copies
    );
    assert_eq!(seq.stats.duplicates, t.extra_copies);
    assert_eq!(seq.stats.gaps, 0);
    assert_eq!(seq.covered.len(), 1, "one covered span: {:?}", seq.covered);
    assert!(t.got.iter().all(|r| !r.gap));
    assert_eq!(t.got.len(), t.want.len());
    assert!(canon(t.got) == canon(t.want));
}

#[test]
fn a_refused_overlap_renews_at_once_and_reports_each_gap() {
    let t = timeline(true);
    let renewals = t.m.stats.refused;
    assert_eq!(renewals, 7, "{:?}", t.m.stats);
    let gaps =
        t.m.events
            .iter()
            .filter(|e| matches!(e, Event::Gap { .. }))
            .count() as u64;
    assert_eq!(gaps, renewals);
    // The reader finds the same gaps in packet time, marks the flows open
    // across them, and counts nothing twice.
    let seq = &t.src.pos.sequence;
    assert_eq!(seq.stats.gaps, renewals);
    assert_eq!(seq.stats.duplicates, 0);
    assert_eq!(t.extra_copies, 0);
    assert!(t.got.iter().any(|r| r.gap));
    assert!(canon(t.got) == canon(t.want));
}

#[test]
fn the_command_line_keeps_captures_running_on_the_wall_clock() {
    let d = tempfile::tempdir().unwrap();
    let standin = ArmStandIn::start(TOKEN);
    standin.state.lock().unwrap().wall_clock = true;
    let token = imds(TOKEN);
    let cfg = write(
        d.path(),
        "azure.toml",
        format!(
            "[azure]\nimds_endpoint = {:?}\n[azure.captures]\nendpoint = {:?}\nsubscription = \"subid\"\n\
             location = \"eastus\"\ntargets = [{VM:?}]\ntime_limit = 8\nrenew_before = 5\npoll_interval = 0.2\n",
            token.url, standin.url
        )
        .as_bytes(),
    );
    let out = run(vmflow()
        .args(["azure", "captures", "ensure-watcher", "--config"])
        .arg(&cfg));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(standin.state.lock().unwrap().watcher.is_some());

    let mut p = common::agents::Proc::spawn(
        vmflow()
            .args(["azure", "captures", "run", "--config"])
            .arg(&cfg),
    );
    // Until a capture has run out its time, been replaced and been deleted.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = standin.state.lock().unwrap();
        if s.caps.values().any(|c| c.deleted) && s.caps.len() >= 2 {
            break;
        }
        drop(s);
        assert!(std::time::Instant::now() < deadline, "{}", p.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(p.wait(Duration::from_secs(30)), "{}", p.text());
    assert!(
        p.text().contains("capture lifecycle stopped"),
        "{}",
        p.text()
    );
    let caps = standin.state.lock().unwrap().caps.clone();
    // The successor started before its predecessor stopped.
    let mut v: Vec<&Cap> = caps.values().collect();
    v.sort_by_key(|c| c.created);
    assert!(v[1].created < v[0].end(), "{v:?}");
    let out = run(vmflow()
        .args(["azure", "captures", "list", "--config"])
        .arg(&cfg));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().all(|l| l.starts_with("vmflow-vm1-")), "{text}");
    assert!(!text.is_empty());
}

#[test]
fn continuous_capture_is_used_when_available_and_renewal_when_not() {
    for refuse in [false, true] {
        let standin = ArmStandIn::start(TOKEN);
        standin.state.lock().unwrap().refuse_continuous = refuse;
        let token = imds(TOKEN);
        let clock = standin.now.clone();
        let mut m = manager(&standin.url, &token.url, Arc::default())
            .with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
        m.settings.continuous = true;
        m.settings.time_limit = 86_400;
        standin.set_now(1_000);
        m.tick().unwrap();
        let caps = standin.state.lock().unwrap().caps.clone();
        let c = caps.values().next().expect("a capture");
        let p = &c.props;
        if refuse {
            assert_eq!(m.stats.continuous_refused, 1);
            assert!(p.get("continuousCapture").is_none());
            assert_eq!(p["timeLimitInSeconds"], 18_000);
            assert!(p["storageLocation"]["filePath"]
                .as_str()
                .unwrap()
                .starts_with("/var/captures/"));
        } else {
            assert_eq!(m.stats.continuous_refused, 0);
            assert_eq!(p["continuousCapture"], true);
            assert_eq!(p["captureSettings"]["sessionTimeLimitInSeconds"], 86_400);
            assert_eq!(p["captureSettings"]["fileCount"], 10);
            assert!(p["storageLocation"]["localPath"]
                .as_str()
                .unwrap()
                .starts_with("/var/captures/"));
        }
    }
}

/// Off Azure the instance metadata service does not answer: the command
/// says this is likely not an Azure VM and which settings work instead,
/// rather than only the socket's error. (A loopback port nothing listens
/// on stands in for 169.254.169.254, which is unreachable off Azure but
/// answers on an Azure build machine.)
#[test]
fn off_azure_the_commands_say_so_and_what_to_configure_instead() {
    let d = tempfile::tempdir().unwrap();
    let nobody = common::agents::free_port();
    let cfg = write(
        d.path(),
        "azure.toml",
        format!("[azure]\nimds_endpoint = \"http://{nobody}\"\n[azure.captures]\n").as_bytes(),
    );
    let t0 = std::time::Instant::now();
    let out = run(vmflow()
        .args(["azure", "captures", "list", "--config"])
        .arg(&cfg));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not running on an Azure VM")
            && err.contains(&format!("instance metadata service (http://{nobody})"))
            && err.contains("subscription, location and targets")
            && err.contains("service_principal"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Refused at once, not after retries.
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());

    // With everything but the identity given, the managed identity's token
    // is what fails, and the advice is about the identity.
    let standin = ArmStandIn::start(TOKEN);
    let cfg = write(
        d.path(),
        "azure2.toml",
        format!(
            "[azure]\nimds_endpoint = \"http://{nobody}\"\n[azure.captures]\nendpoint = {:?}\n\
             subscription = \"subid\"\nlocation = \"eastus\"\ntargets = [{VM:?}]\n",
            standin.url
        )
        .as_bytes(),
    );
    let t0 = std::time::Instant::now();
    let out = run(vmflow()
        .args(["azure", "captures", "list", "--config"])
        .arg(&cfg));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // Not retried for minutes as if the service were throttling.
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(
        err.contains("managed identity token")
            && err.contains("not running on an Azure VM")
            && err.contains("client_secret_file")
            && err.contains("sas_token_file"),
        "{err}"
    );
}
