//! A container of flow logs as a lane: its checkpoint loaded, the spool
//! settled (records a killed run spooled after its checkpoint are skipped
//! when they come again), the source run until SIGTERM/SIGINT, the rest
//! shipped within the grace period.

use std::sync::Arc;
use std::time::Duration;

use super::lane::Lane;
use super::RunReport;
use crate::config::{Config, ExportConfig, FlowlogConfig};
use crate::error::Error;
use crate::export::ipfix_sender::IpfixSender;
use crate::export::outputs::Outputs;
use crate::export::spool::Spool;
use crate::flowlog::{StitchSettings, Stitcher};
use crate::follow::flowlog::position;
use crate::follow::flowlog::runner::{self, FlowlogRunOptions, Watch};
use crate::follow::flowlog::FlowlogSource;
use crate::identity;
use crate::metrics::Board;

/// One flow-log container through its own stitcher, spool and shipper.
#[allow(clippy::too_many_arguments)]
pub(super) fn flowlog_lane(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    stream: &str,
    spool_dir: &std::path::Path,
    f: &FlowlogConfig,
    rt: &tokio::runtime::Handle,
    signalled: &std::sync::atomic::AtomicBool,
    ipfix: &[IpfixSender],
    board: &Board,
) -> Result<RunReport, Error> {
    let fs = crate::disk::real();
    let key = crate::follow::flowlog::checkpoint_key(f);
    let checkpoint = f
        .checkpoint
        .clone()
        .unwrap_or_else(|| spool_dir.join("flowlog.checkpoint"));
    let mut spool = Spool::open(fs.clone(), spool_dir, x.spool_max_mib << 20)?;
    let ck = position::load(&checkpoint, &key)?;
    let at = ck.as_ref().map_or(0, |c| c.records);
    let settings = StitchSettings {
        idle_ns: f.idle_timeout.ns(),
        max_open: f.max_open_flows,
    };
    // What the records depend on besides the blobs: a resumed run with other
    // stitching settings would not give the records the spool holds.
    let want = identity::followed(
        cfg,
        &format!(
            "{key}; idle {} ns; max {}",
            settings.idle_ns, settings.max_open
        ),
    );
    let resumed_after = identity::resume(&mut spool, &want, ck.as_ref().map(|c| c.records))?;
    let (stitcher, pos, observed) = match ck {
        Some(c) => {
            tracing::info!(
                "resuming from {} ({resumed_after} records spooled after it)",
                checkpoint.display()
            );
            (
                Stitcher::restore(settings, c.stitch),
                c.position,
                c.observer,
            )
        }
        None => (Stitcher::new(settings), Default::default(), None),
    };
    let client = crate::azure::credentials::blob_client(&f.storage(), &cfg.azure)?;
    let lane = Lane::start(rt, x, tls, stream, spool, resumed_after);
    lane.show_on(board, spool_dir);
    let watch = Watch {
        engine: board.engine(stream),
        flowlog: board.flowlog(stream),
    };
    let carried = super::shipped_observations(cfg);
    let outputs = Outputs::new(Some(super::carry(lane.sink(), &carried)), ipfix);
    // Tagged and observed like packet sources' records (flow logs carry no
    // TCP flags, so what they raise is watchlist and new-country ones).
    let sink = super::tagged(cfg, outputs, carried.clone())?;
    let (mut sink, slot) = super::checkpointed(sink, &carried, observed);
    tracing::info!(
        "following flow logs in container {} (prefix {:?})",
        f.container,
        f.prefix
    );
    let mut src = FlowlogSource::new(f.clone(), client, pos, stitcher);
    let opts = FlowlogRunOptions {
        fs,
        key,
        checkpoint,
        idle: Duration::from_millis(50).min(f.poll_interval.duration()),
        on_stop: f.on_stop,
        watch: Some(watch),
        observer: slot,
    };
    let t = runner::run(&mut src, &mut sink, &opts, at, signalled);
    let s = src.stats;
    tracing::info!(
        "flow logs: {} records, {} checkpoints; {} tuples in {} blocks of {} reads; \
         skipped {} blocks, {} records, {} tuples; {} rewritten, {} shrunk, {} raced, {} abandoned; \
         {} flows open; flushing",
        t.report.summary.records,
        t.checkpoints,
        s.tuples,
        s.blocks,
        s.downloads,
        s.bad_blocks,
        s.bad_records,
        s.bad_tuples,
        s.rewritten,
        s.shrunk,
        s.raced,
        s.abandoned,
        src.stitcher.open_flows()
    );
    let done = lane.finish_within(f.shutdown_grace.duration());
    Ok(RunReport::lane(t.report, done, resumed_after))
}
