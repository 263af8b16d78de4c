//! The Blob storage source against Azurite (the real emulator): capture
//! blobs listed over several pages, read in capture order, deleted once
//! checkpointed; a wrong or expired SAS is a clear error that leaks nothing
//! and skips nothing; the agent killed hard mid-listing resumes exactly; a
//! blob deleted under the agent is a reported gap.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agents::*;
use common::azurite::*;
use common::http_stub::{parse_form, Response, Stub};
use common::*;
use vmflow::azure::auth::{Identity, Tokens};
use vmflow::azure::blob::{BlobAuth, BlobClient};
use vmflow::config::{BlobConfig, Config};
use vmflow::export::VecSink;
use vmflow::follow::blob::{BlobPosition, BlobSource};
use vmflow::follow::{FollowedSource, Step};
use vmflow::pipeline::{run_inline, InlineOptions};
use vmflow_proto::FlowRecord;

const PREFIX: &str =
    "subscriptions/sub1/resourcegroups/rg1/providers/microsoft.compute/virtualmachines/vm1/";

/// A libpcap file cut into `n` files at record boundaries.
fn cut(pcap: &[u8], n: usize) -> Vec<Vec<u8>> {
    let header = &pcap[..24];
    let mut recs = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        recs.push(&pcap[at..at + 16 + incl]);
        at += 16 + incl;
    }
    let per = recs.len().div_ceil(n);
    recs.chunks(per)
        .map(|c| {
            let mut v = header.to_vec();
            for r in c {
                v.extend_from_slice(r);
            }
            v
        })
        .collect()
}

/// Network Watcher's blob name for the i-th capture of the day.
fn blob_name(i: usize) -> String {
    format!(
        "{PREFIX}2025/01/31/packetcapture_16_{:02}_00_000.cap",
        10 + i
    )
}

fn client(az: &Azurite, sas: &str) -> BlobClient {
    BlobClient::new(
        &az.account_url,
        "network-watcher-logs",
        BlobAuth::Sas(sas.into()),
    )
    .unwrap()
}

/// A client with bearer tokens, trusting the HTTPS Azurite's CA.
fn bearer_client(az: &Azurite, tokens: Tokens, ca: &[u8]) -> BlobClient {
    BlobClient::new(
        &az.account_url,
        "network-watcher-logs",
        BlobAuth::Bearer(tokens),
    )
    .unwrap()
    .trusting(ca)
    .unwrap()
}

fn upload_all(az: &Azurite, parts: &[Vec<u8>]) {
    let mut c = client(az, &full_sas());
    c.create_container().unwrap();
    // Uploaded out of order: the order comes from the names.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.reverse();
    order.swap(0, parts.len() / 2);
    for i in order {
        c.upload(&blob_name(i), &parts[i]).unwrap();
    }
    c.upload(&format!("{PREFIX}README.txt"), b"not a capture")
        .unwrap();
}

const FLOW: &str = "[flow]\nidle_timeout = 0.02\nhalf_open_timeout = 0.02\ntcp_linger = 0.001\n";

