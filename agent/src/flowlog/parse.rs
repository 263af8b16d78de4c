//! One committed block of a `PT1H.json` blob to tuples. The service writes
//! the document `{"records":[…]}` as blocks: the first is the opening
//! `{"records":[`, the last the closing `]}`, and each block in between holds
//! whole records, every block after the first record's starting with a
//! comma. A block is therefore parsed on its own: a damaged one costs its
//! own records and no other's.
//!
//! Keys are matched without regard to case (`Version` and `version`,
//! `macAddress` and `MACAddress` have both been seen in the wild).

use serde_json::Value;

use super::error::cut;
use super::schema::{Schema, Tuple};
use super::FlowlogError;

/// A tuple with what its record says around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The NIC's MAC address: upper-case hex, no separators.
    pub mac: String,
    /// The rule that logged the flow (`unspecified` when the log says so).
    pub rule: String,
    pub tuple: Tuple,
}

/// What a block held: its tuples, and what could not be used in it.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub errors: Vec<FlowlogError>,
    /// Records read (a record holds many tuples).
    pub records: usize,
}

/// Parses committed block `block` of `blob`. Never panics.
pub fn parse_block(blob: &str, block: u32, bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let block_error = |what: String| FlowlogError::Block {
        blob: blob.to_string(),
        block,
        what,
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(block_error(format!(
                "not UTF-8 (at byte {})",
                e.valid_up_to()
            )));
            return out;
        }
    };
    let body = records_of(text);
    if body.is_empty() {
        return out;
    }
    let records: Vec<Value> = match serde_json::from_str(&format!("[{body}]")) {
        Ok(r) => r,
        Err(e) => {
            out.errors
                .push(block_error(format!("not JSON records: {e}")));
            return out;
        }
    };
    for (i, rec) in records.iter().enumerate() {
        out.records += 1;
        let record_error = |what: &str| FlowlogError::Record {
            blob: blob.to_string(),
            block,
            record: i,
            what: what.to_string(),
        };
        let mut tuples = Vec::new();
        if let Err(what) = tuples_of(rec, &mut tuples) {
            out.errors.push(record_error(what));
            continue;
        }
        for (schema, mac, rule, s) in tuples {
            match Tuple::parse(schema, s) {
                Ok(tuple) => out.entries.push(Entry {
                    mac: mac.clone(),
                    rule: rule.to_string(),
                    tuple,
                }),
                Err(source) => out.errors.push(FlowlogError::Tuple {
                    blob: blob.to_string(),
                    block,
                    tuple: cut(s, 200),
                    source,
                }),
            }
        }
    }
    out
}

/// The records' text in a block: without the document's opening, its
/// closing and the comma that separates this block from the one before.
fn records_of(text: &str) -> &str {
    let mut t = text.trim();
    if let Some(rest) = opening(t) {
        t = rest.trim_start();
    }
    let t = t.strip_prefix(',').unwrap_or(t);
    before_close(t).trim()
}

/// `t` up to the `]` that closes the records list, if it holds one: the
/// first `]` outside a string that has no `[` of its own (a record may
/// well end in `]}` itself).
fn before_close(t: &str) -> &str {
    let mut depth = 0i64;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in t.bytes().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' if depth == 0 => return &t[..i],
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    t
}

/// What follows `{"records":[` (any case, any white space), if `t` opens so.
fn opening(t: &str) -> Option<&str> {
    let t = t.strip_prefix('{')?.trim_start();
    let t = t.strip_prefix('"')?;
    let key = t.get(..7)?;
    if !key.eq_ignore_ascii_case("records") {
        return None;
    }
    let t = t[7..].strip_prefix('"')?.trim_start();
    let t = t.strip_prefix(':')?.trim_start();
    t.strip_prefix('[')
}

/// `v[key]`, the key matched without regard to case.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn array<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match get(v, key) {
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{key} is not a list")),
        None => Err(format!("no {key}")),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key).and_then(Value::as_str).unwrap_or("")
}

