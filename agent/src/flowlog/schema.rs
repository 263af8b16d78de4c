//! What one flow-log tuple says, in the three schemas Azure writes
//! (`../shared/docs/azure-reference.md` §5):
//!
//! - NSG version 1, 8 fields: time, src, dst, sport, dport, `T`/`U`, `I`/`O`,
//!   `A`/`D`.
//! - NSG version 2, 13 fields: those 8, then the flow state `B`/`C`/`E` and
//!   packets and bytes src→dst and dst→src (deltas since the flow's previous
//!   tuple; empty on `B`).
//! - VNet flow logs, 13 fields: time, src, dst, sport, dport, the IANA
//!   protocol number, `I`/`O`, the state `B`/`C`/`E`/`D` (`D`: denied; there
//!   is no separate decision), the encryption state, the four counters
//!   (empty or 0 on `B` and `D`).
//!
//! Times are epoch seconds in NSG logs and seconds or milliseconds in VNet
//! logs (the documentation's own samples disagree): 13 digits or more is
//! milliseconds, whatever the schema.

use std::net::IpAddr;

use vmflow_proto::Decision;

use super::TupleError;

/// Which document a tuple comes from: it fixes the fields and their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    NsgV1,
    NsgV2,
    Vnet,
}

impl Schema {
    pub fn name(self) -> &'static str {
        match self {
            Schema::NsgV1 => "NSG version 1",
            Schema::NsgV2 => "NSG version 2",
            Schema::Vnet => "VNet flow log",
        }
    }

    fn fields(self) -> usize {
        match self {
            Schema::NsgV1 => 8,
            Schema::NsgV2 | Schema::Vnet => 13,
        }
    }
}

/// Where a flow stands in the tuple that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// The flow began; no counters.
    Begin,
    /// The flow goes on: counters since its previous tuple (about every
    /// five minutes).
    Continuing,
    /// The flow ended: the last counters.
    End,
    /// VNet flow logs: the flow was denied.
    Denied,
}

/// Packets and bytes both ways (bytes as the flow log counts them: with
/// the headers below IP, see the README).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub rev_packets: u64,
    pub rev_bytes: u64,
}

/// One tuple, typed. `src` is the side that opened the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub time_ns: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub inbound: bool,
    pub decision: Decision,
    /// `None` in NSG version 1, which has no flow state.
    pub state: Option<FlowState>,
    /// VNet flow logs: `X` encrypted, `NX…` not (with the reason);
    /// `None` elsewhere or when left empty.
    pub encrypted: Option<bool>,
    pub counters: Counters,
}

/// A timestamp with at least this many digits is in milliseconds: seconds
/// reach 13 digits only in the year 33658.
const MILLIS_DIGITS: usize = 13;