fn replay_with_flow(dir: &Path, caps: &[PathBuf]) -> BTreeMap<String, u64> {
    let flow_cfg = write(dir, "flow.toml", FLOW.as_bytes());
    let out = run(vmflow()
        .arg("replay")
        .arg("--config")
        .arg(&flow_cfg)
        .args(caps));
    assert!(out.status.success());
    multiset(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn blobs_over_pages_survive_bad_credentials_and_a_hard_kill() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let cap = synth_cap(dir, 400_000);
    let parts = cut(&std::fs::read(&cap).unwrap(), 8);
    upload_all(&az, &parts);
    let want = replay_with_flow(dir, &[cap]);

    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let sas_file = dir.join("sas");
    let source = format!(
        "{FLOW}[source.blob]\naccount_url = {:?}\ncontainer = \"network-watcher-logs\"\nprefix = {PREFIX:?}\n\
         sas_token_file = {sas_file:?}\npage_size = 3\npoll_interval = 0.05\nreorder_window = 0\nafter = \"delete\"\n\
         checkpoint_interval = 0.02\non_stop = \"finish\"\nshutdown_grace = 60\n",
        az.account_url
    );
    let cfg = agent_config_with(
        dir,
        "a",
        &source,
        &certs,
        "agent-1",
        &addr,
        "batch_records = 64\n",
    );

    // A SAS signed with another key, then an expired one: clear errors that
    // do not show the token, and nothing read or deleted.
    let other_key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";
    for (sas, what) in [
        (
            account_sas("rwdlac", "2099-01-01T00:00:00Z", other_key),
            "wrong key",
        ),
        (
            account_sas("rwdlac", "2020-01-01T00:00:00Z", KEY),
            "expired",
        ),
    ] {
        std::fs::write(&sas_file, &sas).unwrap();
        // Even at the most verbose log level.
        let mut a = Proc::spawn(
            vmflow()
                .env("RUST_LOG", "trace")
                .arg("run")
                .arg("--config")
                .arg(&cfg),
        );
        let line = a.wait_line(
            "list container network-watcher-logs: HTTP 403",
            Duration::from_secs(60),
        );
        a.kill();
        let sig = sas.split("sig=").nth(1).unwrap();
        assert!(
            !a.text().contains(sig),
            "{what}: the signature leaked: {line}"
        );
        assert!(!a.text().contains(": reading"), "{what}: {}", a.text());
    }
    let left = client(&az, &full_sas()).list(PREFIX, None).unwrap();
    assert_eq!(left.len(), 9, "nothing skipped or deleted");

    // The right SAS: killed hard once a checkpoint let it delete the first
    // blob, with blobs of the listing still to read; restarted.
    std::fs::write(&sas_file, full_sas()).unwrap();
    let mut a = agent(&cfg);
    let mut c = client(&az, &full_sas());
    let first = blob_name(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c
        .list(PREFIX, None)
        .unwrap()
        .iter()
        .any(|b| b.name == first)
    {
        assert!(std::time::Instant::now() < deadline, "{}", a.text());
        std::thread::sleep(Duration::from_millis(2));
    }
    a.kill();
    let read_by_a = a.text().matches(": reading").count();
    assert!(read_by_a < 8, "killed before the last blob: {}", a.text());
    let mut b = agent(&cfg);
    b.wait_line(
        &format!("blob {}: reading", blob_name(7)),
        Duration::from_secs(60),
    );
    b.sigterm();
    assert!(b.wait(Duration::from_secs(120)), "{}", b.text());
    let text = b.text();
    assert!(text.contains("resuming from"), "{text}");
    assert!(text.contains(": reading"), "{text}");
    assert_eq!(stat(&text, "coverage.gaps"), 0, "{text}");
    assert_eq!(stat(&text, "coverage.duplicates"), 0, "{text}");
    let got = as_replayed(collected(&out, "agent-1"));
    assert_eq!(got.values().sum::<u64>(), want.values().sum::<u64>());
    assert!(got == want, "collector records differ from the replay");
    // Every capture blob was deleted after it was read; the rest stays.
    let left = client(&az, &full_sas()).list(PREFIX, None).unwrap();
    let names: Vec<_> = left.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, [format!("{PREFIX}README.txt").as_str()]);
}

#[test]
fn a_blob_deleted_under_the_agent_is_a_gap() {
    let d = tempfile::tempdir().unwrap();
    let az = Azurite::start();
    let cap = synth_cap(d.path(), 30_000);
    let parts = cut(&std::fs::read(&cap).unwrap(), 5);
    upload_all(&az, &parts);
    let paths: Vec<PathBuf> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| write(d.path(), &format!("p{i}.cap"), p))
        .collect();

    let b = BlobConfig {
        account_url: az.account_url.clone(),
        prefix: PREFIX.into(),
        page_size: Some(2),
        poll_interval: vmflow::config::Seconds(3600.0),
        reorder_window: vmflow::config::Seconds(0.0),
        ..BlobConfig::default()
    };
    let cfg = Config::default();
    let mut src = BlobSource::new(
        b.clone(),
        client(&az, &full_sas()),
        BlobPosition::new(&b),
        d.path().join("dl"),
    )
    .unwrap();
    let mut sink = VecSink::default();
    let opts = InlineOptions::default();
    let report = run_inline(&cfg, &mut sink, opts, |feed| {
        // The listing and the first download; then blob 2 goes away.
        assert_eq!(src.step(feed)?, Step::Progress);
        assert!(client(&az, &full_sas()).delete(&blob_name(2)).unwrap());
        while src.step(feed)? == Step::Progress {}
        Ok::<_, vmflow::follow::FollowError>(())
    });
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(src.stats.vanished, 1);
    assert_eq!(src.stats.downloaded, 4);
    let seq = &src.sequence();
    assert_eq!(seq.stats.gaps, 1);
    assert!(
        seq.gaps[0].reason.contains("deleted before it was read"),
        "{:?}",
        seq.gaps
    );
    let got: Vec<FlowRecord> = sink.0;
    assert!(
        got.iter().any(|r| r.gap),
        "flows open across the gap are marked"
    );
    // Apart from the marks, the records are those of the blobs that were there.
    let mut without = VecSink::default();
    let kept: Vec<PathBuf> = paths
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, p)| p.clone())
        .collect();
    vmflow::capture::replay(kept, &cfg, &mut without);
    let mut a: Vec<FlowRecord> = got
        .into_iter()
        .map(|mut r| {
            r.gap = false;
            r
        })
        .collect();
    let mut b = without.0;
    a.sort();
    b.sort();
    assert!(a == b);
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An Entra ID-shaped access token for storage (Azurite checks issuer,
/// audience and lifetime; the signature is the real service's business).
fn jwt(lifetime: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let payload = serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": "https://sts.windows.net/ab1f708d-50f6-404c-a006-d71b2ac7a606/",
        "iat": now - 60, "nbf": now - 60, "exp": now + lifetime,
        "oid": "00000000-0000-0000-0000-000000000001",
        "tid": "ab1f708d-50f6-404c-a006-d71b2ac7a606",
    });
    format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(payload.to_string().as_bytes()),
        b64url(b"signature")
    )
}