/// Upper-case hex without separators: how the blob names and IMDS write it.
pub fn normalize_mac(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

type Found<'a> = (Schema, String, &'a str, &'a str);

/// Every tuple string of one record, with its schema, MAC and rule. A VNet
/// flow-log record has `flowRecords`; an NSG one `properties` with its
/// `Version`.
fn tuples_of<'a>(rec: &'a Value, out: &mut Vec<Found<'a>>) -> Result<(), &'static str> {
    let strings = |list: &'a [Value]| -> Result<Vec<&'a str>, &'static str> {
        list.iter()
            .map(|t| t.as_str().ok_or("a flow tuple is not a string"))
            .collect()
    };
    if !rec.is_object() {
        return Err("not an object");
    }
    if let Some(fr) = get(rec, "flowRecords") {
        let mac = normalize_mac(text(rec, "macAddress"));
        for flow in array(fr, "flows").map_err(|_| "flowRecords.flows is missing or not a list")? {
            let groups = array(flow, "flowGroups").map_err(|_| "a flow without flowGroups")?;
            for g in groups {
                let rule = text(g, "rule");
                let tuples =
                    array(g, "flowTuples").map_err(|_| "a flow group without flowTuples")?;
                for s in strings(tuples)? {
                    out.push((Schema::Vnet, mac.clone(), rule, s));
                }
            }
        }
        return Ok(());
    }
    let props = get(rec, "properties").ok_or("neither flowRecords nor properties")?;
    let version = match get(props, "Version") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let schema = match version {
        Some(1) => Schema::NsgV1,
        Some(2) => Schema::NsgV2,
        _ => return Err("properties.Version is not 1 or 2"),
    };
    for rule_flows in
        array(props, "flows").map_err(|_| "properties.flows is missing or not a list")?
    {
        let rule = text(rule_flows, "rule");
        for f in array(rule_flows, "flows").map_err(|_| "a rule without flows")? {
            let mac = normalize_mac(text(f, "mac"));
            let tuples = array(f, "flowTuples").map_err(|_| "a flow without flowTuples")?;
            for s in strings(tuples)? {
                out.push((schema, mac.clone(), rule, s));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::schema::FlowState;

    const NSG: &str = r#"{"time":"2017-02-16T22:00:32.8950000Z","systemId":"2c002c16-72b3-4d5e-9b48-cfb2d1a4f7a6","category":"NetworkSecurityGroupFlowEvent","resourceId":"/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG","operationName":"NetworkSecurityGroupFlowEvents","properties":{"Version":2,"flows":[{"rule":"DefaultRule_DenyAllInBound","flows":[{"mac":"000D3AF87856","flowTuples":["1487282421,42.119.146.95,10.1.0.4,51529,5358,T,I,D,B,,,,"]}]},{"rule":"UserRule_default-allow-rdp","flows":[{"mac":"000D3AF87856","flowTuples":["1487282370,163.28.66.17,10.1.0.4,61771,3389,T,I,A,B,,,,","1487282393,5.39.218.34,10.1.0.4,58596,3389,T,I,A,E,1,66,1,66"]}]}]}}"#;

    const VNET: &str = r#"{"time":"2022-09-14T09:00:52.5625085Z","flowLogVersion":4,"flowLogGUID":"66aa66aa-bb77-cc88-dd99-00ee00ee00ee","macAddress":"00-22-48-1A-2B-3C","category":"FlowLogFlowEvent","flowLogResourceID":"/SUBSCRIPTIONS/X/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS2EUAP/FLOWLOGS/VNETFLOWLOG","targetResourceID":"/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/VIRTUALNETWORKS/VNET","operationName":"FlowLogFlowEvent","flowRecords":{"flows":[{"aclID":"00aa00aa-bb11-cc22-dd33-44ee44ee44ee","flowGroups":[{"rule":"DefaultRule_AllowInternetOutBound","flowTuples":["1663146003599,10.0.0.6,52.239.184.180,23956,443,6,O,B,NX,0,0,0,0","1663146003606,10.0.0.6,52.239.184.180,23956,443,6,O,E,NX,3,767,2,1580"]}]}]}}"#;

    #[test]
    fn the_blocks_of_a_document_parse_one_by_one() {
        let open = parse_block("b", 0, br#"{"records":["#);
        assert!(open.entries.is_empty() && open.errors.is_empty());
        let first = parse_block("b", 1, NSG.as_bytes());
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(first.records, 1);
        assert_eq!(first.entries.len(), 3);
        assert_eq!(first.entries[0].rule, "DefaultRule_DenyAllInBound");
        assert_eq!(first.entries[0].mac, "000D3AF87856");
        assert_eq!(first.entries[2].tuple.state, Some(FlowState::End));
        let more = parse_block("b", 2, format!(",{VNET},{NSG}").as_bytes());
        assert!(more.errors.is_empty(), "{:?}", more.errors);
        assert_eq!(more.records, 2);
        assert_eq!(more.entries[0].mac, "0022481A2B3C");
        assert_eq!(more.entries[0].rule, "DefaultRule_AllowInternetOutBound");
        let close = parse_block("b", 3, b"]}");
        assert!(close.entries.is_empty() && close.errors.is_empty());
        // A record that ends in `]}` is not taken for the closing.
        let tail = r#"{"flowRecords":{"flows":[]}, "x":"]}", "y":[1]}"#;
        let p = parse_block("b", 2, format!(",{tail}").as_bytes());
        assert_eq!((p.records, p.errors.len()), (1, 0), "{:?}", p.errors);
        let p = parse_block("b", 2, format!(",{tail}]}}").as_bytes());
        assert_eq!((p.records, p.errors.len()), (1, 0), "{:?}", p.errors);
        // A whole document in one block, spaced and with other key case.
        let whole = format!("{{ \"Records\" : [ {NSG} ,\n{VNET} ] }}\n");
        let all = parse_block("b", 0, whole.as_bytes());
        assert!(all.errors.is_empty(), "{:?}", all.errors);
        assert_eq!(all.entries.len(), 5);
        let lower = NSG
            .replace("\"Version\"", "\"version\"")
            .replace("\"flowTuples\"", "\"FLOWTUPLES\"");
        assert_eq!(parse_block("b", 1, lower.as_bytes()).entries.len(), 3);
    }

    #[test]
    fn damage_is_counted_per_block_record_and_tuple() {
        let cut = parse_block("x/PT1H.json", 4, &NSG.as_bytes()[..NSG.len() / 2]);
        assert!(cut.entries.is_empty());
        let e = cut.errors[0].to_string();
        assert!(
            e.starts_with("x/PT1H.json: block 4: not JSON records"),
            "{e}"
        );
        let bin = parse_block("x", 1, &[0xff, 0xfe, b'{']);
        assert!(bin.errors[0].to_string().contains("not UTF-8"));
        let v3 = NSG.replace("\"Version\":2", "\"Version\":3");
        let p = parse_block("x", 1, format!(",{v3},{VNET}").as_bytes());
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0]
            .to_string()
            .contains("record 0: properties.Version is not 1 or 2"));
        assert_eq!(p.entries.len(), 2, "the next record is still read");
        let bad = VNET.replace("23956,443,6,O,E", "23956,443,6,Q,E");
        let p = parse_block("x", 1, bad.as_bytes());
        assert_eq!((p.entries.len(), p.errors.len()), (1, 1));
        assert!(matches!(p.errors[0], FlowlogError::Tuple { .. }));
        for junk in [
            "[]",
            "1",
            "{}",
            "{\"flowRecords\":{}}",
            "{\"flowRecords\":{\"flows\":[{\"flowGroups\":[{\"flowTuples\":[1]}]}]}}",
        ] {
            let p = parse_block("x", 1, junk.as_bytes());
            assert!(p.entries.is_empty(), "{junk}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let doc = format!("{{\"records\":[{NSG},{VNET}]}}");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3_000 {
            let mut b = doc.clone().into_bytes();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                b[i] = next() as u8;
            }
            let cut = (next() % b.len() as u64) as usize;
            let _ = parse_block("x", 0, &b);
            let _ = parse_block("x", 0, &b[..cut]);
            let _ = parse_block("x", 0, &b[cut..]);
        }
    }
}
