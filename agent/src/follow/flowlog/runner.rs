//! Runs the flow-log source: each read of one blob's new blocks between two
//! checkpoints. Before the read, a checkpoint names it (pending); after,
//! once its records are durable in the spool, a checkpoint records it done.
//! A run killed in between resumes by reading those blocks again, and the
//! spool sink skips the records it already holds (the checkpoint says how
//! many records came before it; the spool, how many it has).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmflow_proto::{EndReason, FlowRecord};

use super::live::{FlowlogLive, FlowlogNow};
use super::position::{self, FlowlogCheckpoint};
use super::FlowlogSource;
use crate::config::OnStop;
use crate::export::batcher::Skips;
use crate::follow::failures::Failures;
use crate::follow::FollowError;
use crate::pipeline::live::EngineLive;
use crate::pipeline::{Report, Summary};

pub struct FlowlogRunOptions {
    pub fs: crate::disk::SharedFs,
    /// Names the source in the checkpoint.
    pub key: String,
    pub checkpoint: PathBuf,
    /// How long to wait when there is nothing to read.
    pub idle: Duration,
    pub on_stop: OnStop,
    /// Where the run shows what it does (metrics, stats line), if anywhere.
    pub watch: Option<Watch>,
    /// Where the observer leaves its state when the sink is flushed for a
    /// checkpoint (observations shipped): checkpointed with the stitcher's.
    pub observer: Option<crate::observe::StateSlot>,
}

/// The boards a flow-log run publishes on: its records, open flows and
/// checkpoints as an engine's, and what reading the container did.
#[derive(Clone)]
pub struct Watch {
    pub engine: Arc<EngineLive>,
    pub flowlog: Arc<FlowlogLive>,
}

pub struct FlowlogRunReport {
    pub report: Report<FollowError>,
    pub checkpoints: u64,
}

/// Follows `src` until `stop` is set. `records` is the count of records
/// the loaded checkpoint says came before it (0 without one).
pub fn run<S: Skips>(
    src: &mut FlowlogSource,
    sink: &mut S,
    opts: &FlowlogRunOptions,
    records: u64,
    stop: &AtomicBool,
) -> FlowlogRunReport {
    let started = Instant::now();
    let mut r = Runner {
        records,
        summary: Summary::default(),
        checkpoints: 0,
    };
    let error = r.follow(src, sink, opts, stop).err();
    r.summary.elapsed = started.elapsed();
    FlowlogRunReport {
        report: Report {
            summary: r.summary,
            error,
        },
        checkpoints: r.checkpoints,
    }
}

struct Runner {
    /// Records produced before this point, in this run and those before.
    records: u64,
    summary: Summary,
    checkpoints: u64,
}

impl Runner {
    fn follow<S: Skips>(
        &mut self,
        src: &mut FlowlogSource,
        sink: &mut S,
        opts: &FlowlogRunOptions,
        stop: &AtomicBool,
    ) -> Result<(), FollowError> {
        let mut failing = Failures::default();
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let step = self.step(src, sink, opts, &mut out);
            show(src, opts);
            match step {
                Ok(true) => failing.succeeded(&opts.key),
                Ok(false) => {
                    failing.succeeded(&opts.key);
                    std::thread::sleep(opts.idle);
                }
                Err(e) => {
                    failing.failed(&opts.key, &e);
                    std::thread::sleep(opts.idle);
                }
            }
        }
        if opts.on_stop == OnStop::Finish {
            // What the container holds now, then every flow ends.
            while let Ok(true) = self.step(src, sink, opts, &mut out) {}
            src.stitcher.end_all(EndReason::Shutdown, &mut out);
            self.emit(sink, &mut out, opts)?;
        }
        self.save(src, sink, opts)?;
        show(src, opts);
        Ok(())
    }

    /// One read; `false` when there was nothing to read.
    fn step<S: Skips>(
        &mut self,
        src: &mut FlowlogSource,
        sink: &mut S,
        opts: &FlowlogRunOptions,
        out: &mut Vec<FlowRecord>,
    ) -> Result<bool, FollowError> {
        let work = src.prepare();
        if src.take_abandoned() {
            // The records the spool holds from the lost read count as
            // produced: nothing produced later may be skipped for them.
            let held = sink.pending_skip();
            sink.set_skip(0);
            self.records += held;
            self.save(src, sink, opts)?;
        }
        let Some(work) = work? else {
            return Ok(false);
        };
        if !work.resumed {
            src.pos.pending = Some(work.pending());
            self.save(src, sink, opts)?;
        }
        if !src.read(&work, out)? {
            return Ok(true);
        }
        self.emit(sink, out, opts)?;
        self.save(src, sink, opts)?;
        Ok(true)
    }

    fn emit<S: Skips>(
        &mut self,
        sink: &mut S,
        out: &mut Vec<FlowRecord>,
        opts: &FlowlogRunOptions,
    ) -> Result<(), FollowError> {
        sink.write(out).map_err(FollowError::Spool)?;
        if let Some(w) = &opts.watch {
            w.engine.count_records(out);
        }
        let s = &mut self.summary;
        for r in out.iter() {
            s.records += 1;
            s.flows += u64::from(r.is_final);
            s.record_packets += r.fwd_packets + r.rev_packets;
            s.record_bytes += r.fwd_bytes + r.rev_bytes;
        }
        self.records += out.len() as u64;
        out.clear();
        Ok(())
    }

    /// Everything produced is made durable in the spool, then the
    /// checkpoint that counts it is written.
    fn save<S: Skips>(
        &mut self,
        src: &FlowlogSource,
        sink: &mut S,
        opts: &FlowlogRunOptions,
    ) -> Result<(), FollowError> {
        sink.flush().map_err(FollowError::Spool)?;
        let mut ck = FlowlogCheckpoint::new(
            opts.key.clone(),
            self.records,
            src.stitcher.state(),
            src.pos.clone(),
        );
        // The flush above left the observer's state in the slot.
        ck.observer = opts.observer.as_ref().and_then(|s| s.lock().ok()?.clone());
        position::save(&*opts.fs, &opts.checkpoint, &ck)?;
        self.checkpoints += 1;
        if let Some(w) = &opts.watch {
            w.engine.checkpointed(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
        }
        Ok(())
    }
}

/// Publishes what the source has done (after each read: cheap copies).
fn show(src: &FlowlogSource, opts: &FlowlogRunOptions) {
    let Some(w) = &opts.watch else { return };
    let stitch = src.stitcher.stats;
    let open_flows = src.stitcher.open_flows() as u64;
    w.flowlog.publish(FlowlogNow {
        read: src.stats,
        stitch,
        open_flows,
    });
    w.engine.publish(vmflow_engine::Progress {
        tables: Some(vmflow_engine::TablesNow {
            open_flows,
            evicted: stitch.evicted,
        }),
        ..Default::default()
    });
}