#[test]
fn bearer_tokens_from_a_managed_identity_or_a_service_principal_reach_storage() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &[]);
    let az = Azurite::start_https(
        &certs.join("collector.pem"),
        &certs.join("collector-key.pem"),
    );
    assert!(az.account_url.starts_with("https://"), "{}", az.account_url);
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut setup = BlobClient::new(
        &az.account_url,
        "network-watcher-logs",
        BlobAuth::Sas(full_sas()),
    )
    .unwrap()
    .trusting(&ca)
    .unwrap();
    setup.create_container().unwrap();
    setup.upload(&blob_name(0), b"capture bytes").unwrap();

    // Stand-in for the instance metadata service (no real one runs off
    // Azure): numbers as strings, `Metadata: true` required.
    let token = jwt(3600);
    let asked = Arc::new(AtomicUsize::new(0));
    let (t, n) = (token.clone(), asked.clone());
    let imds = Stub::start(move |r| {
        n.fetch_add(1, Ordering::SeqCst);
        if r.headers.get("metadata").map(String::as_str) != Some("true") {
            return Response::json(
                400,
                r#"{"error":"bad_request_102","error_description":"Required metadata header not specified"}"#,
            );
        }
        if r.path != "/metadata/identity/oauth2/token"
            || r.query.get("resource").map(String::as_str) != Some("https://storage.azure.com/")
            || !r.query.contains_key("api-version")
        {
            return Response::json(
                400,
                r#"{"error":"invalid_resource","error_description":"bad"}"#,
            );
        }
        Response::json(
            200,
            &format!(
                r#"{{"access_token":"{t}","refresh_token":"","expires_in":"3599","expires_on":"1999999999","not_before":"1","resource":"https://storage.azure.com/","token_type":"Bearer"}}"#
            ),
        )
    });
    let managed = Tokens::new(
        Identity::Managed {
            endpoint: imds.url.clone(),
            client_id: None,
        },
        "https://storage.azure.com/",
    );
    let mut c = bearer_client(&az, managed, &ca);
    let names: Vec<String> = c
        .list(PREFIX, None)
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, [blob_name(0)]);
    let local = d.path().join("dl.cap");
    assert!(c.download(&blob_name(0), &local).unwrap().is_some());
    assert_eq!(std::fs::read(&local).unwrap(), b"capture bytes");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the token is cached");

    // A service principal: client credentials at the token endpoint.
    let t = token.clone();
    let login = Stub::start(move |r| {
        let f = parse_form(std::str::from_utf8(&r.body).unwrap_or(""));
        let ok = r.method == "POST"
            && r.path == "/tenant-1/oauth2/v2.0/token"
            && f.get("grant_type").map(String::as_str) == Some("client_credentials")
            && f.get("client_id").map(String::as_str) == Some("app-1")
            && f.get("scope").map(String::as_str) == Some("https://storage.azure.com/.default");
        if !ok {
            return Response::json(
                400,
                r#"{"error":"invalid_request","error_description":"AADSTS900144: bad request"}"#,
            );
        }
        if f.get("client_secret").map(String::as_str) != Some("s3cret-value") {
            return Response::json(
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
            );
        }
        Response::json(
            200,
            &format!(r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"{t}"}}"#),
        )
    });
    let sp = |secret: &str| {
        let tokens = Tokens::new(
            Identity::ServicePrincipal {
                authority: login.url.clone(),
                tenant: "tenant-1".into(),
                client_id: "app-1".into(),
                secret: secret.into(),
            },
            "https://storage.azure.com/",
        );
        bearer_client(&az, tokens, &ca)
    };
    assert_eq!(sp("s3cret-value").list(PREFIX, None).unwrap().len(), 1);
    let e = sp("wrong-secret-value")
        .list(PREFIX, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid_client") && e.contains("401"), "{e}");
    assert!(!e.contains("wrong-secret-value"), "{e}");

    // An expired token: storage refuses it, and the error does not show it.
    let old = jwt(-600);
    let o = old.clone();
    let imds_old = Stub::start(move |_| {
        Response::json(
            200,
            &format!(r#"{{"access_token":"{o}","expires_in":"3599"}}"#),
        )
    });
    let tokens = Tokens::new(
        Identity::Managed {
            endpoint: imds_old.url.clone(),
            client_id: None,
        },
        "https://storage.azure.com/",
    );
    let e = bearer_client(&az, tokens, &ca)
        .list(PREFIX, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401") || e.contains("HTTP 403"), "{e}");
    assert!(!e.contains(&old), "{e}");
}

// ---- issue 10: nothing lost, nothing doubled, nothing leaked --------------

/// Network Watcher's blob name for capture `n` of 2 December 2026.
fn nw_name(n: usize) -> String {
    format!("{PREFIX}2026/12/02/packetcapture_10_{n:02}_00_000.cap")
}

/// Packets in a libpcap file.
fn records_in(pcap: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        n += 1;
    }
    n
}

/// SAS; `extra` goes under `[source.blob]`.
fn blob_agent_config(
    dir: &Path,
    name: &str,
    account_url: &str,
    extra: &str,
    certs: &Path,
    collector: &str,
) -> PathBuf {
    let sas_file = dir.join("sas");
    std::fs::write(&sas_file, full_sas()).unwrap();
    let source = format!(
        "{FLOW}[source.blob]\naccount_url = {account_url:?}\ncontainer = \"network-watcher-logs\"\n\
         prefix = {PREFIX:?}\nsas_token_file = {sas_file:?}\n{extra}"
    );
    agent_config_with(
        dir,
        name,
        &source,
        certs,
        "agent-1",
        collector,
        "batch_records = 64\n",
    )
}

/// Waits for a stderr line that contains `all` and one of `any`.
/// A collector, an agent configuration following the container with the
/// source `settings`, and a client that created the container.
fn blob_rig(dir: &Path, az: &Azurite, settings: &str) -> (Proc, PathBuf, PathBuf, BlobClient) {
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cfg = blob_agent_config(dir, "a", &az.account_url, settings, &certs, &addr);
    let mut c = client(az, &full_sas());
    c.create_container().unwrap();
    (collector, out, cfg, c)
}

fn wait_any(p: &Proc, all: &str, any: &[&str], limit: Duration) -> String {
    let (m, c) = &*p.lines;
    let deadline = std::time::Instant::now() + limit;
    let mut g = m.lock().unwrap();
    loop {
        if let Some(l) = g
            .iter()
            .find(|l| l.contains(all) && any.iter().any(|a| l.contains(a)))
        {
            return l.clone();
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no line with {all:?} and one of {any:?} in:\n{}",
            g.join("\n")
        );
        g = c.wait_timeout(g, left).unwrap().0;
    }
}

/// Waits until `n` stderr lines contain `needle`.
fn wait_count(p: &Proc, needle: &str, n: usize, limit: Duration) {
    let (m, c) = &*p.lines;
    let deadline = std::time::Instant::now() + limit;
    let mut g = m.lock().unwrap();
    while g.iter().filter(|l| l.contains(needle)).count() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "fewer than {n} lines with {needle:?} in:\n{}",
            g.join("\n")
        );
        g = c.wait_timeout(g, left).unwrap().0;
    }
}

