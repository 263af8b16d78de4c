//! Speaking the agent–collector protocol by hand, for tests that must send
//! what a real agent never would: repeated, reordered or absurd sequence
//! numbers, unusual names, oversized frames.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use vmflow_proto::{encode_frame, encode_records, Batch, Frame, FrameDecoder, Hello};

/// Issues a client certificate with common name `cn` from the test CA in
/// `certs` (written by `vmflow certs init`) as `DIR/FILE.pem` and
/// `DIR/FILE-key.pem`, whatever the name (the CLI refuses unusual ones).
pub fn issue_agent(certs: &Path, cn: &str, file: &str) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca-key.pem")).unwrap()).unwrap();
    // The CA's subject as `certs init` wrote it: the issuer name must match.
    let ca_name = vmflow::tls::cert_names(&certs.join("ca.pem")).remove(0);
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(certs.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(certs.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
}

pub struct Client {
    tls: TlsStream<TcpStream>,
    dec: FrameDecoder,
}

impl Client {
    /// Connects as `file` (a certificate in `certs`) and says hello.
    /// Returns the client and the collector's `last_seq`.
    pub async fn hello(
        addr: &str,
        certs: &Path,
        file: &str,
        stream: &str,
        epoch: u64,
    ) -> (Client, u64) {
        let cfg = vmflow::tls::client_config(
            &certs.join("ca.pem"),
            &certs.join(format!("{file}.pem")),
            &certs.join(format!("{file}-key.pem")),
        )
        .unwrap();
        let mut c = Client::connect(addr, cfg).await;
        c.send(&Frame::Hello(Hello {
            version: vmflow_proto::PROTOCOL_VERSION,
            agent_id: file.into(),
            host: "test".into(),
            agent_version: "test".into(),
            capabilities: vec![],
            stream: stream.into(),
            epoch,
        }))
        .await;
        match c.recv().await {
            Some(Frame::HelloAck(a)) => (c, a.last_seq),
            other => panic!("expected hello_ack, got {other:?}"),
        }
    }

    pub async fn connect(addr: &str, cfg: Arc<rustls::ClientConfig>) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        Client {
            tls,
            dec: FrameDecoder::default(),
        }
    }

    pub async fn send(&mut self, f: &Frame) {
        let mut out = Vec::new();
        encode_frame(f, &mut out);
        self.tls.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await
    }

    /// A batch of records with these flow ids.
    pub async fn batch(&mut self, seq: u64, follows: Option<u64>, ids: &[u64]) {
        let recs: Vec<vmflow_proto::FlowRecord> = ids.iter().map(|&i| record(i)).collect();
        self.send(&Frame::Batch(Batch {
            seq,
            records: recs.len() as u32,
            block: encode_records(&recs, 1),
            source_drops: 0,
            follows,
        }))
        .await;
    }

    /// The next frame; `None` when the collector closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(Duration::from_secs(20), self.tls.read(&mut buf))
                .await
                .expect("the collector answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.dec.push(&buf[..n]);
        }
    }
}

/// A record whose flow id is `id` (and whose time puts it in one hour).
pub fn record(id: u64) -> vmflow_proto::FlowRecord {
    let t = 1_760_000_000_000_000_000 + id * 1_000_000;
    vmflow_proto::FlowRecord {
        flow_id: id,
        segment: 0,
        is_final: true,
        ip_version: 4,
        proto: 17,
        vlan: None,
        src_addr: "10.0.0.1".parse().unwrap(),
        src_port: 1,
        dst_addr: "10.0.0.2".parse().unwrap(),
        dst_port: 2,
        direction: vmflow_proto::Direction::Internal,
        first_ns: t,
        last_ns: t,
        fwd_packets: 1,
        fwd_bytes: 50,
        rev_packets: 0,
        rev_bytes: 0,
        fwd_tcp_flags: 0,
        rev_tcp_flags: 0,
        icmp_type: None,
        icmp_code: None,
        end_reason: vmflow_proto::EndReason::Idle,
        gap: false,
        rule: None,
        decision: None,
        remote: None,
    }
}

/// The flow ids of every record in `dir`'s hour files, sorted.
pub fn ids_in(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return ids;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                ids.push(v["flow_id"].as_u64().unwrap());
            }
        }
    }
    ids.sort_unstable();
    ids
}
