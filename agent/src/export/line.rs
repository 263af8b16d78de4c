//! A text line built in a fixed buffer: literals, decimal integers and IP
//! addresses written in place, without `fmt` and without a capacity check
//! or a `memcpy` call per field. The NDJSON and CSV encoders format every
//! record through it; on a replay it is the output thread's main cost, and
//! that thread shares two cores with the reader and the flow shard.
//!
//! A line that would not fit is not truncated: the writer panics on the
//! index like any slice, so callers leave [`MAX`] bytes of room (every
//! field of a record but free text, which they write outside it).

use std::net::{IpAddr, Ipv6Addr};

/// Two decimal digits per entry: "00" … "99".
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Room for the longest record line without free text: 21 numbers of up to
/// 20 digits, two IPv6 addresses of up to 45 characters, and the keys.
pub const MAX: usize = 1024;

/// Writes at `len` into a buffer the caller owns (and has zeroed once).
pub struct Line<'a> {
    buf: &'a mut [u8],
    pub len: usize,
}

impl<'a> Line<'a> {
    pub fn at(buf: &'a mut [u8], len: usize) -> Self {
        Line { buf, len }
    }

    #[inline(always)]
    pub fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// A literal; with a constant argument the copy is a few moves.
    #[inline(always)]
    pub fn lit(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    /// `v` in decimal, as `itoa` and `Display` write it. Most fields are one
    /// or two digits (versions, protocols, segments, flags, packet counts):
    /// those are written in place, the rest out of line.
    #[inline(always)]
    pub fn u64(&mut self, v: u64) {
        if v < 10 {
            self.push(b'0' + v as u8);
        } else if v < 100 {
            self.lit(&PAIRS[v as usize]);
        } else {
            self.long(v);
        }
    }

    /// Every record has three 19-digit numbers (flow id, first and last
    /// nanosecond), so long numbers are cut into 8-digit chunks first: two
    /// 64-bit divisions instead of nine, the rest in 32-bit arithmetic.
    #[inline(never)]
    fn long(&mut self, v: u64) {
        const E8: u64 = 100_000_000;
        const E16: u64 = E8 * E8;
        if v < E8 {
            self.upto8(v as u32);
        } else if v < E16 {
            self.upto8((v / E8) as u32);
            self.exactly8((v % E8) as u32);
        } else {
            // v / E16 ≤ 1844: one to four digits.
            self.upto8((v / E16) as u32);
            let rest = v % E16;
            self.exactly8((rest / E8) as u32);
            self.exactly8((rest % E8) as u32);
        }
    }

    /// `v` < 10^8, without leading zeros.
    #[inline(always)]
    fn upto8(&mut self, mut v: u32) {
        let n = digits(u64::from(v));
        let end = self.len + n;
        let out = &mut self.buf[self.len..end];
        let mut at = n;
        while v >= 100 {
            at -= 2;
            out[at..at + 2].copy_from_slice(&PAIRS[(v % 100) as usize]);
            v /= 100;
        }
        if v >= 10 {
            out[..2].copy_from_slice(&PAIRS[v as usize]);
        } else {
            out[0] = b'0' + v as u8;
        }
        self.len = end;
    }

    /// `v` < 10^8 as exactly eight digits, leading zeros kept.
    #[inline(always)]
    fn exactly8(&mut self, v: u32) {
        let (hi, lo) = (v / 10_000, v % 10_000);
        let out = &mut self.buf[self.len..self.len + 8];
        out[0..2].copy_from_slice(&PAIRS[(hi / 100) as usize]);
        out[2..4].copy_from_slice(&PAIRS[(hi % 100) as usize]);
        out[4..6].copy_from_slice(&PAIRS[(lo / 100) as usize]);
        out[6..8].copy_from_slice(&PAIRS[(lo % 100) as usize]);
        self.len += 8;
    }

    /// The address as `Display` writes it (dotted quad; RFC 5952 for IPv6).
    #[inline]
    pub fn ip(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(v4) => self.ipv4(v4.octets()),
            IpAddr::V6(v6) => self.ipv6(v6),
        }
    }

    fn ipv4(&mut self, o: [u8; 4]) {
        self.octet(o[0]);
        for &b in &o[1..] {
            self.push(b'.');
            self.octet(b);
        }
    }

    #[inline(always)]
    fn octet(&mut self, b: u8) {
        if b >= 100 {
            self.push(b'0' + b / 100);
            self.lit(&PAIRS[usize::from(b % 100)]);
        } else {
            self.u64(u64::from(b));
        }
    }