/// Issue 10 #12: the SAS never reaches the log, even with a module-level
/// filter for the HTTP client (more specific than any directive of ours)
/// or everything at trace, on a run that lists, downloads and deletes.
#[test]
fn the_sas_signature_never_reaches_the_log_whatever_rust_log_says() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let cap = synth_cap(dir, 2_000);
    let bytes = std::fs::read(&cap).unwrap();
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let mut c = client(&az, &full_sas());
    c.create_container().unwrap();
    let sas = full_sas();
    let sig = sas.split("sig=").nth(1).unwrap().to_string();
    let decoded = common::http_stub::percent_decode(&sig);
    for (i, filter) in ["ureq::util=trace,ureq::run=trace", "trace"]
        .into_iter()
        .enumerate()
    {
        c.upload(&nw_name(1), &bytes).unwrap();
        let cfg = blob_agent_config(
            dir,
            &format!("leak{i}"),
            &az.account_url,
            "poll_interval = 0.05\nreorder_window = 0\ncheckpoint_interval = 0.02\n\
             after = \"delete\"\nshutdown_grace = 0\n",
            &certs,
            "127.0.0.1:9",
        );
        let mut a = Proc::spawn(
            vmflow()
                .env("RUST_LOG", filter)
                .arg("run")
                .arg("--config")
                .arg(&cfg),
        );
        // Listed, downloaded, read, checkpointed and deleted.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while c
            .list(PREFIX, None)
            .unwrap()
            .iter()
            .any(|b| b.name == nw_name(1))
        {
            let running = a.child.try_wait().unwrap().is_none();
            assert!(
                running && std::time::Instant::now() < deadline,
                "{}",
                a.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        a.kill();
        let text = a.text();
        assert!(
            !text.contains(&sig) && !text.contains(&decoded),
            "RUST_LOG={filter}: the signature leaked ({} lines)",
            text.lines().filter(|l| l.contains(&sig)).count()
        );
    }
}

/// Issue 10 #13: listing errors back off (from a second or poll_interval,
/// doubling, capped) instead of retrying every 50 ms, are logged once, and a
/// recovery is reported with the number of failed attempts.
#[test]
fn listing_errors_back_off_and_are_logged_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    // Nothing ships: the collector is not needed here.
    let nowhere = "127.0.0.1:9";

    // A closed port, with poll_interval = 30.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg_closed = blob_agent_config(
        dir,
        "closed",
        &format!("http://127.0.0.1:{closed}/{ACCOUNT}"),
        "poll_interval = 30\nshutdown_grace = 0\n",
        &certs,
        nowhere,
    );
    // A server answering 500 until it is told to recover, with a short
    // poll_interval: the backoff starts near a second and doubles.
    let requests = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(false));
    let (n, ok) = (requests.clone(), healthy.clone());
    let stub = Stub::start(move |_| {
        n.fetch_add(1, Ordering::SeqCst);
        if ok.load(Ordering::SeqCst) {
            return Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/xml".into())],
                body: "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Blobs/><NextMarker/></EnumerationResults>".into(),
            };
        }
        Response {
            status: 500,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InternalError</Code><Message>The server encountered an internal error.</Message></Error>".into(),
        }
    });
    let cfg_500 = blob_agent_config(
        dir,
        "stub",
        &format!("{}/{ACCOUNT}", stub.url),
        "poll_interval = 0.1\nshutdown_grace = 0\n",
        &certs,
        nowhere,
    );
    let mut a = agent(&cfg_closed);
    let mut b = agent(&cfg_500);
    a.wait_line(
        "list container network-watcher-logs:",
        Duration::from_secs(60),
    );
    b.wait_line(
        "list container network-watcher-logs: HTTP 500",
        Duration::from_secs(60),
    );
    // Measured over a window: retries at about 0, 1 and 3 s (stub), and
    // none within 30 s after the first (closed port).
    std::thread::sleep(Duration::from_secs(4));
    let failed = requests.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&failed),
        "{failed} requests in 4 s:\n{}",
        b.text()
    );
    healthy.store(true, Ordering::SeqCst);
    let line = b.wait_line("recovered after", Duration::from_secs(30));
    assert!(line.contains("failed attempts"), "{line}");
    b.sigterm();
    assert!(b.wait(Duration::from_secs(60)), "{}", b.text());
    let text = b.text();
    assert_eq!(text.matches("HTTP 500").count(), 1, "{text}");
    assert!(
        requests.load(Ordering::SeqCst) > failed,
        "listing again after the recovery"
    );
    assert_eq!(stat(&text, "blob.errors"), failed as u64, "{text}");

    a.sigterm();
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let text = a.text();
    assert_eq!(
        text.matches("list container network-watcher-logs:").count(),
        1,
        "{text}"
    );
    assert_eq!(stat(&text, "blob.errors"), 1, "{text}");
}

