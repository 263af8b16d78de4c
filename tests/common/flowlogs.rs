//! A flow-log writer that behaves like Azure's: each NIC's hourly
//! `PT1H.json` is a block blob committed block by block — the opening
//! `{"records":[`, then one block per record (every one after the first
//! starting with a comma), the closing `]}` kept last — and flows logged as
//! NSG version 2 or VNet tuples (B, C…, E, D; encryption states). It keeps
//! its own model of every flow and gives the records the agent should
//! produce from it, written here from the flow-log documentation and not
//! from the agent's stitcher.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use vmflow::azure::blob::BlobClient;
use vmflow_proto::{flow_id, Decision, Direction, EndReason, FlowRecord};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NsgV2,
    Vnet,
}

/// One hourly blob being written.
struct Blob {
    ids: Vec<String>,
    records: usize,
}

/// One NIC's flow log.
pub struct Nic {
    pub kind: Kind,
    pub mac: String,
    pub prefix: String,
    blobs: BTreeMap<String, Blob>,
}

/// A flow as the generator plays it.
pub struct Flow {
    pub mac: String,
    pub kind: Kind,
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub inbound: bool,
    pub rule: String,
    /// (time in ms, state letter, counters)
    pub tuples: Vec<(u64, char, [u64; 4])>,
}

pub fn block_id(n: usize) -> String {
    // Azure needs ids of one length within a blob.
    base64::engine::general_purpose::STANDARD.encode(format!("blk-{n:08}"))
}

