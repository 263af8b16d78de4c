//! A NATS JetStream cluster of real `nats-server` processes on loopback
//! (Debian's nats-server 2.9.10): each node with its own client, cluster
//! and monitoring ports and its store under the test's directory, killed
//! with SIGKILL and started again on the same store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::agents::{free_port, Proc};
use super::container::{poll, poll_telling};

pub struct Nats {
    nodes: Vec<Node>,
    scheme: String,
}

struct Node {
    conf: PathBuf,
    client: String,
    http: String,
    proc: Option<Proc>,
}

impl Nats {
    /// `n` nodes (one: a single server, no cluster), started and serving
    /// JetStream.
    pub fn start(dir: &Path, n: usize) -> Nats {
        Self::start_with(dir, n, "", "nats")
    }

    /// The same with `extra` added to each node's configuration (TLS,
    /// authorization), its clients reached by `scheme` (`tls` or `nats`).
    pub fn start_with(dir: &Path, n: usize, extra: &str, scheme: &str) -> Nats {
        let ports: Vec<[String; 3]> = (0..n)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let mut nodes = Vec::new();
        for (i, [client, cluster, http]) in ports.iter().enumerate() {
            let store = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&store).unwrap();
            let port = |a: &str| a.rsplit(':').next().unwrap().to_string();
            let mut conf = format!(
                "server_name: n{i}\nlisten: {client:?}\nhttp: {http:?}\n\
                 jetstream {{ store_dir: {store:?} }}\n{extra}"
            );
            if n > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, p)| format!("\"nats-route://127.0.0.1:{}\"", port(&p[1])))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{ name: vmflow-test, listen: {cluster:?}, routes: [{}] }}\n",
                    routes.join(", ")
                ));
            }
            let path = dir.join(format!("nats-{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            nodes.push(Node {
                conf: path,
                client: client.clone(),
                http: http.clone(),
                proc: None,
            });
        }
        let mut nats = Nats {
            nodes,
            scheme: scheme.to_string(),
        };
        for i in 0..n {
            nats.start_node(i);
        }
        for i in 0..n {
            nats.wait_healthy(i);
        }
        nats
    }

    /// `nats://…` of every node, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}://{}", self.scheme, n.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.proc.is_none(), "node {i} runs already");
        node.proc = Some(Proc::spawn(
            Command::new("nats-server").arg("-c").arg(&node.conf),
        ));
    }

    /// SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill();
        }
    }

    /// SIGTERM, and waits for the exit: a single server flushes its
    /// store (nats-server does not fsync each message; in a cluster the
    /// other replicas hold what was acknowledged, so SIGKILL is fine there).
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.sigterm();
            p.wait_code(Duration::from_secs(30));
        }
    }

    /// Waits until the node's `/healthz` says JetStream is ready (its
    /// metadata current, a leader elected).
    pub fn wait_healthy(&self, i: usize) {
        let node = &self.nodes[i];
        poll_telling(
            Duration::from_secs(60),
            || {
                http_get(&node.http, "/healthz")
                    .filter(|r| r.lines().next().is_some_and(|l| l.contains(" 200 ")))
            },
            || {
                let said = node.proc.as_ref().map(Proc::text).unwrap_or_default();
                format!("nats node {i} healthy; it said:\n{said}")
            },
        );
    }

    /// Messages in `stream` as the first running node's replica holds
    /// them (0 before the stream exists).
    pub fn messages(&self, stream: &str) -> u64 {
        for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
            let Some(r) = http_get(&n.http, "/jsz?streams=true") else {
                continue;
            };
            let Some(body) = r.split("\r\n\r\n").nth(1) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
                continue;
            };
            let found = v["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                .find(|s| s["name"] == stream)
                .and_then(|s| s["state"]["messages"].as_u64());
            return found.unwrap_or(0);
        }
        0
    }

    /// Waits until the stream holds `at_least` messages.
    pub fn wait_messages(&self, stream: &str, at_least: u64) {
        poll(
            &format!("{at_least} messages in {stream}"),
            Duration::from_secs(60),
            || (self.messages(stream) >= at_least).then_some(()),
        );
    }

    /// Waits until node `i` has closed a client connection for `reason`
    /// (`/connz?state=closed`, e.g. "Authentication Expired").
    pub fn wait_closed(&self, i: usize, reason: &str) {
        let http = &self.nodes[i].http;
        poll(
            &format!("a connection closed on node {i} for {reason:?}"),
            Duration::from_secs(60),
            || {
                let r = http_get(http, "/connz?state=closed")?;
                r.contains(&format!("\"reason\": \"{reason}\""))
                    .then_some(())
            },
        );
    }

    /// The node's log so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i]
            .proc
            .as_ref()
            .map(|p| p.text())
            .unwrap_or_default()
    }
}