/// Issue 10 #18: a blob that does not change is downloaded once however
/// often the container is listed, and one that grows is fetched again only
/// in its new bytes (a ranged GET): bytes transferred ≈ the capture size.
#[test]
fn unchanged_blobs_are_downloaded_once_and_a_grown_one_only_in_its_new_bytes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let cap = synth_cap(dir, 40_000);
    let whole = std::fs::read(&cap).unwrap();
    let parts = cut(&whole, 4);
    // The third blob, later grown by the fourth part's records.
    let mut grown = parts[2].clone();
    grown.extend_from_slice(&parts[3][24..]);
    let want = replay_with_flow(dir, &[cap]);
    let (_collector, out, cfg, mut c) = blob_rig(
        dir,
        &az,
        "poll_interval = 0.05\nreorder_window = 0\ncheckpoint_interval = 0.05\n\
         on_stop = \"finish\"\nshutdown_grace = 60\n",
    );
    for n in 1..=3 {
        c.upload(&nw_name(n), &parts[n - 1]).unwrap();
    }
    let mut a = agent(&cfg);
    let third = format!("blob {}: reading", nw_name(3));
    a.wait_line(&third, Duration::from_secs(60));
    // A second of listings every 50 ms with nothing new (the count is
    // checked below).
    std::thread::sleep(Duration::from_secs(1));
    c.upload(&nw_name(3), &grown).unwrap();
    wait_count(&a, &third, 2, Duration::from_secs(60));
    a.sigterm();
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    let text = a.text();
    assert!(stat(&text, "blob.listings") >= 5, "{text}");
    assert_eq!(stat(&text, "blob.downloaded"), 4, "{text}");
    let size = (parts[0].len() + parts[1].len() + grown.len()) as u64;
    let bytes = stat(&text, "blob.bytes");
    assert!(
        (size..=size + 4096).contains(&bytes),
        "{bytes} bytes transferred for {size}: {text}"
    );
    assert_eq!(stat(&text, "coverage.duplicates"), 0, "{text}");
    assert_eq!(stat(&text, "coverage.gaps"), 0, "{text}");
    let got = as_replayed(collected(&out, "agent-1"));
    assert!(got == want, "collector records differ from the replay");
}

