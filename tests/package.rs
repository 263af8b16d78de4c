//! The .deb under a real systemd: each test boots its own Debian bookworm
//! container (systemd as PID 1, `tests/common/container.rs`), gives it a NIC
//! (a veth whose other end is a network namespace on the host, where the test
//! sends traffic and tcpdump records it), installs the package and checks
//! what an operator relies on: the hardened unit runs as `vmflow` with only
//! CAP_NET_RAW; traffic on the NIC reaches the `vmflow-collect` unit as
//! the flows tcpdump saw; an upgrade keeps the edited conffile and the spool
//! and neither loses nor doubles a record; `systemctl reload` and `stop`
//! do what the README says; `remove` keeps state, `purge` removes it and the
//! user; the exposure scores the README records are the installed units'.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::container::*;
use common::netns::{wait_for_line, Bg};
use serde_json::Value;

const CONF: &str = "/etc/vmflow/vmflow.toml";
/// Where the collector unit writes the records of the package's agent
/// certificate (CN agent-1).
const COLLECTED: &str = "var/lib/vmflow-collect/agent-1";
const INSIDE: &str = "10.78.0.2";
const PEER: &str = "10.78.0.1";
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

// ---- the machine ---------------------------------------------------------------

/// A container with a NIC (`eth0`, as a VM has: the shipped configuration
/// captures every interface that is up and has an address).
fn vm(name: &str) -> (Container, Veth) {
    let c = Container::boot(name);
    let nic = c.veth("eth0", &format!("{INSIDE}/24"), &format!("{PEER}/24"));
    (c, nic)
}

fn dpkg_install(c: &Container, deb: &Path) {
    let name = deb.file_name().unwrap().to_str().unwrap();
    c.copy_in(deb, &format!("/root/{name}"));
    // stdin is /dev/null: a conffile question would fail the install
    // instead of hanging it.
    c.sh_ok(&format!("dpkg -i /root/{name}"));
}

/// Starts the collector unit and waits until it listens.
fn start_collector(c: &Container) {
    c.sh_ok("systemctl start vmflow-collect");
    c.wait_active("vmflow-collect");
    c.wait_log("vmflow-collect", "listening on");
}

/// Marks the lines `configure` adds, so that the next call replaces them.
const TEST_LINE: &str = " # set by the test";

/// The installed configuration with live capture on eth0 and settings that
/// make records come quickly; `extra` lines go under [flow].
fn configure(c: &Container, idle: u32, extra: &str) {
    let text = String::from_utf8(c.read(CONF).expect("the conffile is installed")).unwrap();
    let mut out = String::new();
    for l in text.lines().filter(|l| !l.ends_with(TEST_LINE)) {
        out.push_str(l);
        out.push('\n');
        let add: Vec<String> = match l {
            "[flow]" => std::iter::once(format!("idle_timeout = {idle}"))
                .chain(extra.lines().map(str::to_string))
                .collect(),
            "[capture.live]" => vec![
                "interfaces = [\"eth0\"]".into(),
                "shutdown_grace = 5".into(),
            ],
            "[export]" => vec!["batch_age = 0.2".into()],
            _ => vec![],
        };
        for a in add {
            out.push_str(&a);
            out.push_str(TEST_LINE);
            out.push('\n');
        }
    }
    assert_eq!(
        out.matches(TEST_LINE).count(),
        4 + extra.lines().count(),
        "the shipped configuration changed shape:\n{text}"
    );
    c.write(CONF, out.as_bytes(), 0o644);
}

/// Restarts the agent and waits until it captures and is connected.
fn restart_agent(c: &Container) {
    c.sh_ok("systemctl restart vmflow");
    c.wait_active("vmflow");
    c.wait_log("vmflow", "capturing on eth0");
    c.wait_log("vmflow", "connected to collector");
}

// ---- traffic and what it should become ----------------------------------------

/// tcpdump on the host end of the NIC: the independent record of what
/// crossed it.
struct Dump {
    proc: Bg,
    pcap: PathBuf,
    _dir: tempfile::TempDir,
}