impl Tuple {
    /// Parses one tuple string of `schema`. Never panics.
    pub fn parse(schema: Schema, s: &str) -> Result<Tuple, TupleError> {
        let f: Vec<&str> = s.split(',').map(str::trim).collect();
        if f.len() != schema.fields() {
            return Err(TupleError::FieldCount {
                schema: schema.name(),
                found: f.len(),
                expected: schema.fields(),
            });
        }
        let bad = |index: usize, name: &'static str, what: &'static str| TupleError::Field {
            index,
            name,
            value: super::error::cut(f[index], 64),
            what,
        };
        let time = f[0];
        if time.is_empty() || !time.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(0, "time", "an epoch time"));
        }
        let t: u64 = time.parse().map_err(|_| bad(0, "time", "an epoch time"))?;
        let time_ns = if time.trim_start_matches('0').len() >= MILLIS_DIGITS {
            t.checked_mul(1_000_000)
        } else {
            t.checked_mul(1_000_000_000)
        }
        .ok_or_else(|| bad(0, "time", "a time in range"))?;
        let src: IpAddr = f[1]
            .parse()
            .map_err(|_| bad(1, "source address", "an IP address"))?;
        let dst: IpAddr = f[2]
            .parse()
            .map_err(|_| bad(2, "destination address", "an IP address"))?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(TupleError::MixedFamilies);
        }
        let port = |i: usize, name| f[i].parse::<u16>().map_err(|_| bad(i, name, "a port"));
        let (sport, dport) = (port(3, "source port")?, port(4, "destination port")?);
        let proto = match f[5] {
            "T" | "t" => 6,
            "U" | "u" => 17,
            p => p
                .parse::<u8>()
                .map_err(|_| bad(5, "protocol", "T, U or a protocol number"))?,
        };
        let inbound = match f[6] {
            "I" | "i" => true,
            "O" | "o" => false,
            _ => return Err(bad(6, "direction", "I or O")),
        };
        let state = |i: usize, allowed: &[u8]| -> Result<FlowState, TupleError> {
            let s = match f[i].to_ascii_uppercase().as_str() {
                "B" => FlowState::Begin,
                "C" => FlowState::Continuing,
                "E" => FlowState::End,
                "D" => FlowState::Denied,
                _ => return Err(bad(i, "flow state", "a flow state")),
            };
            let letter = f[i].as_bytes()[0].to_ascii_uppercase();
            if allowed.contains(&letter) {
                Ok(s)
            } else {
                Err(bad(i, "flow state", "a flow state of this schema"))
            }
        };
        let decision = |i: usize| match f[i] {
            "A" | "a" => Ok(Decision::Allow),
            "D" | "d" => Ok(Decision::Deny),
            _ => Err(bad(i, "decision", "A or D")),
        };
        let counter = |i: usize, name| -> Result<u64, TupleError> {
            if f[i].is_empty() {
                return Ok(0);
            }
            f[i].parse::<u64>().map_err(|_| bad(i, name, "a count"))
        };
        let counters = |from: usize| -> Result<Counters, TupleError> {
            Ok(Counters {
                fwd_packets: counter(from, "packets src→dst")?,
                fwd_bytes: counter(from + 1, "bytes src→dst")?,
                rev_packets: counter(from + 2, "packets dst→src")?,
                rev_bytes: counter(from + 3, "bytes dst→src")?,
            })
        };
        let (decision, state, encrypted, counters) = match schema {
            Schema::NsgV1 => (decision(7)?, None, None, Counters::default()),
            Schema::NsgV2 => (decision(7)?, Some(state(8, b"BCE")?), None, counters(9)?),
            Schema::Vnet => {
                let st = state(7, b"BCED")?;
                let enc = match f[8] {
                    "" => None,
                    "X" | "x" => Some(true),
                    e if e.len() >= 2 && e[..2].eq_ignore_ascii_case("NX") => Some(false),
                    _ => return Err(bad(8, "encryption", "X or NX…")),
                };
                let d = if st == FlowState::Denied {
                    Decision::Deny
                } else {
                    Decision::Allow
                };
                (d, Some(st), enc, counters(9)?)
            }
        };
        Ok(Tuple {
            time_ns,
            src,
            dst,
            sport,
            dport,
            proto,
            inbound,
            decision,
            state,
            encrypted,
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsg_version_1() {
        let t = Tuple::parse(
            Schema::NsgV1,
            "1487282421,192.0.2.95,10.1.0.4,51529,5358,T,I,D",
        )
        .unwrap();
        assert_eq!(t.time_ns, 1_487_282_421_000_000_000);
        assert_eq!(t.src, "192.0.2.95".parse::<IpAddr>().unwrap());
        assert_eq!((t.sport, t.dport, t.proto), (51529, 5358, 6));
        assert!(t.inbound);
        assert_eq!(t.decision, Decision::Deny);
        assert_eq!(t.state, None);
        assert_eq!(t.counters, Counters::default());
    }

    #[test]
    fn nsg_version_2_begin_has_empty_counters_and_continuing_has_deltas() {
        let b = Tuple::parse(
            Schema::NsgV2,
            "1493763938,185.170.185.105,10.2.0.4,35370,23,T,I,D,B,,,,",
        )
        .unwrap();
        assert_eq!(b.state, Some(FlowState::Begin));
        assert_eq!(b.counters, Counters::default());
        let c = Tuple::parse(
            Schema::NsgV2,
            "1493695838,13.67.143.118,10.2.0.4,443,62727,T,O,A,C,1021,588096,8005,4610880",
        )
        .unwrap();
        assert!(!c.inbound);
        assert_eq!(c.decision, Decision::Allow);
        assert_eq!(
            c.counters,
            Counters {
                fwd_packets: 1021,
                fwd_bytes: 588_096,
                rev_packets: 8005,
                rev_bytes: 4_610_880
            }
        );
        // `D` is a decision in NSG logs, not a state.
        assert!(Tuple::parse(Schema::NsgV2, "1,10.0.0.1,10.0.0.2,1,2,U,O,A,D,,,,").is_err());
    }

    #[test]
    fn vnet_times_in_seconds_or_milliseconds_and_protocol_numbers() {
        let ms = Tuple::parse(
            Schema::Vnet,
            "1663146003606,10.0.0.6,52.239.184.180,23956,443,6,O,E,NX,3,767,2,1580",
        )
        .unwrap();
        assert_eq!(ms.time_ns, 1_663_146_003_606_000_000);
        assert_eq!(ms.state, Some(FlowState::End));
        assert_eq!(ms.encrypted, Some(false));
        assert_eq!(ms.counters.rev_bytes, 1580);
        let s = Tuple::parse(
            Schema::Vnet,
            "1663146003,10.0.0.6,52.239.184.180,23956,443,17,I,B,X,,,,",
        )
        .unwrap();
        assert_eq!(s.time_ns, 1_663_146_003_000_000_000);
        assert_eq!((s.proto, s.encrypted), (17, Some(true)));
        let d = Tuple::parse(
            Schema::Vnet,
            "1663146003606,10.0.0.6,10.0.0.7,1,22,6,I,D,NX_LOCAL_DST,0,0,0,0",
        )
        .unwrap();
        assert_eq!(d.decision, Decision::Deny);
        assert_eq!(d.state, Some(FlowState::Denied));
        let v6 = Tuple::parse(
            Schema::Vnet,
            "1663146003606,fd00::1,2001:db8::9,1,53,17,O,C,X,1,80,1,120",
        )
        .unwrap();
        assert!(v6.src.is_ipv6());
    }

    #[test]
    fn bad_tuples_are_typed_errors() {
        let cases = [
            (Schema::NsgV1, "1,10.0.0.1,10.0.0.2,1,2,T,I"),
            (Schema::NsgV1, "x,10.0.0.1,10.0.0.2,1,2,T,I,A"),
            (Schema::NsgV1, "1,10.0.0.300,10.0.0.2,1,2,T,I,A"),
            (Schema::NsgV1, "1,10.0.0.1,10.0.0.2,70000,2,T,I,A"),
            (Schema::NsgV1, "1,10.0.0.1,10.0.0.2,1,2,Q,I,A"),
            (Schema::NsgV1, "1,10.0.0.1,10.0.0.2,1,2,T,X,A"),
            (Schema::NsgV1, "1,10.0.0.1,10.0.0.2,1,2,T,I,Z"),
            (Schema::NsgV1, "1,10.0.0.1,::1,1,2,T,I,A"),
            (
                Schema::NsgV1,
                "99999999999999999999999,10.0.0.1,10.0.0.2,1,2,T,I,A",
            ),
            (Schema::NsgV2, "1,10.0.0.1,10.0.0.2,1,2,T,I,A,C,-1,0,0,0"),
            (Schema::Vnet, "1,10.0.0.1,10.0.0.2,1,2,6,I,C,maybe,0,0,0,0"),
            (Schema::Vnet, "1,10.0.0.1,10.0.0.2,1,2,6,I,,X,0,0,0,0"),
        ];
        for (schema, s) in cases {
            let e = Tuple::parse(schema, s).unwrap_err();
            assert!(!e.to_string().is_empty(), "{s}");
        }
        let e = Tuple::parse(Schema::NsgV1, "1,10.0.0.1,10.0.0.2,1,2,T,X,A").unwrap_err();
        assert_eq!(e.to_string(), "field 6 (direction): \"X\" is not I or O");
    }
}