/// Issue 10 #18: after a restart (no local copy of what was read) a blob
/// that grew is downloaded again but only its new packets are read; one
/// rewritten in place (same size, other bytes) is read again whole.
#[test]
fn a_grown_blob_after_a_restart_is_read_on_and_a_rewritten_one_again() {
    let d = tempfile::tempdir().unwrap();
    let az = Azurite::start();
    let cap = synth_cap(d.path(), 20_000);
    let parts = cut(&std::fs::read(&cap).unwrap(), 4);
    let mut grown = parts[2].clone();
    grown.extend_from_slice(&parts[3][24..]);
    let mut c = client(&az, &full_sas());
    c.create_container().unwrap();
    for n in 1..=3 {
        c.upload(&nw_name(n), &parts[n - 1]).unwrap();
    }
    let b = BlobConfig {
        account_url: az.account_url.clone(),
        prefix: PREFIX.into(),
        poll_interval: vmflow::config::Seconds(0.0),
        reorder_window: vmflow::config::Seconds(0.0),
        ..BlobConfig::default()
    };
    let cfg = Config::default();
    let drain = |src: &mut BlobSource| {
        let mut sink = VecSink::default();
        let opts = InlineOptions::default();
        let mut steps = 0;
        let report = run_inline(&cfg, &mut sink, opts, |feed| {
            while steps < 1000 && src.step(feed)? == Step::Progress {
                steps += 1;
            }
            Ok::<_, vmflow::follow::FollowError>(())
        });
        assert!(report.error.is_none(), "{:?}", report.error);
        // Idle once what is there is read (not fetching it over and over).
        assert!(steps < 1000, "{:?}", src.stats);
    };
    let source = |pos| {
        BlobSource::new(
            b.clone(),
            client(&az, &full_sas()),
            pos,
            d.path().join("dl"),
        )
        .unwrap()
    };
    let mut first = source(BlobPosition::new(&b));
    drain(&mut first);
    assert_eq!(first.stats.downloaded, 3);

    // Restarted from its position; the third blob grew meanwhile.
    c.upload(&nw_name(3), &grown).unwrap();
    let mut src = source(first.pos);
    drain(&mut src);
    let seq = src.sequence().stats;
    assert_eq!(src.stats.downloaded, 1);
    assert_eq!(src.stats.bytes, grown.len() as u64);
    assert_eq!(seq.packets, 20_000);
    assert_eq!(seq.duplicates, 0);

    // Rewritten in place: the last packet's last byte differs. Read again
    // whole (after the ranged look at its end): every other packet is a
    // duplicate, the changed one is new.
    let mut rewritten = grown.clone();
    let last = rewritten.len() - 1;
    rewritten[last] ^= 0xff;
    c.upload(&nw_name(3), &rewritten).unwrap();
    drain(&mut src);
    let n = records_in(&grown);
    let after = src.sequence().stats;
    assert_eq!(src.stats.downloaded, 3);
    assert_eq!(after.duplicates, n - 1);
    assert_eq!(after.packets, 20_001);
}

