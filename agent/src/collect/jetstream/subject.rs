//! Subjects of the JetStream stream: `<prefix>.<agent>.<stream>.<epoch>`,
//! one per epoch of an agent's record stream, so "the last message on the
//! subject" is exactly where that epoch stands.
//!
//! A name becomes one subject token one-to-one: every byte other than an
//! ASCII letter, a digit, `-` or `_` becomes `%XX`. So no name can hold a
//! `.` (the token separator), be `*` or `>` (wildcards), or contain
//! whitespace, and the sink reads the names back exactly. The default stream
//! (`""`, which has no token) is `~`, which the encoding never produces.
//! The epoch is 16 lowercase hex digits.

const DEFAULT_STREAM: &str = "~";

pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `token`'s inverse; `None` for a token `token` cannot have made.
pub fn untoken(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                let v = u8::from_str_radix(hex, 16).ok()?;
                if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' {
                    return None;
                }
                out.push(v);
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn stream_token(stream: &str) -> String {
    if stream.is_empty() {
        DEFAULT_STREAM.to_string()
    } else {
        token(stream)
    }
}

/// The subject of one epoch of an agent's stream.
pub fn subject(prefix: &str, agent: &str, stream: &str, epoch: u64) -> String {
    format!(
        "{prefix}.{}.{}.{epoch:016x}",
        token(agent),
        stream_token(stream)
    )
}

/// The message id JetStream de-duplicates a re-published batch by. The
/// epoch is part of it: a reinstalled agent counts its batches from 1
/// again, and those must not be taken for repeats of the old spool's.
pub fn msg_id(agent: &str, stream: &str, epoch: u64, seq: u64) -> String {
    format!(
        "{}/{}/{epoch:016x}/{seq}",
        token(agent),
        stream_token(stream)
    )
}

/// The agent, stream and epoch a subject names, if it is one of ours.
#[derive(Debug, PartialEq, Eq, Clone, Hash)]
pub struct Named {
    pub agent: String,
    pub stream: String,
    pub epoch: u64,
}

pub fn parse(prefix: &str, subject: &str) -> Option<Named> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut t = rest.split('.');
    let (agent, stream, epoch) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || epoch.len() != 16 {
        return None;
    }
    Some(Named {
        agent: untoken(agent).filter(|a| !a.is_empty())?,
        stream: if stream == DEFAULT_STREAM {
            String::new()
        } else {
            untoken(stream).filter(|s| !s.is_empty())?
        },
        epoch: u64::from_str_radix(epoch, 16).ok()?,
    })
}

/// A prefix is one or more plain tokens (letters, digits, `-`, `_`).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_the_round_trip_and_never_split_a_subject() {
        for agent in [
            "agent-1",
            "vm.prod.eu",
            "a b",
            "*",
            ">",
            "ägent",
            "%41",
            "~",
            "x\ny",
        ] {
            for stream in ["", "live", "eth0.100", "~", "_"] {
                let s = subject("vmflow", agent, stream, 0xabc);
                assert_eq!(s.split('.').count(), 4, "{s}");
                assert!(!s.contains(char::is_whitespace), "{s}");
                assert!(s.split('.').all(|t| t != "*" && t != ">"), "{s}");
                let n = parse("vmflow", &s).unwrap();
                assert_eq!((n.agent.as_str(), n.stream.as_str()), (agent, stream));
                assert_eq!(n.epoch, 0xabc);
            }
        }
        assert_eq!(
            subject("vmflow", "vm.1", "", 1),
            "vmflow.vm%2E1.~.0000000000000001"
        );
        assert_eq!(msg_id("vm.1", "s", 2, 7), "vm%2E1/s/0000000000000002/7");
    }

    #[test]
    fn only_our_subjects_parse() {
        for s in [
            "vmflow.a.~",
            "vmflow.a.~.1",
            "other.a.~.0000000000000001",
            "vmflow.a.~.0000000000000001.x",
            "vmflow.%41.~.0000000000000001",
            "vmflow.a%.~.0000000000000001",
            "vmflow..~.0000000000000001",
        ] {
            assert_eq!(parse("vmflow", s), None, "{s}");
        }
        assert!(valid_prefix("vmflow") && valid_prefix("fleet.flows"));
        assert!(!valid_prefix("a..b") && !valid_prefix("a.*") && !valid_prefix(""));
    }
}
