//! Where an agent's records go: names from certificates and from `hello`
//! become directory names one-to-one.
//!
//! A name is percent-encoded: every byte other than a lowercase ASCII
//! letter, a digit, `-`, `_`, or a `.` that is not first becomes `%XX`. Two
//! different names therefore never share a directory — also not on a
//! case-insensitive filesystem (`VM1` is `%56%4D1`) — and no name can be
//! `.`, `..`, contain a separator or collide with the store's own files.
//! Named streams live under `streams/`, apart from the agent's default
//! stream's `state` and hour files.

use std::path::{Path, PathBuf};

/// File names longer than this are refused by common filesystems.
const MAX_NAME: usize = 255;

pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'-'
            || b == b'_'
            || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name a directory name stands for (`encode`'s inverse). A `%` not
/// followed by two hex digits, or bytes that are not UTF-8, are kept as
/// they are: the directory was not named by `encode`.
pub fn decode(dir_name: &str) -> String {
    let b = dir_name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| dir_name.to_string())
}

/// The directory of an agent (its certificate's common name) under `out`.
pub fn agent_dir(out: &Path, cn: &str) -> Result<PathBuf, String> {
    if cn.is_empty() {
        return Err("the client certificate's common name is empty".into());
    }
    let enc = encode(cn);
    if enc.len() > MAX_NAME {
        return Err(format!(
            "the client certificate's common name is too long for a directory name ({} bytes encoded)",
            enc.len()
        ));
    }
    Ok(out.join(enc))
}

/// The directory of one of an agent's record streams ("" is its default).
pub fn stream_dir(agent_dir: &Path, stream: &str) -> PathBuf {
    if stream.is_empty() {
        agent_dir.to_path_buf()
    } else {
        agent_dir.join("streams").join(encode(stream))
    }
}

/// Where an earlier version kept a named stream (`OUT/<agent>/<stream>`).
pub fn legacy_stream_dir(agent_dir: &Path, stream: &str) -> PathBuf {
    agent_dir.join(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_encode() {
        for n in ["agent-1", "VM1", "ägent/1", ".x", "a%b", "100%"] {
            assert_eq!(decode(&encode(n)), n);
        }
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn one_name_one_directory() {
        let names = [
            "a/b",
            "a_b",
            "a%2Fb",
            "ägent-1",
            "_gent-1",
            "agent-1",
            "Agent-1",
            ".",
            "..",
            ".x",
            "%2E",
            "state",
            "state.tmp",
            "streams",
            "x y",
            "",
        ];
        let enc: Vec<String> = names.iter().map(|n| encode(n)).collect();
        let mut seen = std::collections::HashSet::new();
        for (n, e) in names.iter().zip(&enc) {
            assert!(seen.insert(e.to_ascii_lowercase()), "{n:?} → {e}");
            assert!(!e.contains('/') && e != "." && e != "..", "{n:?} → {e}");
        }
        assert_eq!(encode("agent-1"), "agent-1");
        assert_eq!(encode("ägent-1"), "%C3%A4gent-1");
        assert_eq!(encode("a/b"), "a%2Fb");
        assert_eq!(encode("2025-10-09T08.ndjson"), "2025-10-09%5408.ndjson");
    }

    #[test]
    fn streams_never_meet_the_default_streams_files() {
        let a = Path::new("/out/agent-1");
        for s in ["state", "state.tmp", "2025-10-09T08.ndjson", "streams"] {
            let d = stream_dir(a, s);
            assert!(
                d.starts_with("/out/agent-1/streams/"),
                "{s}: {}",
                d.display()
            );
        }
        assert_eq!(stream_dir(a, ""), a);
        assert!(agent_dir(Path::new("/out"), "").is_err());
        assert!(agent_dir(Path::new("/out"), &"é".repeat(60)).is_err());
    }
}
