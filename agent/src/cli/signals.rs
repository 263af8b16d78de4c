//! Stopping a long-running command cleanly.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::Error;

/// A flag that SIGTERM and SIGINT set instead of killing the process: the
/// command's loop polls it and ends its own way (records flushed, its
/// summary printed).
pub(super) fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(Error::setup("signal handler"))?;
    }
    Ok(stop)
}