/// The blob name of `nic`'s hour starting at Unix second `hour`.
pub fn blob_name(nic: &Nic, hour: u64) -> String {
    let days = (hour / 86_400) as i64;
    let (y, m, d) = civil(days);
    format!(
        "{}y={y:04}/m={m:02}/d={d:02}/h={:02}/m=00/macAddress={}/PT1H.json",
        nic.prefix,
        hour % 86_400 / 3600,
        nic.mac
    )
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Nic {
    pub fn new(kind: Kind, mac: &str, prefix: &str) -> Nic {
        Nic {
            kind,
            mac: mac.into(),
            prefix: prefix.into(),
            blobs: BTreeMap::new(),
        }
    }

    /// Appends one record holding `tuples` (each with its rule) to the blob
    /// of the hour of `time_ms`, committing it as the service does.
    pub fn append(
        &mut self,
        c: &mut BlobClient,
        time_ms: u64,
        tuples: &[(String, String)],
    ) -> String {
        let name = blob_name(self, time_ms / 1000 / 3600 * 3600);
        let record = self.record(time_ms, tuples);
        let blob = self.blobs.entry(name.clone()).or_insert_with(|| Blob {
            ids: Vec::new(),
            records: 0,
        });
        if blob.ids.is_empty() {
            c.put_block(&name, &block_id(0), br#"{"records":["#)
                .unwrap();
            c.put_block(&name, &block_id(1), b"]}").unwrap();
            blob.ids = vec![block_id(0), block_id(1)];
        }
        let body = if blob.records == 0 {
            record
        } else {
            format!(",{record}")
        };
        let id = block_id(blob.ids.len());
        c.put_block(&name, &id, body.as_bytes()).unwrap();
        blob.records += 1;
        let close = blob.ids.pop().unwrap();
        blob.ids.push(id);
        blob.ids.push(close);
        c.put_block_list(&name, &blob.ids).unwrap();
        name
    }

    /// Appends a raw block (e.g. a damaged one) to the blob of `time_ms`.
    pub fn append_raw(&mut self, c: &mut BlobClient, time_ms: u64, body: &[u8]) -> String {
        let name = blob_name(self, time_ms / 1000 / 3600 * 3600);
        let blob = self.blobs.get_mut(&name).expect("a blob with records");
        let id = block_id(blob.ids.len());
        c.put_block(&name, &id, body).unwrap();
        let close = blob.ids.pop().unwrap();
        blob.ids.push(id);
        blob.ids.push(close);
        c.put_block_list(&name, &blob.ids).unwrap();
        name
    }

    /// The committed block ids of `name`, closing last.
    pub fn ids(&self, name: &str) -> Vec<String> {
        self.blobs[name].ids.clone()
    }

    fn record(&self, time_ms: u64, tuples: &[(String, String)]) -> String {
        let mut by_rule: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (rule, t) in tuples {
            by_rule.entry(rule).or_default().push(t);
        }
        let secs = time_ms / 1000;
        let time = format!(
            "2026-12-02T{:02}:{:02}:{:02}.0000000Z",
            secs % 86_400 / 3600,
            secs % 3600 / 60,
            secs % 60
        );
        match self.kind {
            Kind::NsgV2 => {
                let flows: Vec<serde_json::Value> = by_rule
                    .iter()
                    .map(|(rule, ts)| {
                        serde_json::json!({"rule": rule, "flows": [{"mac": self.mac, "flowTuples": ts}]})
                    })
                    .collect();
                serde_json::json!({
                    "time": time,
                    "systemId": "5f1e6f9a-0000-4000-8000-000000000001",
                    "category": "NetworkSecurityGroupFlowEvent",
                    "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG",
                    "operationName": "NetworkSecurityGroupFlowEvents",
                    "properties": {"Version": 2, "flows": flows}
                })
                .to_string()
            }
            Kind::Vnet => {
                let groups: Vec<serde_json::Value> = by_rule
                    .iter()
                    .map(|(rule, ts)| serde_json::json!({"rule": rule, "flowTuples": ts}))
                    .collect();
                serde_json::json!({
                    "time": time,
                    "flowLogVersion": 4,
                    "flowLogGUID": "66aa66aa-bb77-cc88-dd99-00ee00ee00ee",
                    "macAddress": self.mac,
                    "category": "FlowLogFlowEvent",
                    "flowLogResourceID": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/FL",
                    "targetResourceID": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/VIRTUALNETWORKS/VNET",
                    "operationName": "FlowLogFlowEvent",
                    "flowRecords": {"flows": [{"aclID": "00aa00aa-bb11-cc22-dd33-44ee44ee44ee", "flowGroups": groups}]}
                })
                .to_string()
            }
        }
    }
}

const ENCRYPTION: [&str; 4] = ["X", "NX", "NX_HW_NOT_SUPPORTED", "NX_LOCAL_DST"];

impl Flow {
    /// The tuple string for this flow's tuple `i`.
    pub fn tuple(&self, i: usize) -> String {
        let (ms, st, c) = self.tuples[i];
        let dir = if self.inbound { "I" } else { "O" };
        let empty = st == 'B';
        let counters = if empty {
            ",,,".to_string()
        } else {
            format!("{},{},{},{}", c[0], c[1], c[2], c[3])
        };
        match self.kind {
            Kind::NsgV2 => {
                let proto = if self.proto == 6 { "T" } else { "U" };
                let (decision, state) = if st == 'D' { ("D", 'B') } else { ("A", st) };
                format!(
                    "{},{},{},{},{},{proto},{dir},{decision},{state},{counters}",
                    ms / 1000,
                    self.src,
                    self.dst,
                    self.sport,
                    self.dport
                )
            }
            Kind::Vnet => {
                let enc = ENCRYPTION[(self.sport as usize + i) % ENCRYPTION.len()];
                let counters = if st == 'D' {
                    "0,0,0,0".to_string()
                } else {
                    counters
                };
                format!(
                    "{ms},{},{},{},{},{},{dir},{st},{enc},{counters}",
                    self.src, self.dst, self.sport, self.dport, self.proto
                )
            }
        }
    }

    /// Tuple times as the agent reads them: NSG logs have whole seconds.
    fn ns(&self, i: usize) -> u64 {
        let ms = self.tuples[i].0;
        match self.kind {
            Kind::NsgV2 => ms / 1000 * 1_000_000_000,
            Kind::Vnet => ms * 1_000_000,
        }
    }

    /// The records this flow should become: a C tuple is an active
    /// segment from the previous tuple to it, E the final one, a denied
    /// flow a single final record.
    pub fn truth(&self) -> Vec<FlowRecord> {
        let first = self.ns(0);
        let id = flow_id(
            None, self.proto, self.src, self.sport, self.dst, self.dport, first,
        );
        let base =
            |segment: u32, from: u64, to: u64, c: [u64; 4], fin: bool, why, decision| FlowRecord {
                flow_id: id,
                segment,
                is_final: fin,
                ip_version: if self.src.is_ipv4() { 4 } else { 6 },
                proto: self.proto,
                vlan: None,
                src_addr: self.src,
                src_port: self.sport,
                dst_addr: self.dst,
                dst_port: self.dport,
                direction: if self.inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                first_ns: from,
                last_ns: to,
                fwd_packets: c[0],
                fwd_bytes: c[1],
                rev_packets: c[2],
                rev_bytes: c[3],
                fwd_tcp_flags: 0,
                rev_tcp_flags: 0,
                icmp_type: None,
                icmp_code: None,
                end_reason: why,
                gap: false,
                rule: Some(self.rule.clone()),
                decision: Some(decision),
                remote: None,
            };
        if self.tuples[0].1 == 'D' {
            return vec![base(
                0,
                first,
                first,
                [0; 4],
                true,
                EndReason::Idle,
                Decision::Deny,
            )];
        }
        let mut out = Vec::new();
        for i in 1..self.tuples.len() {
            let (_, st, c) = self.tuples[i];
            let fin = st == 'E';
            let why = if fin {
                EndReason::Idle
            } else {
                EndReason::Active
            };
            out.push(base(
                (i - 1) as u32,
                self.ns(i - 1),
                self.ns(i),
                c,
                fin,
                why,
                Decision::Allow,
            ));
        }
        out
    }
}

/// A deterministic little generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
