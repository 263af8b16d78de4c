//! Times on the command line and in output: RFC 3339 or unix seconds in,
//! RFC 3339 (UTC) out. Record times are ns since the epoch.

use crate::calendar::{civil_from_days, days_from_civil};

const NS: u64 = 1_000_000_000;

/// `2026-12-03T06:00:00Z`, `2026-12-03T07:00:00.5+01:00`, `2026-12-03`
/// (midnight UTC) or unix seconds (`1764741600`, `1764741600.25`), as ns
/// since the epoch.
pub fn parse(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a time (RFC 3339 such as 2026-12-03T06:00:00Z, or unix seconds)");
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let secs: u64 = int.parse().map_err(|_| bad())?;
        return secs
            .checked_mul(NS)
            .and_then(|n| n.checked_add(fraction_ns(frac).ok_or_else(bad).ok()?))
            .ok_or_else(bad);
    }
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, d) = (
        digits(0..4).ok_or_else(bad)?,
        digits(5..7).ok_or_else(bad)?,
        digits(8..10).ok_or_else(bad)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut frac_ns = 0;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (h, mi, sec) = (
            digits(11..13).ok_or_else(bad)?,
            digits(14..16).ok_or_else(bad)?,
            digits(17..19).ok_or_else(bad)?,
        );
        if h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        secs += h * 3_600 + mi * 60 + sec;
        let mut rest = &s[19..];
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_ns = fraction_ns(&r[..n]).ok_or_else(bad)?;
            rest = &r[n..];
        }
        match rest {
            "Z" | "z" => {}
            _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
                let num = |p: &str| {
                    p.bytes()
                        .all(|c| c.is_ascii_digit())
                        .then(|| p.parse::<i64>().ok())?
                };
                let (oh, om) = match (rest.get(1..3).and_then(num), rest.get(4..6).and_then(num)) {
                    (Some(h), Some(m)) => (h, m),
                    _ => return Err(bad()),
                };
                if rest.get(3..4) != Some(":") || oh > 23 || om > 59 {
                    return Err(bad());
                }
                let off = oh * 3_600 + om * 60;
                secs -= if rest.starts_with('+') { off } else { -off };
            }
            _ => return Err(bad()),
        }
    }
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(secs * NS + frac_ns)
}

/// Up to 9 fractional digits as ns.
fn fraction_ns(frac: &str) -> Option<u64> {
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.is_empty() {
        return Some(0);
    }
    let v: u64 = frac.parse().ok()?;
    Some(v * 10u64.pow(9 - frac.len() as u32))
}

/// `2026-12-03T06:00:00Z`: whole seconds, UTC.
pub fn format(ns: u64) -> String {
    let secs = ns / NS;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_unix_seconds() {
        let t = 1_764_741_600 * NS; // 2025-12-03T06:00:00Z
        assert_eq!(parse("2025-12-03T06:00:00Z"), Ok(t));
        assert_eq!(parse("2025-12-03t06:00:00z"), Ok(t));
        assert_eq!(parse("2025-12-03T07:30:00+01:30"), Ok(t));
        assert_eq!(parse("2025-12-03T05:00:00-01:00"), Ok(t));
        assert_eq!(parse("2025-12-03T06:00:00.25Z"), Ok(t + NS / 4));
        assert_eq!(parse("2025-12-03"), Ok(t - 6 * 3_600 * NS));
        assert_eq!(parse("1764741600"), Ok(t));
        assert_eq!(parse("1764741600.000000001"), Ok(t + 1));
        assert_eq!(format(t + 999), "2025-12-03T06:00:00Z");
        assert_eq!(parse(&format(t)), Ok(t));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-12-03T25:00:00Z",
            "2025-12-03T06:00:00",
            "2025-12-03T06:00:00+0100",
            "1.2.3",
            "1764741600.1234567890",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
