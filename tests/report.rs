//! `vmflow report` opened in headless Chromium: the page renders (a
//! screenshot that is not blank), logs no console error, fetches nothing,
//! and the numbers it prints equal `vmflow query`'s for the same records.

mod common;

use std::path::Path;
use std::process::Command;

use common::fleet::*;
use common::*;
use serde_json::Value;

/// Runs headless Chromium on `page` with `args`; returns (stdout, stderr).
fn chromium(dir: &Path, page: &Path, args: &[&str]) -> (String, String) {
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/test.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains("Uncaught")
                || l.contains("ERROR:CONSOLE")
                || l.contains(":CONSOLE(") && l.contains("rror")
        })
        .collect()
}

/// The text of each cell of each body row of `<table id="ID">`.
fn table(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}"));
    let body = &dom[start..];
    let body = &body[body.find("<tbody>").unwrap()..body.find("</table>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
                    // Tags inside a cell (the share bar) carry no text.
                    let mut out = String::new();
                    let mut in_tag = false;
                    for c in text.chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => out.push(c),
                            _ => {}
                        }
                    }
                    out.replace("&gt;", ">")
                        .replace("&lt;", "<")
                        .replace("&amp;", "&")
                })
                .collect()
        })
        .collect()
}

fn number(s: &str) -> u64 {
    s.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

/// `vmflow query OUT --group-by BY --top 10` as (key, flows, records, packets, bytes).
fn query_top(out: &Path, by: &str) -> Vec<(String, [u64; 4])> {
    let o = run(vmflow().arg("query").arg(out).args([
        "--group-by",
        by,
        "--top",
        "10",
        "--output",
        "ndjson",
    ]));
    assert!(o.status.success());
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v[by].as_str().unwrap().to_string(),
                [
                    u(&v, "flows"),
                    u(&v, "records"),
                    u(&v, "packets"),
                    u(&v, "bytes"),
                ],
            )
        })
        .collect()
}

fn page_numbers(rows: &[Vec<String>]) -> Vec<(String, [u64; 4])> {
    rows.iter()
        .map(|r| {
            (
                r[0].clone(),
                [number(&r[1]), number(&r[2]), number(&r[3]), number(&r[4])],
            )
        })
        .collect()
}

#[test]
fn the_report_renders_in_chromium_with_the_query_numbers() {
    let d = tempfile::tempdir().unwrap();
    let out = collected_fleet(d.path());
    let page = d.path().join("report.html");
    let o = run(vmflow().arg("report").arg(&out).arg("--html").arg(&page));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch, nothing to run.
    for needle in [
        "<script", "http://", "https://", "src=", "<link", "url(", "@import",
    ] {
        assert!(!html.contains(needle), "the page has {needle:?}");
    }

    // Rendered: a screenshot with content, no console errors.
    let shot = d.path().join("report.png");
    let (_, err) = chromium(
        d.path(),
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2200",
        ],
    );
    assert!(console_errors(&err).is_empty(), "{err}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let background = pixels[pixels.len() - 1];
    let drawn = pixels.iter().filter(|p| **p != background).count();
    assert!(
        colours.len() > 50,
        "{} colours: a blank page?",
        colours.len()
    );
    assert!(
        drawn * 10 > pixels.len(),
        "{drawn} of {} pixels drawn",
        pixels.len()
    );
    // The chart colours are there: outbound bars and covered minutes.
    for (name, rgb) in [
        ("outbound", [0x2f, 0x6f, 0xb3]),
        ("coverage", [0x3a, 0x9a, 0x5b]),
    ] {
        assert!(
            pixels.iter().any(|p| p[..3] == rgb),
            "no {name} colour drawn"
        );
    }

    // The detection above sees errors when there are some.
    let broken = d.path().join("broken.html");
    std::fs::write(
        &broken,
        "<html><body><script>null.f()</script></body></html>",
    )
    .unwrap();
    let (_, err) = chromium(d.path(), &broken, &["--dump-dom"]);
    assert!(
        !console_errors(&err).is_empty(),
        "a thrown error went unseen:\n{err}"
    );

    // The numbers printed are the query's.
    let (dom, _) = chromium(d.path(), &page, &["--dump-dom"]);
    assert_eq!(
        page_numbers(&table(&dom, "talkers")),
        query_top(&out, "src")
    );
    assert_eq!(
        page_numbers(&table(&dom, "services")),
        query_top(&out, "service")
    );
    let agents = page_numbers(&table(&dom, "agents"));
    assert_eq!(agents, query_top(&out, "agent"));
    assert_eq!(agents.len(), AGENTS.len());
    // Totals: the query's one row of everything.
    let o = run(vmflow().arg("query").arg(&out));
    let text = String::from_utf8(o.stdout).unwrap();
    let row: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .take(4)
        .map(number)
        .collect();
    let cards = &dom[dom.find("id=\"totals\"").unwrap()..];
    let value = |label: &str| {
        let at = cards.find(&format!(">{label}<")).unwrap();
        let v = &cards[at..];
        let v = &v[v.find("class=\"value\">").unwrap() + 14..];
        number(&v[..v.find('<').unwrap()])
    };
    assert_eq!(value("Flows"), row[0]);
    assert_eq!(value("Packets"), row[2]);
    assert_eq!(value("Bytes"), row[3]);
    // What the collector keeps: each agent's last batch number.
    for r in table(&dom, "agents") {
        let dir = out.join(r[0].replace('W', "%57"));
        assert_eq!(r[6], collector_seq_of(&dir).to_string(), "{r:?}");
    }
}

fn collector_seq_of(dir: &Path) -> u64 {
    common::agents::collector_seq(
        dir.parent().unwrap(),
        dir.file_name().unwrap().to_str().unwrap(),
    )
}
