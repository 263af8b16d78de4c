//! A stand-in for the Azure management API's Network Watcher operations
//! (there is no emulator to run): it answers with the bodies and headers of
//! the official examples in `tests/fixtures/azure-examples/` (host names
//! pointed at itself; the malformed Location of the QueryStatus 202 example
//! served verbatim), on a clock the test moves.
//!
//! Captures behave as the docs describe: running from creation (after a
//! start-up delay) until stopped or until `timeLimitInSeconds`; a capture
//! records the test's traffic for the time it ran.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::http_stub::{Request, Response, Stub};

pub fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/azure-examples")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[derive(Clone, Debug)]
pub struct Cap {
    pub name: String,
    pub target: String,
    pub created: u64,
    pub stopped: Option<u64>,
    pub limit: u64,
    pub deleted: bool,
    pub props: Value,
}

impl Cap {
    /// When it stops recording (by `stop` or by its time limit).
    pub fn end(&self) -> u64 {
        self.stopped
            .unwrap_or(u64::MAX)
            .min(self.created + self.limit)
    }
}

/// What the stand-in should do to the next matching request.
#[derive(Clone, Debug)]
pub struct Inject {
    /// Method and a path suffix the request must end with (before `?`).
    pub method: &'static str,
    pub suffix: &'static str,
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Default)]
pub struct State {
    pub watcher: Option<Value>,
    pub caps: BTreeMap<String, Cap>,
    /// Async operation id → polls still answered `InProgress`.
    pub ops: HashMap<String, u32>,
    /// Location URLs → polls still answered 202, then the final body.
    pub locations: HashMap<String, (u32, Option<Value>)>,
    pub refuse_concurrent: bool,
    /// Answer captures asking for `continuousCapture` with 400 (the preview
    /// feature not available).
    pub refuse_continuous: bool,
    pub startup_delay: u64,
    /// Answer the next queryStatus with the published 202 example (its
    /// malformed Location), verbatim.
    pub malformed_status: u32,
    /// Answer the next queryStatus with a 202 and a proper Location.
    pub status_via_location: u32,
    pub inject: VecDeque<Inject>,
    pub log: Vec<String>,
    pub token: String,
    /// Use the wall clock (Unix seconds) instead of the test's clock.
    pub wall_clock: bool,
    next_id: u64,
}

pub struct ArmStandIn {
    pub url: String,
    pub now: Arc<AtomicU64>,
    pub state: Arc<Mutex<State>>,
}

fn err(status: u16, code: &str, msg: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"code": code, "message": msg}}).to_string(),
    )
}

fn iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = vmflow::calendar::civil_from_days(days);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

impl ArmStandIn {
    pub fn start(token: &str) -> ArmStandIn {
        let now = Arc::new(AtomicU64::new(0));
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            ..State::default()
        }));
        let (n, st) = (now.clone(), state.clone());
        let stub = Stub::start(move |r| {
            let mut s = st.lock().unwrap();
            let now = if s.wall_clock {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
            } else {
                n.load(Ordering::SeqCst)
            };
            handle(&mut s, now, r)
        });
        ArmStandIn {
            url: stub.url,
            now,
            state,
        }
    }

    pub fn set_now(&self, t: u64) {
        self.now.store(t, Ordering::SeqCst);
    }
}

