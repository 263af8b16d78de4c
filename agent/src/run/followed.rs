//! Followed sources as a job: every configured capture folder and Blob
//! container, each with its own engine, checkpoint and lane (spool, shipper,
//! record stream), stopped together by SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use super::lane::Lane;
use super::runtime;
use super::signals::stop_flag;
use super::RunReport;
use crate::capture::filter::PacketFilter;
use crate::config::{BlobConfig, Config, ExportConfig, FlowlogConfig, FolderConfig};
use crate::error::Error;
use crate::export::ipfix_sender::IpfixSender;
use crate::export::outputs::Outputs;
use crate::export::spool::Spool;
use crate::follow::blob::{BlobPosition, BlobSource};
use crate::follow::folder::{FolderPosition, FolderSource};
use crate::follow::runner::{self, RunnerOptions};
use crate::identity;
use crate::metrics::{Board, SourceState};
use crate::pipeline::live::CountingSink;

enum FollowKind {
    Folder(FolderConfig),
    Blob(BlobConfig),
}

/// A lane's source: packets through the engine, or flow-log records.
enum LaneSource {
    Packets(FollowKind),
    Flowlog(FlowlogConfig),
}

enum Positions {
    Folder(FolderPosition),
    Blob(BlobPosition),
}

/// A followed source (capture folder or Blob container) and how to run it.
struct Followed {
    kind: FollowKind,
    opts: RunnerOptions,
    grace: Duration,
}

impl Followed {
    fn folder(f: &FolderConfig, spool_dir: &std::path::Path) -> Followed {
        Followed {
            opts: RunnerOptions {
                fs: crate::disk::real(),
                key: format!("folder:{}", f.path.display()),
                checkpoint: f
                    .checkpoint
                    .clone()
                    .unwrap_or_else(|| spool_dir.join("folder.checkpoint")),
                poll: f.poll_interval.duration(),
                interval: f.checkpoint_interval.duration(),
                on_stop: f.on_stop,
                live: None,
                observer: None,
            },
            grace: f.shutdown_grace.duration(),
            kind: FollowKind::Folder(f.clone()),
        }
    }

    fn blob(b: &BlobConfig, spool_dir: &std::path::Path) -> Followed {
        // The account URL without any query string (never a SAS in the key).
        let account = b.account_url.split('?').next().unwrap_or("");
        Followed {
            opts: RunnerOptions {
                fs: crate::disk::real(),
                key: format!("blob:{account}/{}/{}", b.container, b.prefix),
                checkpoint: b
                    .checkpoint
                    .clone()
                    .unwrap_or_else(|| spool_dir.join("blob.checkpoint")),
                // Between files the loop goes on at once; the listing
                // interval is the source's own.
                poll: Duration::from_millis(50).min(b.poll_interval.duration()),
                interval: b.checkpoint_interval.duration(),
                on_stop: b.on_stop,
                live: None,
                observer: None,
            },
            grace: b.shutdown_grace.duration(),
            kind: FollowKind::Blob(b.clone()),
        }
    }
}

