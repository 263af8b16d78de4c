//! A NATS JetStream cluster of real `nats-server` processes on loopback
//! (Debian's nats-server 2.9.10): each node with its own client, cluster
//! and monitoring ports and its store under the test's directory, killed
//! with SIGKILL and started again on the same store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::agents::{free_port, Proc};
use super::container::poll;

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
        let http = &self.nodes[i].http;
        poll(
            &format!("nats node {i} healthy"),
            Duration::from_secs(60),
            || {
                http_get(http, "/healthz")
                    .filter(|r| r.lines().next().is_some_and(|l| l.contains(" 200 ")))
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