fn handle(s: &mut State, now: u64, r: &Request) -> Response {
    let host = format!(
        "http://{}",
        r.headers.get("host").cloned().unwrap_or_default()
    );
    s.log.push(format!("{} {}", r.method, r.path));
    if r.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {}", s.token)) {
        return err(401, "AuthenticationFailed", "missing or wrong bearer token");
    }
    if !r.query.contains_key("api-version") {
        return err(400, "MissingApiVersionParameter", "api-version is required");
    }
    if let Some(pos) = s
        .inject
        .iter()
        .position(|i| i.method == r.method && r.path.ends_with(i.suffix))
    {
        let i = s.inject.remove(pos).unwrap();
        let mut resp = err(i.status, "Throttled", "try again later");
        if let Some(a) = i.retry_after {
            resp = resp.header("Retry-After", &a.to_string());
        }
        return resp;
    }
    let m = r.method.as_str();
    let path = r.path.clone();
    // Operation status monitors and Location URLs this stand-in handed out.
    if let Some(id) = path
        .rsplit("/operations/")
        .next()
        .filter(|_| path.contains("/operations/"))
    {
        let left = s.ops.entry(id.to_string()).or_insert(0);
        let status = if *left > 0 {
            *left -= 1;
            "InProgress"
        } else {
            "Succeeded"
        };
        return Response::json(200, &json!({"status": status}).to_string())
            .header("Retry-After", "1");
    }
    if path.contains("/operationresults/") {
        let e = s.locations.entry(path.clone()).or_insert((0, None));
        if e.0 > 0 {
            e.0 -= 1;
            return Response::json(202, "")
                .header("Location", &format!("{host}{path}?api-version=x"));
        }
        return match e.1.clone() {
            Some(b) => Response::json(200, &b.to_string()),
            None => Response::json(204, ""),
        };
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network/networkWatchers/{nw}[/packetCaptures[/{pc}[/op]]]
    if parts.len() < 8 || parts[6] != "networkWatchers" {
        return err(404, "NotFound", "no such route in the stand-in");
    }
    let nw_id = format!("/{}", parts[..8].join("/"));
    match (m, parts.len()) {
        ("GET", 8) => match &s.watcher {
            Some(w) => Response::json(200, &w.to_string()),
            None => err(404, "ResourceNotFound", "The Resource was not found."),
        },
        ("PUT", 8) => {
            let mut b = example("NetworkWatcherCreate")["responses"]["201"]["body"].clone();
            b["id"] = json!(nw_id);
            b["name"] = json!(parts[7]);
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            b["location"] = body["location"].clone();
            let created = s.watcher.is_none();
            s.watcher = Some(b.clone());
            Response::json(if created { 201 } else { 200 }, &b.to_string())
        }
        _ if s.watcher.is_none() => err(404, "ResourceNotFound", "network watcher not found"),
        ("GET", 9) => {
            let item = example("NetworkWatcherPacketCapturesList")["responses"]["200"]["body"]
                ["value"][1]
                .clone();
            let value: Vec<Value> = s
                .caps
                .values()
                .filter(|c| !c.deleted)
                .map(|c| cap_body(&item, &nw_id, c))
                .collect();
            Response::json(200, &json!({ "value": value }).to_string())
        }
        ("PUT", 10) => {
            let name = parts[9].to_string();
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let props = body["properties"].clone();
            let target = props["target"].as_str().unwrap_or("").to_string();
            if s.refuse_continuous && props.get("continuousCapture").is_some() {
                return err(
                    400,
                    "InvalidRequestFormat",
                    "Could not find member 'continuousCapture'",
                );
            }
            if props.get("continuousCapture").is_some()
                && props["storageLocation"].get("filePath").is_some()
            {
                return err(
                    400,
                    "InvalidRequestFormat",
                    "filePath is not allowed with continuousCapture; use localPath",
                );
            }
            if target.is_empty() || props.get("storageLocation").is_none() {
                return err(
                    400,
                    "InvalidRequestFormat",
                    "target and storageLocation are required",
                );
            }
            let running = s
                .caps
                .values()
                .any(|c| !c.deleted && c.target.eq_ignore_ascii_case(&target) && now < c.end());
            if s.refuse_concurrent && running {
                return err(
                    409,
                    "PacketCaptureConflict",
                    "A packet capture is already running on the target",
                );
            }
            let limit = props["timeLimitInSeconds"].as_u64().unwrap_or(18_000);
            let cap = Cap {
                name: name.clone(),
                target,
                created: now,
                stopped: None,
                limit,
                deleted: false,
                props: props.clone(),
            };
            let mut b =
                example("NetworkWatcherPacketCaptureCreate")["responses"]["201"]["body"].clone();
            b["name"] = json!(name);
            b["id"] = json!(format!("{nw_id}/packetCaptures/{name}"));
            let mut p = props;
            p["provisioningState"] = json!("Updating");
            b["properties"] = p;
            s.caps.insert(name, cap);
            s.next_id += 1;
            let op = format!("op{}", s.next_id);
            s.ops.insert(op.clone(), 1);
            let sub = parts[1];
            Response::json(201, &b.to_string())
                .header(
                    "Azure-AsyncOperation",
                    &format!("{host}/subscriptions/{sub}/providers/Microsoft.Network/locations/eastus/operations/{op}?api-version=2024-05-01"),
                )
                .header("Retry-After", "2")
        }
        ("GET", 10) => {
            let Some(c) = s.caps.get(parts[9]).filter(|c| !c.deleted) else {
                return err(404, "NotFound", "packet capture not found");
            };
            let mut b =
                example("NetworkWatcherPacketCaptureGet")["responses"]["200"]["body"].clone();
            b["name"] = json!(c.name);
            b["id"] = json!(format!("{nw_id}/packetCaptures/{}", c.name));
            let mut p = c.props.clone();
            p["provisioningState"] = json!("Succeeded");
            b["properties"] = p;
            Response::json(200, &b.to_string())
        }
        ("DELETE", 10) => {
            let name = parts[9];
            match s.caps.get_mut(name).filter(|c| !c.deleted) {
                None => Response::json(204, ""),
                Some(c) => {
                    c.deleted = true;
                    c.stopped.get_or_insert(now);
                    let ex = example("NetworkWatcherPacketCaptureDelete");
                    let loc = location(&ex["responses"]["202"]["headers"]["location"], &host, s);
                    s.locations.insert(path_of(&loc), (1, None));
                    Response::json(202, "")
                        .header("Location", &loc)
                        .header("Retry-After", "1")
                }
            }
        }
        ("POST", 11) if parts[10] == "queryStatus" => {
            let Some(c) = s.caps.get(parts[9]).filter(|c| !c.deleted).cloned() else {
                return err(404, "NotFound", "packet capture not found");
            };
            let ex = example("NetworkWatcherPacketCaptureQueryStatus");
            if s.malformed_status > 0 {
                s.malformed_status -= 1;
                let r202 = &ex["responses"]["202"];
                return Response::json(202, &r202["body"].to_string())
                    .header("Location", r202["headers"]["Location"].as_str().unwrap())
                    .header("Retry-After", "3");
            }
            let mut b = ex["responses"]["200"]["body"].clone();
            b["name"] = json!(c.name);
            b["id"] = json!(format!("{nw_id}/packetCaptures/{}", c.name));
            b["captureStartTime"] = json!(iso(c.created));
            if now < c.end() {
                b["packetCaptureStatus"] = json!("Running");
                b.as_object_mut().unwrap().remove("stopReason");
            } else {
                b["packetCaptureStatus"] = json!("Stopped");
                b["stopReason"] = json!(if c.stopped.is_some_and(|t| t < c.created + c.limit) {
                    "Manual"
                } else {
                    "TimeExceeded"
                });
            }
            if s.status_via_location > 0 {
                s.status_via_location -= 1;
                s.next_id += 1;
                let loc = format!(
                    "{host}{nw_id}/operationresults/qs{}?api-version=2024-05-01",
                    s.next_id
                );
                s.locations.insert(path_of(&loc), (1, Some(b)));
                return Response::json(202, "").header("Location", &loc);
            }
            Response::json(200, &b.to_string())
        }
        ("POST", 11) if parts[10] == "stop" => {
            let name = parts[9];
            match s.caps.get_mut(name).filter(|c| !c.deleted) {
                None => err(404, "NotFound", "packet capture not found"),
                Some(c) => {
                    if now < c.end() {
                        c.stopped = Some(now);
                    }
                    let ex = example("NetworkWatcherPacketCaptureStop");
                    let loc = location(&ex["responses"]["202"]["headers"]["location"], &host, s);
                    s.locations.insert(path_of(&loc), (1, None));
                    Response::json(202, "").header("Location", &loc)
                }
            }
        }
        _ => err(405, "MethodNotAllowed", "not in the stand-in"),
    }
}

/// The example's well-formed Location, pointed at this stand-in and made unique.
fn location(v: &Value, host: &str, s: &mut State) -> String {
    s.next_id += 1;
    v.as_str()
        .unwrap()
        .replace("https://management.azure.com", host)
        .replace("000000000000000000000==", &format!("op{}", s.next_id))
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let p = rest.find('/').map_or("", |i| &rest[i..]);
    p.split('?').next().unwrap_or("").to_string()
}

fn cap_body(item: &Value, nw_id: &str, c: &Cap) -> Value {
    let mut b = item.clone();
    b["name"] = json!(c.name);
    b["id"] = json!(format!("{nw_id}/packetCaptures/{}", c.name));
    let mut p = c.props.clone();
    p["provisioningState"] = json!("Succeeded");
    b["properties"] = p;
    b
}