/// Issue 10 #17: blobs uploaded out of capture order (2,1,3,5,4,6) while the
/// agent follows the container are all read, in capture order, within the
/// reorder window: the records are exactly those of replaying all six.
#[test]
fn blobs_that_arrive_out_of_order_within_the_reorder_window_are_all_read() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let cap = synth_cap(dir, 60_000);
    let parts = cut(&std::fs::read(&cap).unwrap(), 6);
    let files: Vec<PathBuf> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| write(dir, &format!("p{}.cap", i + 1), p))
        .collect();
    let want = replay_with_flow(dir, &files);
    let (_collector, out, cfg, mut c) = blob_rig(
        dir,
        &az,
        "poll_interval = 0.1\nreorder_window = 3\ncheckpoint_interval = 0.05\n\
         on_stop = \"finish\"\nshutdown_grace = 60\n",
    );
    // Debug lines of the blob source say when a blob is first listed.
    let mut a = Proc::spawn(
        vmflow()
            .env("RUST_LOG", "info,vmflow::follow::blob=debug")
            .arg("run")
            .arg("--config")
            .arg(&cfg),
    );
    for n in [2, 1, 3, 5, 4, 6] {
        c.upload(&nw_name(n), &parts[n - 1]).unwrap();
        // The agent has seen it (holding it for the window, or reading it)
        // before the next one is uploaded.
        wait_any(
            &a,
            &format!("blob {}: ", nw_name(n)),
            &["reorder window", "reading"],
            Duration::from_secs(60),
        );
    }
    a.wait_line(
        &format!("blob {}: reading", nw_name(6)),
        Duration::from_secs(60),
    );
    a.sigterm();
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    let text = a.text();
    assert_eq!(stat(&text, "coverage.duplicates"), 0, "{text}");
    assert_eq!(stat(&text, "coverage.gaps"), 0, "{text}");
    assert_eq!(stat(&text, "blob.late"), 0, "{text}");
    assert_eq!(stat(&text, "blob.downloaded"), 6, "{text}");
    let got = as_replayed(collected(&out, "agent-1"));
    assert_eq!(got.values().sum::<u64>(), want.values().sum::<u64>());
    assert!(got == want, "collector records differ from the replay");
}

