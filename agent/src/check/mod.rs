//! `vmflow check`: everything `vmflow run` would need, looked at without
//! running — the configuration, the files and directories it names, the
//! certificates, the collector addresses, the interfaces, the capabilities,
//! the Azure identity — each problem found, not just the first, and the
//! plan (sources and outputs) `run` would follow.

mod files;
mod system;

use std::net::ToSocketAddrs;
use std::path::Path;

use crate::config::{Config, IdentityKind};

/// What `check` found: the plan, problems (`run` would fail or never
/// deliver) and warnings (it may work, but look).
#[derive(Debug, Default)]
pub struct Report {
    pub plan: Vec<String>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
    fn check(&mut self, r: Result<(), String>) {
        if let Err(p) = r {
            self.problem(p);
        }
    }
}

/// Checks the configuration at `path`.
pub fn check(path: &Path) -> Report {
    let mut r = Report::default();
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            r.problem(e.to_string());
            return r;
        }
    };
    sources(&cfg, &mut r);
    outputs(&cfg, &mut r);
    azure(&cfg, &mut r);
    r
}

/// A capture filter compiles, with the libpcap the agent will load.
fn filter(key: &str, expr: Option<&str>, r: &mut Report) {
    use crate::capture::filter::{expression, PacketFilter};
    if let Some(e) = expression(expr) {
        r.plan.push(format!("{key}: only packets matching {e:?}"));
        r.check(
            PacketFilter::new(Some(e))
                .map(|_| ())
                .map_err(|err| format!("{key}: {err}")),
        );
    }
}

