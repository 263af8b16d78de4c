//! Log lines on stderr, filtered by `RUST_LOG`, with the HTTP client kept
//! quiet whatever it says; as text or, with `--log-format json`, one JSON
//! object a line (`timestamp`, `level`, `fields.message`, other fields). The Windows service has no console: its log
//! lines and the run's summary lines go to its log file, and its errors
//! also to the event log.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::LogFormat;

/// The service's log file, once [`init_file`] opened it.
static LOG_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Where the summary lines a command ends with go: stderr, or the service's
/// log file (appended, like the log lines; stderr if it cannot be opened).
pub(super) fn summary_out() -> Box<dyn Write> {
    LOG_FILE
        .get()
        .and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        })
        .map_or_else(|| Box::new(io::stderr()) as Box<dyn Write>, |f| Box::new(f))
}

/// Sends every error event to the platform's event log (Windows: the
/// Application log, source `vmflow`). When the event log refuses, the log
/// file says so once; the error itself is in the file either way.
struct EventLog {
    file: Mutex<std::fs::File>,
    refused: AtomicBool,
}

/// The `message` field of an event, and its other fields as `key=value`.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::ERROR {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        if let Err(e) = crate::platform::event_log::report_error("vmflow", &m.0) {
            if !self.refused.swap(true, Ordering::SeqCst) {
                if let Ok(mut f) = self.file.lock() {
                    let _ = writeln!(
                        f,
                        "event log: cannot report errors there ({e}); they are in this file only"
                    );
                }
            }
        }
    }
}

/// The formatting layer for `format`, writing to `writer`. Boxed so text
/// and JSON are one type for the registry.
fn fmt_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => fmt
            .with_ansi(ansi)
            .with_filter(log_filter())
            .with_filter(quiet_http())
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_filter(log_filter())
            .with_filter(quiet_http())
            .boxed(),
    }
}

pub(super) fn init(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::IsTerminal::is_terminal(&io::stderr());
    tracing_subscriber::registry()
        .with(fmt_layer(format, io::stderr, ansi))
        .init();
}

/// Log lines appended to `path` instead (the Windows service: no console).
/// The previous log is kept as `<path>.1` once it passes 10 MiB; a file that
/// cannot be opened leaves logging on stderr, saying why.
pub(super) fn init_file(path: &Path, format: LogFormat) {
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
            init(format);
            tracing::error!("{}: {e}; logging to stderr", path.display());
            return;
        }
    };
    let events = file.try_clone().map(|f| EventLog {
        file: Mutex::new(f),
        refused: AtomicBool::new(false),
    });
    let _ = LOG_FILE.set(path.to_path_buf());
    tracing_subscriber::registry()
        .with(fmt_layer(format, Mutex::new(file), false))
        .with(events.ok().map(|e| e.with_filter(quiet_http())))
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
