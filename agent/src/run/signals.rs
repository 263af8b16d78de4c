//! The signals a job answers: SIGTERM/SIGINT stop it, SIGHUP reloads live
//! capture's settings. Flags, polled by the loops: async-signal-safe by
//! construction.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;

/// A flag that SIGTERM or SIGINT sets instead of killing the process: the
/// job's loop polls it and ends its own way (records flushed, its summary
/// printed).
pub fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, flag.clone()).map_err(Error::setup("signal handler"))?;
    }
    Ok(flag)
}

/// Returns when SIGTERM or SIGINT arrives (the collector's async loop).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A SIGHUP watcher for live capture: when the signal has arrived, re-reads
/// `path` (if any) and hands the new configuration over. A file that no
/// longer parses is logged and ignored.
pub fn reloader(path: Option<PathBuf>) -> impl FnMut() -> Option<Config> {
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        tracing::warn!("SIGHUP reload unavailable: {e}");
    }
    move || {
        if !hup.swap(false, Ordering::Relaxed) {
            return None;
        }
        let Some(p) = path.as_ref() else {
            tracing::warn!("SIGHUP: no --config file to reload");
            return None;
        };
        match Config::load(p) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("SIGHUP: {e}; old settings stay");
                None
            }
        }
    }
}