fn tcpdump(nic: &Veth) -> Dump {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("nic.pcap");
    let mut p = nic
        .exec(&[
            "tcpdump",
            "-i",
            &nic.peer_if,
            "-U",
            "-s",
            "128",
            "--time-stamp-precision=nano",
            "-w",
            pcap.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump runs (scripts/test.sh installs it)");
    wait_for_line(p.stderr.take().unwrap(), "listening on");
    Dump {
        proc: Bg(p),
        pcap,
        _dir: dir,
    }
}

impl Dump {
    /// Sends a marker datagram and waits until tcpdump wrote it: everything
    /// sent before is in the file. Then stops tcpdump and returns what
    /// vmflow's replay makes of the file, per conversation.
    fn finish(mut self, nic: &Veth) -> BTreeMap<String, Counts> {
        let py = format!(
            "import socket\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'{}',('{INSIDE}',9))\n",
            String::from_utf8_lossy(MARK)
        );
        nic.run_ok(&["python3", "-c", &py]);
        poll(
            "tcpdump to write the marker",
            Duration::from_secs(30),
            || {
                std::fs::read(&self.pcap)
                    .unwrap_or_default()
                    .windows(MARK.len())
                    .any(|w| w == MARK)
                    .then_some(())
            },
        );
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.proc.0.id().to_string()])
            .status();
        let _ = self.proc.0.wait();
        let (recs, err, ok) = common::replay(std::slice::from_ref(&self.pcap), &[]);
        assert!(ok, "replaying tcpdump's file: {err}");
        let want = conversations(&recs);
        assert!(!want.is_empty(), "tcpdump saw no IPv4 traffic");
        want
    }
}

const MARK: &[u8] = b"vmflow-package-marker";

/// `n` datagrams from PEER:sport to INSIDE:dport (one flow; nothing listens,
/// so the container answers each with an ICMP port unreachable: a second flow).
fn udp(nic: &Veth, sport: u16, dport: u16, n: usize) {
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('{PEER}',{sport}))\nfor _ in range({n}): s.sendto(b'x'*20,('{INSIDE}',{dport}))\n"
    );
    nic.run_ok(&["python3", "-c", &py]);
}

fn ping(nic: &Veth, n: u32) {
    nic.run_ok(&["ping", "-c", &n.to_string(), "-i", "0.2", INSIDE]);
}

/// A TCP connection the container refuses: SYN, then RST.
fn refused_tcp(nic: &Veth, port: u16) {
    let out = nic
        .exec(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{INSIDE}:{port}/"),
        ])
        .output()
        .unwrap();
    // curl's "could not connect": the refusal itself.
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

/// Packets and bytes each way.
type Counts = (u64, u64, u64, u64);

/// IPv4 records summed per conversation (proto, initiator, responder): the
/// comparison does not depend on where a flow was cut into records.
fn conversations(recs: &[Value]) -> BTreeMap<String, Counts> {
    let mut m: BTreeMap<String, Counts> = BTreeMap::new();
    for r in recs.iter().filter(|r| r["ip_version"] == 4) {
        let k = format!(
            "{} {}:{} > {}:{}",
            r["proto"], r["src_addr"], r["src_port"], r["dst_addr"], r["dst_port"]
        );
        let n = |f: &str| r[f].as_u64().unwrap();
        let e = m.entry(k).or_default();
        e.0 += n("fwd_packets");
        e.1 += n("fwd_bytes");
        e.2 += n("rev_packets");
        e.3 += n("rev_bytes");
    }
    m
}

/// Every record the collector unit has written for the package's agent.
fn collected(c: &Container) -> Vec<Value> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                for l in std::fs::read_to_string(&p).unwrap().lines() {
                    out.push(serde_json::from_str(l).expect("collector output is NDJSON"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&c.root().join(COLLECTED), &mut out);
    out
}

/// Waits until the collector's records add up to `want`, then checks that
/// no record arrived twice.
fn assert_collected(c: &Container, want: &BTreeMap<String, Counts>) {
    let deadline = Instant::now() + Duration::from_secs(45);
    let got = loop {
        let got = collected(c);
        if conversations(&got) == *want || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        conversations(&got),
        *want,
        "collector (left) vs tcpdump on the other end of the NIC (right)\nagent journal:\n{}",
        c.journal("vmflow")
    );
    let mut ids: Vec<(u64, u64)> = got
        .iter()
        .map(|r| {
            (
                r["flow_id"].as_u64().unwrap(),
                r["segment"].as_u64().unwrap(),
            )
        })
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "a record reached the collector twice: {got:?}"
    );
}