fn sources(cfg: &Config, r: &mut Report) {
    let s = &cfg.source;
    if let Some(l) = &cfg.capture.live {
        let named = !l.interfaces.is_empty();
        let ifaces = if named {
            l.interfaces.clone()
        } else {
            crate::capture::live::default_interfaces()
        };
        r.plan.push(format!(
            "source: live capture on {} (snap length {}, {}ring {} MiB per interface)",
            if ifaces.is_empty() {
                "no interface yet".to_string()
            } else {
                ifaces.join(", ")
            },
            l.snaplen,
            if l.promiscuous { "promiscuous, " } else { "" },
            l.ring_mib
        ));
        filter("capture.live.filter", l.filter.as_deref(), r);
        if let Err(e) = crate::capture::live::available() {
            r.problem(format!("capture.live: {e}"));
        } else {
            for i in &l.interfaces {
                if crate::capture::live::ifindex(i).is_none() {
                    r.problem(format!("capture.live.interfaces: {i:?}: no such interface"));
                }
            }
            if !named && ifaces.is_empty() {
                r.warnings.push(
                    "capture.live: no interface is up with an address yet (new ones are picked up every 2 s)"
                        .into(),
                );
            }
            r.check(system::capabilities(l.promiscuous));
        }
        if !s.files.is_empty() {
            r.warnings
                .push("source.files is not read: [capture.live] takes its place".into());
        }
    } else if !s.files.is_empty() {
        r.plan.push(format!(
            "source: capture files {}",
            s.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for f in &s.files {
            r.check(files::readable_file("source.files", f));
        }
        filter("source.filter", s.filter.as_deref(), r);
    }
    for f in &s.folder {
        r.plan.push(format!(
            "source: folder {} (followed; new files every {} s)",
            f.path.display(),
            f.poll_interval
        ));
        r.check(files::readable_dir("source.folder.path", &f.path));
        filter("source.folder.filter", f.filter.as_deref(), r);
    }
    for b in &s.blob {
        r.plan.push(format!(
            "source: Blob container {} at {}{}",
            b.container,
            b.account_url,
            if b.sas_token.is_some() || b.sas_token_file.is_some() {
                " (SAS)"
            } else {
                " ([azure] identity)"
            }
        ));
        if let Some(p) = &b.sas_token_file {
            r.check(files::readable_file("source.blob.sas_token_file", p));
        }
        if let Some(p) = &b.ca_file {
            r.check(files::readable_file("source.blob.ca_file", p));
        }
        filter("source.blob.filter", b.filter.as_deref(), r);
    }
    for f in &s.flowlog {
        r.plan.push(format!(
            "source: flow logs in container {} at {}",
            f.container, f.account_url
        ));
        if let Some(p) = &f.sas_token_file {
            r.check(files::readable_file("source.flowlog.sas_token_file", p));
        }
    }
    if r.plan.is_empty() {
        r.problem(
            "no source: give source.files, [capture.live], [[source.folder]], [[source.blob]] or [[source.flowlog]]"
                .into(),
        );
    }
    let followed = !(s.folder.is_empty() && s.blob.is_empty() && s.flowlog.is_empty());
    if followed && cfg.export.is_none() {
        r.problem(
            "followed sources keep their checkpoints beside the spool: they need [export]".into(),
        );
    }
}

fn outputs(cfg: &Config, r: &mut Report) {
    if let Some(x) = &cfg.export {
        r.plan.push(format!(
            "output: mutual TLS to collector {} (server name {:?}), spooled in {} (at most {} MiB)",
            x.collector,
            x.server_name,
            x.spool_dir.display(),
            x.spool_max_mib
        ));
        for c in x.collectors() {
            resolves("export.collector", c, r);
        }
        r.check(files::writable_dir("export.spool_dir", &x.spool_dir));
        let mut tls_ok = true;
        for (key, p) in [
            ("export.ca", &x.ca),
            ("export.cert", &x.cert),
            ("export.key", &x.key),
        ] {
            if let Err(e) = files::readable_file(key, p) {
                r.problem(e);
                tls_ok = false;
            }
        }
        if tls_ok {
            files::certificates("export", &x.ca, &x.cert, &x.key, r);
        }
    }
    for (i, x) in cfg.ipfix.iter().enumerate() {
        r.plan.push(format!(
            "output: IPFIX over {:?} to {} ({:?}, observation domain {})",
            x.transport, x.collector, x.mode, x.observation_domain
        ));
        resolves(&format!("export.ipfix[{i}].collector"), &x.collector, r);
        if let (Some(ca), Some(cert), Some(key)) = (&x.ca, &x.cert, &x.key) {
            files::certificates(&format!("export.ipfix[{i}]"), ca, cert, key, r);
        }
    }
    if cfg.export.is_none() && cfg.ipfix.is_empty() {
        r.problem(
            "no output: give [export] (mutual TLS to vmflow collect) or [[export.ipfix]]".into(),
        );
    }
    metrics(cfg, r);
}

/// `[metrics] listen`: said in the plan, and the port must be free now
/// (bound and released at once: `run` binds it before anything else).
fn metrics(cfg: &Config, r: &mut Report) {
    let Ok(Some(addr)) = cfg.metrics.addr() else {
        return;
    };
    r.plan
        .push(format!("metrics: http://{addr}/metrics and /healthz"));
    if let Err(e) = std::net::TcpListener::bind(addr) {
        r.problem(format!("metrics.listen: cannot listen on {addr}: {e}"));
    }
}

/// A name that does not resolve now may later (DNS down, not yet
/// registered): a warning, since `run` retries.
fn resolves(key: &str, addr: &str, r: &mut Report) {
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => {}
        Ok(None) => r
            .warnings
            .push(format!("{key} = {addr:?}: the name has no address")),
        Err(e) => r.warnings.push(format!(
            "{key} = {addr:?}: does not resolve now ({e}); run keeps trying"
        )),
    }
}

fn azure(cfg: &Config, r: &mut Report) {
    let az = &cfg.azure;
    let uses_identity = cfg
        .source
        .blob
        .iter()
        .any(|b| b.sas_token.is_none() && b.sas_token_file.is_none())
        || cfg
            .source
            .flowlog
            .iter()
            .any(|f| f.sas_token.is_none() && f.sas_token_file.is_none())
        || az.captures.is_some();
    if !uses_identity {
        return;
    }
    match az.identity {
        IdentityKind::Managed => r.plan.push(format!(
            "azure: the VM's managed identity{} (instance metadata service {}; only on an Azure VM)",
            az.client_id
                .as_ref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default(),
            az.imds_endpoint
        )),
        IdentityKind::ServicePrincipal => {
            r.plan.push(format!(
                "azure: service principal {} in tenant {}",
                az.client_id.as_deref().unwrap_or("?"),
                az.tenant.as_deref().unwrap_or("?")
            ));
            for (k, v) in [("azure.tenant", &az.tenant), ("azure.client_id", &az.client_id)] {
                if v.is_none() {
                    r.problem(format!("{k} is needed for identity = \"service_principal\""));
                }
            }
            match &az.client_secret_file {
                None => r.problem(
                    "azure.client_secret_file is needed for identity = \"service_principal\"".into(),
                ),
                Some(p) => r.check(files::readable_file("azure.client_secret_file", p)),
            }
        }
    }
    if let Some(c) = &az.captures {
        r.plan.push(format!(
            "azure: keep Network Watcher captures running (resource group {}, {})",
            c.resource_group,
            if c.targets.is_empty() {
                "this VM".to_string()
            } else {
                format!("{} target(s)", c.targets.len())
            }
        ));
    }
}
