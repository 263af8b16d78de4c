//! Log lines on stderr, filtered by `RUST_LOG`, with the HTTP client kept
//! quiet whatever it says.

use std::io;

pub(super) fn init() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()));
    tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter()).with_filter(quiet_http()))
        .init();
}

/// Log lines appended to `path` instead (the Windows service: no console).
/// The previous log is kept as `<path>.1` once it passes 10 MiB; a file that
/// cannot be opened leaves logging on stderr, saying why.
pub(super) fn init_file(path: &std::path::Path) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 10 << 20) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(path, old);
    }
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            init();
            tracing::error!("{}: {e}; logging to stderr", path.display());
            return;
        }
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::sync::Mutex::new(file))
        .with_target(false)
        .with_ansi(false);
    tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter()).with_filter(quiet_http()))
        .init();
}

/// `RUST_LOG` (default `info`). The HTTP client's own directives are capped
/// at warnings here, but a more specific directive in `RUST_LOG`
/// (`ureq::run=trace`) wins over them: [`quiet_http`] is what holds.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let mut f = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for d in ["ureq=warn", "ureq_proto=warn"] {
        if let Ok(d) = d.parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Drops the HTTP client's events below warnings whatever `RUST_LOG` says:
/// its debug and trace lines print request URLs, and a Blob URL carries the
/// SAS token. A filter of its own, applied after `RUST_LOG`'s, so no
/// directive can switch them back on. (Its warnings carry no URL.)
fn quiet_http() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|m: &tracing::Metadata<'_>| {
        !(m.target().starts_with("ureq") && *m.level() > tracing::Level::WARN)
    })
}
