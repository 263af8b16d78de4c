//! Reading a running process's Prometheus endpoint and /healthz with curl
//! (a real HTTP client), for the tests that check what it publishes.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use super::agents::Proc;

/// GET `url` with curl: (status, content type, body).
pub fn curl(url: &str) -> (u16, String, String) {
    curl_in(None, url)
}

/// The same from inside network namespace `ns`, if given.
pub fn curl_in(ns: Option<&str>, url: &str) -> (u16, String, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args(["-sS", "--max-time", "10", "-o", "-", "-w"])
        .arg("\n%{http_code} %{content_type}")
        .arg(url)
        .output()
        .expect("curl runs (installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (code.parse().unwrap(), ctype.to_string(), body.to_string())
}

/// The metrics address a process logged ("metrics: serving http://ADDR/metrics").
pub fn metrics_addr(p: &Proc) -> String {
    let line = p.wait_line("metrics: serving http://", Duration::from_secs(20));
    let rest = &line[line.find("http://").unwrap() + 7..];
    rest[..rest.find('/').unwrap()].to_string()
}

/// Every sample of a scrape: `name{labels}` → value.
pub fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of a metric over all its label sets.
pub fn total(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v as u64)
        .sum()
}

pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    scrape_in(None, addr)
}

pub fn scrape_in(ns: Option<&str>, addr: &str) -> BTreeMap<String, f64> {
    let (code, ctype, body) = curl_in(ns, &format!("http://{addr}/metrics"));
    assert_eq!(code, 200, "{body}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    samples(&body)
}
