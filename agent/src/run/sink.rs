//! `vmflow sink` as a job: the runtime and the signals that stop it; the
//! consumer itself is `collect::jetstream::consume`.

use super::runtime;
use super::signals::wait_for_signal;
use crate::collect::jetstream::consume::{self, SinkOptions, SinkStats};
use crate::collect::jetstream::{self, JetStreamOptions};
use crate::error::Error;

/// Consumes until SIGTERM / SIGINT; returns what it did.
pub fn run_sink(js: JetStreamOptions, opts: SinkOptions) -> Result<SinkStats, Error> {
    let fs = crate::disk::real();
    fs.create_dir_all(&opts.out)
        .and_then(|_| fs.restrict(&opts.out))
        .map_err(|e| Error::io(&opts.out, e))?;
    let rt = runtime()?;
    rt.block_on(async move {
        let shown = js.shown();
        let c = jetstream::connect(js).await?;
        tracing::info!(
            "consuming JetStream stream {} on {shown} into {}",
            c.opts.stream,
            opts.out.display()
        );
        let stop = async {
            let _ = wait_for_signal().await;
        };
        Ok(consume::run(c, opts, stop).await?)
    })
}