/// Every configured folder and blob container, each with its own engine,
/// checkpoint, spool and record stream to the collector. One source keeps
/// the plain spool directory and the agent's unnamed stream.
pub(super) fn run_followed(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    ipfix: &[IpfixSender],
    board: &Board,
) -> Result<RunReport, Error> {
    let signalled = stop_flag()?;
    // Each lane's own failure is in its report and the log; readiness
    // covers the spools and collectors.
    board.health.source(SourceState::Open);
    let names = cfg.source.stream_names();
    let single = names.len() == 1;
    let lanes: Vec<(String, std::path::PathBuf, LaneSource)> = cfg
        .source
        .folder
        .iter()
        .cloned()
        .map(|f| LaneSource::Packets(FollowKind::Folder(f)))
        .chain(
            cfg.source
                .blob
                .iter()
                .cloned()
                .map(|b| LaneSource::Packets(FollowKind::Blob(b))),
        )
        .chain(cfg.source.flowlog.iter().cloned().map(LaneSource::Flowlog))
        .zip(names)
        .map(|(k, n)| {
            if single {
                (String::new(), x.spool_dir.clone(), k)
            } else {
                let dir = x.spool_dir.join(&n);
                (n, dir, k)
            }
        })
        .collect();
    let rt = runtime()?;
    let handle = rt.handle().clone();
    let mut reports: Vec<(String, Result<RunReport, Error>)> = std::thread::scope(|scope| {
        let running: Vec<_> = lanes
            .into_iter()
            .map(|(name, dir, kind)| {
                let (tls, handle, signalled) = (tls.clone(), handle.clone(), signalled.clone());
                let n = name.clone();
                let h = scope.spawn(move || match kind {
                    LaneSource::Packets(k) => {
                        follow_lane(cfg, x, tls, &n, &dir, k, &handle, &signalled, ipfix, board)
                    }
                    LaneSource::Flowlog(f) => super::flowlog::flowlog_lane(
                        cfg, x, tls, &n, &dir, &f, &handle, &signalled, ipfix, board,
                    ),
                });
                (name, h)
            })
            .collect();
        running
            .into_iter()
            .map(|(n, h)| {
                let r = h.join().unwrap_or_else(|_| Err(Error::Panicked(n.clone())));
                (n, r)
            })
            .collect()
    });
    if single {
        return reports
            .pop()
            .map(|(_, r)| r)
            .unwrap_or(Err(Error::NoSource));
    }
    let mut total = RunReport::default();
    for (name, r) in reports {
        match r {
            Ok(mut r) => {
                total.absorb(&r);
                // The run's failure is the first source's that failed: it
                // moves to the total (the one place a run reports failure).
                if let Some(e) = r.error.take() {
                    total.error.get_or_insert(Error::Lane {
                        name: name.clone(),
                        source: Box::new(e),
                    });
                }
                total.streams.push((name, r));
            }
            Err(e) => {
                tracing::error!("source {name}: {e}");
                total.error.get_or_insert(Error::Lane {
                    name,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(total)
}

/// One followed source through its own engine, spool and shipper.
#[allow(clippy::too_many_arguments)]
fn follow_lane(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    stream: &str,
    spool_dir: &std::path::Path,
    kind: FollowKind,
    rt: &tokio::runtime::Handle,
    signalled: &std::sync::atomic::AtomicBool,
    ipfix: &[IpfixSender],
    board: &Board,
) -> Result<RunReport, Error> {
    // A filter that does not compile stops the source before anything opens.
    let filter = PacketFilter::new(match &kind {
        FollowKind::Folder(f) => f.filter.as_deref(),
        FollowKind::Blob(b) => b.filter.as_deref(),
    })?;
    let mut fw = match kind {
        FollowKind::Folder(f) => Followed::folder(&f, spool_dir),
        FollowKind::Blob(b) => Followed::blob(&b, spool_dir),
    };
    let mut spool = Spool::open(fw.opts.fs.clone(), spool_dir, x.spool_max_mib << 20)?;
    let (engine, pos, observed) = match &fw.kind {
        FollowKind::Folder(_) => {
            match runner::load::<FolderPosition>(&fw.opts.checkpoint, &fw.opts.key)? {
                Some((e, p, o)) => (Some(e), Some(Positions::Folder(p)), o),
                None => (None, None, None),
            }
        }
        FollowKind::Blob(_) => {
            match runner::load::<BlobPosition>(&fw.opts.checkpoint, &fw.opts.key)? {
                Some((e, p, o)) => (Some(e), Some(Positions::Blob(p)), o),
                None => (None, None, None),
            }
        }
    };
    let want = identity::followed(cfg, &fw.opts.key);
    let resumed_after = identity::resume(&mut spool, &want, engine.as_ref().map(|e| e.records))?;
    let lane = Lane::start(rt, x, tls, stream, spool, resumed_after);
    lane.show_on(board, spool_dir);
    let live = board.engine(stream);
    fw.opts.live = Some(live.clone());
    let carried = super::shipped_observations(cfg);
    let mut outputs = Outputs::new(Some(super::carry(lane.sink(), &carried)), ipfix);
    let observing = super::tagged(cfg, &mut outputs, carried.clone())?;
    let (observing, slot) = super::checkpointed(observing, &carried, observed);
    fw.opts.observer = slot;
    let mut sink = CountingSink::new(observing, Some(live));
    if engine.is_some() {
        tracing::info!(
            "resuming from {} ({resumed_after} records spooled after it)",
            fw.opts.checkpoint.display()
        );
    }
    let covered;
    let (t, coverage, blob_stats) = match fw.kind {
        FollowKind::Folder(f) => {
            let pos = match pos {
                Some(Positions::Folder(p)) => p,
                _ => FolderPosition::new(&f),
            };
            tracing::info!("following capture files in {}", f.path.display());
            let mut src = FolderSource::new(f, pos);
            src.filter = filter;
            let mut t = runner::run(cfg, &mut src, engine, &mut sink, &fw.opts, signalled);
            t.report.summary.filtered = src.filter.as_ref().map_or(0, |f| f.filtered);
            let gaps = src.pos.sequence.gaps.iter().cloned().collect();
            covered = src.pos.sequence.covered.iter().copied().collect();
            (t, Some((src.pos.sequence.stats, gaps)), None)
        }
        FollowKind::Blob(b) => {
            let pos = match pos {
                Some(Positions::Blob(p)) => p,
                _ => BlobPosition::new(&b),
            };
            let client = crate::azure::credentials::blob_client(&b, &cfg.azure)?;
            let dir = b
                .download_dir
                .clone()
                .unwrap_or_else(|| spool_dir.join("blob"));
            tracing::info!(
                "following capture blobs in container {} (prefix {:?})",
                b.container,
                b.prefix
            );
            let mut src = BlobSource::new(b, client, pos, dir)?;
            src.filter = filter;
            let mut t = runner::run(cfg, &mut src, engine, &mut sink, &fw.opts, signalled);
            t.report.summary.filtered = src.filter.as_ref().map_or(0, |f| f.filtered);
            let gaps = src.pos.sequence.gaps.iter().cloned().collect();
            covered = src.pos.sequence.covered.iter().copied().collect();
            (t, Some((src.pos.sequence.stats, gaps)), Some(src.stats))
        }
    };
    tracing::info!(
        "source stopped: {} records, {} checkpoints; flushing",
        t.report.summary.records,
        t.checkpoints
    );
    let done = lane.finish_within(fw.grace);
    Ok(RunReport {
        coverage,
        blob: blob_stats,
        covered,
        ..RunReport::lane(t.report, done, resumed_after)
    })
}