/// Issue 10 #17: a blob that arrives after a newer one was read (past the
/// reorder window) is not silently dropped: it is a reported coverage gap
/// with its packet count, not "duplicates", and it stays in the container
/// for `vmflow replay` even with `after = "delete"`.
#[test]
fn a_blob_that_arrives_after_the_reorder_window_is_a_reported_gap() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let cap = synth_cap(dir, 30_000);
    let parts = cut(&std::fs::read(&cap).unwrap(), 6);
    let (_collector, _out, cfg, mut c) = blob_rig(
        dir,
        &az,
        "poll_interval = 0.1\nreorder_window = 0.5\ncheckpoint_interval = 0.05\n\
         after = \"delete\"\non_stop = \"finish\"\nshutdown_grace = 60\n",
    );
    for n in [1, 2, 3, 5, 6] {
        c.upload(&nw_name(n), &parts[n - 1]).unwrap();
    }
    let mut a = agent(&cfg);
    a.wait_line(
        &format!("blob {}: reading", nw_name(6)),
        Duration::from_secs(60),
    );
    c.upload(&nw_name(4), &parts[3]).unwrap();
    let late = records_in(&parts[3]);
    let line = a.wait_line(
        &format!("blob {}: arrived after", nw_name(4)),
        Duration::from_secs(60),
    );
    assert!(line.contains(&format!("{late} packets")), "{line}");
    a.sigterm();
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    let text = a.text();
    assert_eq!(stat(&text, "blob.late"), 1, "{text}");
    assert_eq!(stat(&text, "blob.late_packets"), late, "{text}");
    assert_eq!(stat(&text, "coverage.duplicates"), 0, "{text}");
    assert!(stat(&text, "coverage.gaps") >= 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(" gap start_ns=") && l.contains(&nw_name(4))),
        "{text}"
    );
    // The five it read are deleted; the late one is kept for a replay.
    let left: Vec<String> = c
        .list(PREFIX, None)
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(left, [nw_name(4)]);
}