fn status_caps(c: &Container, pid: u32) -> (String, u64, u64) {
    let status = c.sh_ok(&format!("cat /proc/{pid}/status"));
    // Not systemd's child between fork and exec, which still has root's sets.
    assert!(
        status.starts_with("Name:\tvmflow\n"),
        "PID {pid} is not the agent yet:\n{status}"
    );
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .trim()
            .to_string()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    (field("Uid:"), hex("CapEff:"), hex("CapBnd:"))
}

// ---- the scenarios -------------------------------------------------------------

#[test]
fn install_enables_and_starts_the_agent_as_vmflow_with_only_cap_net_raw() {
    let (c, _nic) = vm("install");
    dpkg_install(&c, &built_deb());

    assert_eq!(c.show("vmflow", "UnitFileState"), "enabled");
    assert_eq!(
        c.show("vmflow-collect", "UnitFileState"),
        "disabled",
        "the collector side is opt-in"
    );
    let pid = c.wait_active("vmflow");
    // The shipped configuration is complete: the agent captures the NIC.
    c.wait_log("vmflow", "capturing on eth0");
    let status = c.sh("systemctl status vmflow");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("active (running)"),
        "{text}"
    );

    let uid = c.sh_ok("id -u vmflow").trim().to_string();
    let (uids, eff, bnd) = status_caps(&c, pid);
    assert!(
        uids.split_whitespace().all(|u| u == uid),
        "the agent runs as vmflow (uid {uid}) only: Uid {uids}"
    );
    assert_eq!(eff, CAP_NET_RAW, "CapEff {eff:#x}: exactly CAP_NET_RAW");
    assert_eq!(bnd, CAP_NET_RAW, "CapBnd {bnd:#x}: exactly CAP_NET_RAW");
    let ps = c.sh_ok(&format!("ps -o user=,args= -p {pid}"));
    assert!(
        ps.starts_with("vmflow")
            && ps.contains("/usr/bin/vmflow run --config /etc/vmflow/vmflow.toml"),
        "{ps}"
    );

    // What the package holds, and which files dpkg treats as the operator's.
    let conffiles = c.sh_ok("dpkg-query -W -f '${Conffiles}' vmflow");
    for f in [CONF, "/etc/default/vmflow-collect"] {
        assert!(conffiles.contains(f), "{f} is a conffile: {conffiles}");
    }
    c.sh_ok(
        "test -x /usr/bin/vmflow \
         && test -s /usr/share/doc/vmflow/copyright \
         && grep -q 'vmflow collect' /usr/share/doc/vmflow/usage.txt \
         && test -s /usr/share/doc/vmflow/examples/promiscuous.conf \
         && test -f /usr/lib/sysusers.d/vmflow.conf",
    );
    // The manual pages and completions the binary generated from its own
    // command line: one page per command, and a completion bash loads.
    let man = c.sh_ok("zcat /usr/share/man/man1/vmflow.1.gz /usr/share/man/man1/vmflow-run.1.gz");
    assert!(
        man.contains(".TH vmflow 1") && man.contains(r"\-\-config"),
        "{man}"
    );
    let complete = c.sh_ok(
        "bash -c '. /usr/share/bash-completion/completions/vmflow && complete -p vmflow' \
         && test -s /usr/share/zsh/vendor-completions/_vmflow \
         && test -s /usr/share/fish/vendor_completions.d/vmflow.fish",
    );
    assert!(complete.contains("vmflow"), "{complete}");
    // Spool and checkpoints: the state directory, the agent's alone.
    let spool = c.sh_ok("stat -c '%U %a' /var/lib/vmflow /var/lib/vmflow/spool");
    assert_eq!(spool, "vmflow 700\nvmflow 700\n");

    // Promiscuous mode is a drop-in away, and adds exactly CAP_NET_ADMIN.
    c.sh_ok(
        "mkdir -p /etc/systemd/system/vmflow.service.d \
         && cp /usr/share/doc/vmflow/examples/promiscuous.conf /etc/systemd/system/vmflow.service.d/ \
         && systemctl daemon-reload && systemctl restart vmflow",
    );
    let pid2 = c.wait_active("vmflow");
    assert_ne!(pid, pid2);
    c.wait_log("vmflow", "capturing on eth0");
    let (_, eff, _) = status_caps(&c, pid2);
    assert_eq!(
        eff,
        CAP_NET_RAW | CAP_NET_ADMIN,
        "CapEff {eff:#x} with the drop-in"
    );
    assert_eq!(
        c.show("vmflow", "NRestarts"),
        "0",
        "{}",
        c.journal("vmflow")
    );
}

