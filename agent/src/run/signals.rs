//! The signals a job answers: SIGTERM/SIGINT stop it, SIGHUP reloads live
//! capture's settings (on Windows: Ctrl-C, Ctrl-Break or the service's Stop
//! stop it; there is no reload). Flags, polled by the loops; how the OS
//! sets them is `platform`'s business.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::platform;

/// A flag that SIGTERM or SIGINT sets instead of killing the process: the
/// job's loop polls it and ends its own way (records flushed, its summary
/// printed).
pub fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    let flag = Arc::new(AtomicBool::new(false));
    platform::on_stop(flag.clone()).map_err(Error::setup("signal handler"))?;
    Ok(flag)
}

/// Returns when SIGTERM or SIGINT arrives (the collector's async loop).
pub async fn wait_for_signal() {
    platform::stop_requested().await
}

/// A SIGHUP watcher for live capture: when the signal has arrived, re-reads
/// `path` (if any) and hands the new configuration over. A file that no
/// longer parses is logged and ignored.
pub fn reloader(path: Option<PathBuf>) -> impl FnMut() -> Option<Config> {
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = platform::on_reload(hup.clone()) {
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