    /// `Ipv6Addr`'s `Display`: an IPv4-mapped address as `::ffff:a.b.c.d`,
    /// else lowercase hex groups with the first longest run of two or more
    /// zero groups written `::`.
    fn ipv6(&mut self, a: Ipv6Addr) {
        if let Some(v4) = a.to_ipv4_mapped() {
            self.lit(b"::ffff:");
            return self.ipv4(v4.octets());
        }
        let s = a.segments();
        let (mut best, mut best_len, mut cur, mut cur_len) = (0, 0, 0, 0);
        for (i, &g) in s.iter().enumerate() {
            if g == 0 {
                if cur_len == 0 {
                    cur = i;
                }
                cur_len += 1;
                if cur_len > best_len {
                    (best, best_len) = (cur, cur_len);
                }
            } else {
                cur_len = 0;
            }
        }
        if best_len > 1 {
            self.groups(&s[..best]);
            self.lit(b"::");
            self.groups(&s[best + best_len..]);
        } else {
            self.groups(&s);
        }
    }

    fn groups(&mut self, gs: &[u16]) {
        for (i, &g) in gs.iter().enumerate() {
            if i > 0 {
                self.push(b':');
            }
            self.hex(g);
        }
    }

    fn hex(&mut self, g: u16) {
        let n = (19 - (g | 1).leading_zeros() as usize) / 4;
        for i in (0..n).rev() {
            self.push(HEX[usize::from(g >> (i * 4)) & 0xf]);
        }
    }
}

/// Decimal digits of `v` (at least one).
#[inline(always)]
fn digits(v: u64) -> usize {
    // 10^t for t in 1..=19; 0 for t = 0, where 0 and 1 both have one digit.
    const POW10: [u64; 20] = {
        let mut t = [0u64; 20];
        let mut i = 1;
        let mut p = 10u64;
        while i < 20 {
            t[i] = p;
            if i < 19 {
                p *= 10;
            }
            i += 1;
        }
        t
    };
    // floor(bit length * log10 2) is log10(v) rounded down or one more
    // (the bit-twiddling classic): one digit less when v < 10^t.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    let t = (bits * 1233) >> 12;
    t + 1 - usize::from(v < POW10[t])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    fn text(f: impl FnOnce(&mut Line)) -> String {
        let mut buf = [0u8; MAX];
        let mut l = Line::at(&mut buf, 3);
        f(&mut l);
        let end = l.len;
        String::from_utf8(buf[3..end].to_vec()).unwrap()
    }

    #[test]
    fn integers_as_display_writes_them() {
        let mut edges = vec![0, u64::MAX, u64::MAX - 1];
        for p in 0..20 {
            let t = 10u64.pow(p);
            edges.extend([t - 1, t, t + 1]);
        }
        for b in 0..64 {
            edges.extend([(1u64 << b) - 1, 1 << b, (1 << b) + 1]);
        }
        let mut rng = Rng::new(3);
        for _ in 0..100_000 {
            let v = rng.next_u64() >> (rng.next_u64() % 64);
            edges.push(v);
        }
        for v in edges {
            assert_eq!(text(|l| l.u64(v)), v.to_string());
        }
    }

    #[test]
    fn addresses_as_display_writes_them() {
        let mut rng = Rng::new(5);
        let mut addrs: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "::",
            "::1",
            "1::",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "64:ff9b::1.2.3.4",
            "fe80::1:0:0:1",
            "1:0:0:1:0:0:0:1",
            "1:0:1:0:1:0:1:0",
            "2001:db8:0:0:1:0:0:1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for _ in 0..100_000 {
            let mut g = [0u16; 8];
            for x in &mut g {
                // Mostly zero groups and short values: runs of every length.
                *x = match rng.next_u64() % 4 {
                    0 | 1 => 0,
                    2 => (rng.next_u64() % 0x10) as u16,
                    _ => rng.next_u64() as u16,
                };
            }
            if rng.below(8) == 0 {
                g[..5].fill(0);
                g[5] = 0xffff;
            }
            addrs.push(IpAddr::V6(Ipv6Addr::from(g)));
            addrs.push(IpAddr::from((rng.next_u64() as u32).to_be_bytes()));
        }
        for a in addrs {
            assert_eq!(text(|l| l.ip(a)), a.to_string());
        }
    }
}