#[test]
fn the_exposure_scores_in_the_readme_are_the_installed_units() {
    let c = Container::boot("exposure");
    dpkg_install(&c, &built_deb());
    let readme = include_str!("../README.md");
    for unit in ["vmflow.service", "vmflow-collect.service"] {
        let out = c.sh_ok(&format!(
            "systemd-analyze security --offline=true --no-pager /lib/systemd/system/{unit}"
        ));
        let score = out
            .lines()
            .find_map(|l| l.split(&format!("exposure level for {unit}: ")).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no overall exposure in:\n{out}"));
        let row = format!("| `{unit}` | {score} ");
        assert!(
            readme.contains(&row),
            "README's exposure table should have {row:?}:\n{out}"
        );
    }
}

#[test]
fn traffic_on_the_nic_reaches_the_collector_unit_as_the_flows_tcpdump_saw() {
    let (c, nic) = vm("live");
    dpkg_install(&c, &built_deb());
    start_collector(&c);
    configure(&c, 1, "");
    restart_agent(&c);

    let dump = tcpdump(&nic);
    ping(&nic, 3);
    refused_tcp(&nic, 9);
    udp(&nic, 40100, 5300, 2);
    let want = dump.finish(&nic);
    let echo = want
        .iter()
        .find(|(k, _)| k.starts_with(&format!("1 \"{PEER}\"")))
        .unwrap_or_else(|| panic!("tcpdump saw the pings: {want:?}"));
    assert_eq!((echo.1 .0, echo.1 .2), (3, 3), "{want:?}");
    assert!(
        want.len() >= 4,
        "ping, TCP, UDP, ICMP unreachable: {want:?}"
    );
    assert_collected(&c, &want);
}

#[test]
fn an_upgrade_keeps_the_edited_conffile_and_the_spool_and_loses_or_doubles_no_record() {
    let (c, nic) = vm("upgrade");
    dpkg_install(&c, &built_deb());
    start_collector(&c);
    configure(&c, 1, "# edited by the operator");
    restart_agent(&c);
    let old_pid = c.wait_active("vmflow");
    let old_run = c.show("vmflow", "InvocationID");

    // The collector is away across the upgrade: what the old agent captured
    // can only reach it through the spool the new one inherits.
    c.sh_ok("systemctl stop vmflow-collect");
    let dump = tcpdump(&nic);
    ping(&nic, 3);
    udp(&nic, 40200, 5310, 3);
    refused_tcp(&nic, 9);
    let newer = upgrade_version();
    dpkg_install(&c, &built_deb_version(&newer));

    assert_eq!(
        c.sh_ok("dpkg-query -W -f '${Version}' vmflow"),
        newer,
        "the newer package is installed"
    );
    let conf = String::from_utf8(c.read(CONF).unwrap()).unwrap();
    assert!(
        conf.contains("# edited by the operator") && conf.contains("interfaces = [\"eth0\"]"),
        "the edited conffile was replaced:\n{conf}"
    );
    let new_pid = c.wait_active("vmflow");
    assert_ne!(
        c.show("vmflow", "InvocationID"),
        old_run,
        "the agent was not restarted"
    );
    assert_ne!(old_pid, new_pid);
    // The old agent stopped by its shutdown path, with its records spooled
    // and none acknowledged.
    let old = String::from_utf8_lossy(
        &c.exec(&[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            &format!("_SYSTEMD_INVOCATION_ID={old_run}"),
        ])
        .stdout,
    )
    .into_owned();
    let summary = |key: &str| common::summary(&old, key);
    assert!(
        summary("spooled_records").unwrap_or(0) > 0 && summary("batches_acked") == Some(0),
        "the old agent spooled and could not deliver:\n{old}"
    );
    c.wait_log("vmflow", "capturing on eth0");

    // More traffic for the new agent, then the collector comes back.
    ping(&nic, 2);
    udp(&nic, 40201, 5311, 2);
    start_collector(&c);
    let want = dump.finish(&nic);
    assert_collected(&c, &want);
}

#[test]
fn reload_applies_a_new_idle_timeout_and_stop_ends_flows_shutdown_and_ships_them() {
    let (c, nic) = vm("reload");
    dpkg_install(&c, &built_deb());
    start_collector(&c);
    configure(&c, 60, "");
    restart_agent(&c);
    let pid = c.wait_active("vmflow");
    let udp_to = |port: u16| move |r: &Value| r["proto"] == 17 && r["dst_port"] == port;

    // One flow open across the reload: its first datagram under a 60 s idle
    // timeout, its second under 5 s.
    udp(&nic, 40300, 5320, 1);
    configure(&c, 5, "");
    c.sh_ok("systemctl reload vmflow");
    c.wait_log("vmflow", "configuration reloaded");
    udp(&nic, 40300, 5320, 1);
    let sent = Instant::now();
    let rec = poll(
        "the flow to end idle under the new timeout",
        Duration::from_secs(40),
        || collected(&c).into_iter().find(udp_to(5320)),
    );
    let waited = sent.elapsed();
    assert_eq!(rec["end_reason"], "idle", "{rec}");
    assert_eq!(
        rec["fwd_packets"], 2,
        "the flow open across the reload is one flow: {rec}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(40),
        "ended {waited:?} after its last packet: not the new 5 s idle timeout"
    );
    assert_eq!(c.wait_active("vmflow"), pid, "reload is not a restart");

    // Back to 60 s, so the next flow is surely open when the agent stops.
    configure(&c, 60, "");
    c.sh_ok("systemctl reload vmflow");
    poll("the second reload", Duration::from_secs(30), || {
        (c.journal_now("vmflow")
            .matches("configuration reloaded")
            .count()
            >= 2)
            .then_some(())
    });
    // Stopped at once: the agent drains what the kernel still holds in its
    // rings before it ends the open flows.
    udp(&nic, 40301, 5321, 2);
    c.sh_ok("systemctl stop vmflow");
    assert_eq!(
        c.show("vmflow", "Result"),
        "success",
        "{}",
        c.journal("vmflow")
    );
    assert_eq!(c.show("vmflow", "ExecMainStatus"), "0");
    let rec = poll(
        "the flow ended by the stop at the collector",
        Duration::from_secs(30),
        || collected(&c).into_iter().find(udp_to(5321)),
    );
    assert_eq!(rec["end_reason"], "shutdown", "{rec}");
    assert_eq!(rec["fwd_packets"], 2, "{rec}");
}

#[test]
fn remove_keeps_state_and_conffile_and_purge_removes_them_and_the_user() {
    let (c, _nic) = vm("purge");
    dpkg_install(&c, &built_deb());
    c.wait_active("vmflow");
    start_collector(&c);
    c.sh_ok(&format!("echo '# kept on remove' >> {CONF}"));

    c.sh_ok("apt-get remove -y -q vmflow");
    assert_eq!(
        c.sh_ok("dpkg-query -W -f '${Status}' vmflow"),
        "deinstall ok config-files"
    );
    for unit in ["vmflow", "vmflow-collect"] {
        assert_ne!(c.show(unit, "ActiveState"), "active", "{unit} still runs");
    }
    assert!(
        !c.sh("pgrep -u vmflow").status.success(),
        "a process of vmflow survived the remove"
    );
    c.sh_ok("test ! -e /usr/bin/vmflow");
    let conf = String::from_utf8(c.read(CONF).expect("the conffile stays")).unwrap();
    assert!(conf.contains("# kept on remove"));
    c.sh_ok(
        "test -d /var/lib/vmflow/spool && test -d /var/lib/vmflow-collect \
         && test -s /etc/vmflow/certs/agent-1-key.pem && getent passwd vmflow",
    );

    c.sh_ok("apt-get purge -y -q vmflow");
    let status = c.sh("dpkg-query -W -f '${Status}' vmflow");
    assert!(
        !status.status.success()
            || String::from_utf8_lossy(&status.stdout).contains("not-installed"),
        "{status:?}"
    );
    for gone in [
        "/var/lib/vmflow",
        "/var/lib/vmflow-collect",
        "/etc/vmflow",
        "/etc/default/vmflow-collect",
        "/etc/systemd/system/multi-user.target.wants/vmflow.service",
    ] {
        assert!(
            !c.sh(&format!("test -e {gone} || test -L {gone}"))
                .status
                .success(),
            "{gone} survived the purge"
        );
    }
    assert!(
        !c.sh("getent passwd vmflow").status.success(),
        "the user survived the purge"
    );
    assert!(
        !c.sh("getent group vmflow").status.success(),
        "the group survived the purge"
    );
}