/// A plain HTTP GET of the monitoring port: the whole response, or `None`
/// when nothing answers.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Decentralized (JWT) authentication, as `nsc` would set it up: an
/// operator, a system account and an account with JetStream, their JWTs
/// signed here with the NATS authors' nkeys crate; users of the account get
/// credentials files (user JWT + seed), as `nsc generate creds` writes them.
pub struct Operator {
    account: nkeys::KeyPair,
    /// Server configuration lines that trust the operator and know both
    /// accounts (memory resolver).
    pub conf: String,
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A JWT (v2 claims) for `sub`, signed by `issuer`, valid until `exp`
/// (Unix seconds) if given.
fn jwt(
    issuer: &nkeys::KeyPair,
    sub: &str,
    name: &str,
    nats: serde_json::Value,
    exp: Option<u64>,
) -> String {
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let mut claims = serde_json::json!({
        "jti": format!("vmflow-test-{sub}"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": sub,
        "nats": nats,
    });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    let signing = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = issuer.sign(signing.as_bytes()).unwrap();
    format!("{signing}.{}", b64(&sig))
}

fn user_creds(dir: &Path, name: &str, account: &nkeys::KeyPair, exp: Option<u64>) -> PathBuf {
    let user = nkeys::KeyPair::new_user();
    let nats = serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
        "subs": -1, "data": -1, "payload": -1});
    let token = jwt(account, &user.public_key(), name, nats, exp);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, text).unwrap();
    path
}

impl Operator {
    pub fn new() -> Operator {
        let op = nkeys::KeyPair::new_operator();
        let sys = nkeys::KeyPair::new_account();
        let account = nkeys::KeyPair::new_account();
        let limits = serde_json::json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
            "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
        let mut js = limits.clone();
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            js[k] = (-1).into();
        }
        let account_jwt = |kp: &nkeys::KeyPair, name: &str, limits: &serde_json::Value| {
            let nats = serde_json::json!({"type": "account", "version": 2, "limits": limits});
            jwt(&op, &kp.public_key(), name, nats, None)
        };
        let operator_nats = serde_json::json!({"type": "operator", "version": 2,
            "system_account": sys.public_key()});
        let conf = format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            jwt(&op, &op.public_key(), "vmflow-test", operator_nats, None),
            sys.public_key(),
            sys.public_key(),
            account_jwt(&sys, "SYS", &limits),
            account.public_key(),
            account_jwt(&account, "VMFLOW", &js),
        );
        Operator { account, conf }
    }

    /// Credentials of a new user of the account.
    pub fn creds(&self, dir: &Path, name: &str) -> PathBuf {
        user_creds(dir, name, &self.account, None)
    }

    /// Credentials of a new user of the account whose JWT expires at `exp`
    /// (Unix seconds).
    pub fn creds_until(&self, dir: &Path, name: &str, exp: u64) -> PathBuf {
        user_creds(dir, name, &self.account, Some(exp))
    }

    /// Credentials of a user of an account the server does not know.
    pub fn stranger_creds(dir: &Path, name: &str) -> PathBuf {
        user_creds(dir, name, &nkeys::KeyPair::new_account(), None)
    }
}
