//! Imports go one way: every top-level module of the agent (and of the
//! engine crate) has a layer, and (outside tests) a module imports only from
//! its own layer or below. Issue 11 removed the last upward import and the
//! last cycle: `KNOWN` and `KNOWN_CYCLES` are empty and stay so. Move an
//! item down (or split it) rather than list an exception.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A module may import from its layer and the ones before.
const LAYERS: &[&[&str]] = &[
    // Plain helpers with no knowledge of flows.
    &["calendar", "net", "episode", "platform", "disk", "rng"],
    // The engine crate (re-exported under these names): what a packet is,
    // decoding, the flow tables. `engine_imports_go_one_way` checks inside it.
    &["packet"],
    &["decode", "flow", "settings"],
    // Settings for everything below and above.
    &["config"],
    // Running the engine over a packet stream.
    &["pipeline", "sink"],
    // Observations drawn from the records (sans-IO), and the sink that
    // raises them beside the record stream.
    &["observe"],
    // Where packets come from: capture files, the live ring.
    &["capture"],
    // Flow logs (Azure NSG and VNet) to records: parsing and stitching,
    // sans-IO; the flow-log counterpart of decode and the flow table.
    &["flowlog"],
    // Records out: batching, spool, shipping; which stream a spool carries.
    &["export", "identity"],
    // Other ends and outside services.
    &["collect", "tls", "certs", "azure"],
    // Reading records back (the collector's output, NDJSON) and the HTML
    // report drawn from it.
    &["query"],
    &["report"],
    // Sources followed over time (folders, Blob containers) and their
    // checkpoints.
    &["follow"],
    // Seeing a running job: metrics, /healthz, the stats line (reads what
    // the rooms below publish).
    &["metrics"],
    // Wiring the jobs together, the error a job ends with, and the Azure VM
    // extension handler (which drives the agent through its service unit).
    &["run", "error", "extension", "check"],
    // The command line and the tools.
    &["cli", "synth"],
];

/// Upward imports tolerated (importer -> imported): none.
const KNOWN: &[&str] = &[];

/// Modules of one layer that import each other (a cycle): none.
const KNOWN_CYCLES: &[&str] = &[];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `#[cfg(test)]`, or a cfg that holds only in tests (`all(test, …)`).
fn test_gate(line: &str) -> bool {
    let Some(pred) = line
        .strip_prefix("#[cfg(")
        .and_then(|r| r.strip_suffix(")]"))
    else {
        return false;
    };
    pred == "test"
        || (pred.starts_with("all(") && pred[4..].split([',', ')']).any(|w| w.trim() == "test"))
}

/// The source without its test modules and comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if test_gate(t) {
            // The item after it (a `mod tests { … }` or `mod x;`) is test code:
            // skip to the end of the file for a block module (they come last).
            if lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
            {
                if lines.peek().is_some_and(|n| n.trim_end().ends_with('{')) {
                    break;
                }
                lines.next();
                continue;
            }
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The files declared `#[cfg(test)] mod x;` (and everything under them), so
/// that a test-only file anywhere needs no list kept by hand.
fn test_only_files(src: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut roots = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut lines = text.lines().map(str::trim);
        while let Some(l) = lines.next() {
            if !test_gate(l) {
                continue;
            }
            let Some(name) = lines
                .next()
                .map(|n| {
                    n.trim_start_matches("pub(crate) ")
                        .trim_start_matches("pub ")
                })
                .and_then(|n| n.strip_prefix("mod "))
                .and_then(|n| n.strip_suffix(';'))
            else {
                continue;
            };
            // A file's children live beside it (lib.rs, mod.rs) or in the
            // folder named for it.
            let stem = f.file_stem().unwrap().to_string_lossy();
            let dir = if f.parent() == Some(src) && stem == "lib" || stem == "mod" {
                f.parent().unwrap().to_path_buf()
            } else {
                f.with_extension("")
            };
            roots.push(dir.join(format!("{name}.rs")));
            roots.push(dir.join(name));
        }
    }
    files
        .iter()
        .filter(|f| roots.iter().any(|r| f.starts_with(r)))
        .cloned()
        .collect()
}

/// Checks the crate whose sources are in `src` against its layers.
fn check(src: &Path, layers: &[&[&str]], known: &[&str], known_cycles: &[&str]) {
    let layer = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut files = Vec::new();
    rs_files(src, &mut files);
    // Modules that exist only for tests: the files of `#[cfg(test)] mod x;`.
    let test_only = test_only_files(src, &files);
    let mut found = BTreeSet::new();
    let mut edges = BTreeSet::new();
    let mut unknown_modules = BTreeSet::new();
    for f in &files {
        let rel = f
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if test_only.contains(f) || rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let Some(from) = layer(&module) else {
            unknown_modules.insert(module);
            continue;
        };
        let text = code(&std::fs::read_to_string(f).unwrap());
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == module || name.is_empty() {
                continue;
            }
            edges.insert((module.clone(), name.clone()));
            match layer(&name) {
                Some(to) if to > from => {
                    found.insert(format!("{module} -> {name}"));
                }
                Some(_) => {}
                None => {
                    unknown_modules.insert(name);
                }
            }
        }
    }
    assert!(
        unknown_modules.is_empty(),
        "give these modules a layer in LAYERS: {unknown_modules:?}"
    );
    let known: BTreeSet<String> = known.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "imports that go up a layer (import from below, or move the item down): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these upward imports are gone: remove them from KNOWN: {gone:?}"
    );
    let cycles: BTreeSet<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    let known: BTreeSet<String> = known_cycles.iter().map(|s| s.to_string()).collect();
    assert_eq!(cycles, known, "import cycles (KNOWN_CYCLES only shrinks)");
}

#[test]
fn agent_imports_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    check(&src, LAYERS, KNOWN, KNOWN_CYCLES);
}

/// The engine crate cannot import the agent (the crate boundary sees to
/// that); inside it, packet types sit below the decoder and the flow tables
/// (which do not know each other), and those below the engine proper.
#[test]
fn engine_imports_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src");
    let layers: &[&[&str]] = &[
        &["net", "rng"],
        &["packet"],
        &["decode"],
        &["flow"],
        // The engine proper, over the tables: what it is told and where
        // records go; batches and their records; checkpoints; the inline
        // tables and the router; what sources feed; the one entry point.
        &["settings", "sink", "error"],
        &["batch", "records"],
        &["state"],
        &["inline", "router"],
        &["feed"],
        &["ingest"],
    ];
    check(&src, layers, &[], &[]);
}
