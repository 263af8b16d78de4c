//! Runs a source that is followed rather than read once (the capture folder,
//! Blob storage): steps it, checkpoints engine and position together at an
//! interval, and stops the way the configuration asks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use vmflow_proto::EndReason;

use super::checkpoint::{self, Checkpoint};
use super::source::{FollowedSource, Step};
use super::FollowError;
use crate::config::{Config, OnStop};
use crate::follow::failures::Failures;
use crate::observe::{ObserverState, StateSlot};
use crate::pipeline::live::EngineLive;
use crate::pipeline::{self, EngineState, InlineFeed, InlineOptions, Report, RunOptions};
use crate::sink::RecordSink;

pub struct RunnerOptions {
    /// Where checkpoints are written (the real filesystem, or a model in tests).
    pub fs: crate::disk::SharedFs,
    /// Names the source in the checkpoint (kind and place).
    pub key: String,
    pub checkpoint: PathBuf,
    pub poll: Duration,
    pub interval: Duration,
    pub on_stop: OnStop,
    /// Where the engine's counts and the checkpoint time are shown while
    /// it runs (metrics, stats line).
    pub live: Option<Arc<EngineLive>>,
    /// Where the observer leaves its state when the sink is flushed for a
    /// checkpoint (observations shipped): checkpointed with the engine's.
    pub observer: Option<StateSlot>,
}

pub struct RunnerReport {
    pub report: Report<FollowError>,
    pub checkpoints: u64,
}

/// Loads the checkpoint for `key`: the engine state, the source position
/// and the observer's state if it has one.
pub fn load<P: DeserializeOwned>(
    path: &std::path::Path,
    key: &str,
) -> Result<Option<(EngineState, P, Option<ObserverState>)>, FollowError> {
    Ok(checkpoint::load::<P>(path, key)?.map(|c| (c.engine, c.position, c.observer)))
}

/// Follows `src` until `stop` is set. `restore` is the engine state loaded
/// with the source's position.
pub fn run<T: FollowedSource, S: RecordSink>(
    cfg: &Config,
    src: &mut T,
    restore: Option<EngineState>,
    sink: S,
    opts: &RunnerOptions,
    stop: &AtomicBool,
) -> RunnerReport {
    let mut checkpoints = 0;
    let run_opts = InlineOptions {
        run: RunOptions {
            end: EndReason::Shutdown,
            ..RunOptions::default()
        },
        restore: restore.map(Box::new),
    };
    let report = pipeline::run_inline(cfg, sink, run_opts, |feed: &mut dyn InlineFeed| {
        let mut last = Instant::now();
        let mut moved = false;
        let mut failing = Failures::default();
        let save = |feed: &mut dyn InlineFeed, src: &mut T| -> Result<(), FollowError> {
            // Flushes the sink: the observer leaves its state in the slot.
            let engine = feed.checkpoint()?;
            let mut ck = Checkpoint::new(opts.key.clone(), engine, src.position());
            ck.observer = opts.observer.as_ref().and_then(|s| s.lock().ok()?.clone());
            checkpoint::save(&*opts.fs, &opts.checkpoint, &ck)?;
            src.checkpointed();
            if let Some(l) = &opts.live {
                l.checkpointed(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                );
            }
            Ok(())
        };
        let mut shown = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let step = match src.step(feed) {
                Ok(s) => {
                    failing.succeeded(&opts.key);
                    s
                }
                Err(e) => {
                    failing.failed(&opts.key, &e);
                    Step::Idle
                }
            };
            moved |= step == Step::Progress;
            if let Some(l) = &opts.live {
                // A few times a second: the counts cost a map of skip reasons.
                if shown.elapsed() >= Duration::from_millis(250) {
                    l.publish(feed.progress());
                    l.set_gaps(src.sequence().stats.gaps);
                    shown = Instant::now();
                }
            }
            if moved && last.elapsed() >= opts.interval {
                moved = false;
                match save(feed, src) {
                    Ok(()) => checkpoints += 1,
                    Err(e) => tracing::error!("{e}; the next checkpoint retries"),
                }
                last = Instant::now();
            }
            if step == Step::Idle {
                std::thread::sleep(opts.poll);
            }
        }
        if opts.on_stop == OnStop::Finish {
            // Everything the source holds now, then every flow ends.
            while let Ok(Step::Progress) = src.step(feed) {}
            feed.end_flows(EndReason::Shutdown);
        }
        save(feed, src)?;
        checkpoints += 1;
        feed.keep_open();
        if let Some(l) = &opts.live {
            l.publish(feed.progress());
            l.set_gaps(src.sequence().stats.gaps);
        }
        Ok(())
    });
    if let Some(l) = &opts.live {
        l.publish_summary(&report.summary);
    }
    RunnerReport {
        report,
        checkpoints,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::FolderConfig;
    use crate::disk::sim::SimFs;
    use crate::disk::SharedFs;
    use crate::export::batcher::SpoolSink;
    use crate::export::spool::Spool;
    use crate::follow::folder::{FolderPosition, FolderSource};

    /// Records handed to the sink, readable while the runner runs.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<vmflow_proto::FlowRecord>>>);

    impl RecordSink for Shared {
        fn write(&mut self, records: &[vmflow_proto::FlowRecord]) -> std::io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(records);
            Ok(())
        }
    }

    /// A UDP frame from 10.0.0.1:`sport` to 10.0.0.2:53.
    fn udp(sport: u16) -> Vec<u8> {
        crate::testkit::udp_frame(sport, 53)
    }

    /// A quiet folder: far fewer packets than a batch. The flow a later
    /// packet has shown idle comes out while the runner waits for more, not
    /// only once thousands more packets (or a stop) arrive: the batch spans
    /// more than `[pipeline] batch_time` of packet time.
    #[test]
    fn a_quiet_folder_gives_the_records_its_packets_have_ended() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        assert!(cfg.pipeline.batch_packets > 100);
        let s = 1_000_000_000u64;
        let t0 = 1_760_000_000 * s;
        let mut pcap = Vec::new();
        {
            let mut w = crate::synth::PcapWriter::new(&mut pcap, 128, 1).unwrap();
            for i in 0..3 {
                let f = udp(1111);
                w.write(t0 + i * s, f.len() as u32, &f).unwrap();
            }
            // Another flow, after the first one's idle timeout (60 s).
            let f = udp(2222);
            w.write(t0 + 70 * s, f.len() as u32, &f).unwrap();
        }
        std::fs::write(d.path().join("a.pcap"), &pcap).unwrap();
        let f = FolderConfig {
            path: d.path().to_path_buf(),
            ..FolderConfig::default()
        };
        let mut src = FolderSource::new(f.clone(), FolderPosition::new(&f));
        let sim = Arc::new(SimFs::new());
        let opts = RunnerOptions {
            fs: sim,
            key: "folder:t".into(),
            checkpoint: "/folder.checkpoint".into(),
            poll: Duration::from_millis(5),
            interval: Duration::from_secs(3600),
            on_stop: OnStop::Checkpoint,
            live: None,
            observer: None,
        };
        let sink = Shared::default();
        let seen = sink.0.clone();
        let stop = AtomicBool::new(false);
        let ended = std::thread::scope(|scope| {
            let runner = scope.spawn(|| run(&cfg, &mut src, None, sink, &opts, &stop));
            let deadline = Instant::now() + Duration::from_secs(60);
            let ended = loop {
                let got = seen.lock().unwrap().clone();
                if !got.is_empty() || Instant::now() > deadline {
                    break got;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            stop.store(true, Ordering::Relaxed);
            let r = runner.join().unwrap();
            assert!(r.report.error.is_none(), "{:?}", r.report.error);
            ended
        });
        assert_eq!(ended.len(), 1, "{ended:?}");
        let r = &ended[0];
        assert_eq!((r.src_port, r.fwd_packets), (1111, 3));
        assert_eq!(r.end_reason, vmflow_proto::EndReason::Idle);
    }

    /// A checkpoint claims the records before it; they must be durable in
    /// the spool before the checkpoint is, or a power loss leaves a
    /// checkpoint ahead of the spool (those records would never be sent).
    #[test]
    fn the_spool_is_synced_before_each_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let p = crate::synth::SynthParams::new(20_000, 200).seed(5);
        let mut pcap = Vec::new();
        crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
        std::fs::write(d.path().join("a.pcap"), &pcap).unwrap();
        let sim = Arc::new(SimFs::new());
        let fs: SharedFs = sim.clone();
        let spool = Spool::open(fs.clone(), Path::new("/spool"), 1 << 24).unwrap();
        let spool = Arc::new(Mutex::new(spool));
        let sink = SpoolSink::new(
            spool.clone(),
            Arc::new(tokio::sync::Notify::new()),
            64,
            Duration::from_secs(3600),
        );
        let f = FolderConfig {
            path: d.path().to_path_buf(),
            on_stop: OnStop::Finish,
            ..FolderConfig::default()
        };
        let mut src = FolderSource::new(f.clone(), FolderPosition::new(&f));
        let opts = RunnerOptions {
            fs,
            key: "folder:t".into(),
            checkpoint: "/spool/folder.checkpoint".into(),
            poll: Duration::from_millis(1),
            interval: Duration::ZERO,
            on_stop: OnStop::Finish,
            live: None,
            observer: None,
        };
        sim.clear_log();
        let stop = AtomicBool::new(true);
        let t = run(&cfg, &mut src, None, sink, &opts, &stop);
        assert!(t.report.error.is_none());
        assert!(t.report.summary.records > 100);
        let log = sim.log();
        let ck = log
            .iter()
            .position(|l| l.starts_with("rename /spool/folder.checkpoint.tmp"))
            .expect("a checkpoint was written");
        // Everything spooled was synced (segment, then the ledger's
        // watermark) before the checkpoint went in.
        let ledger = log[..ck].iter().rposition(|l| l == "sync /spool/ledger");
        let segment = log[..ck]
            .iter()
            .rposition(|l| l.starts_with("sync /spool/seg-"));
        assert!(segment.unwrap() < ledger.unwrap(), "{log:?}");
        let s = spool.lock().unwrap();
        assert_eq!(s.end_record(), t.report.summary.records);
        assert!(s.next_after(0).is_some(), "all of it sendable");
    }
}
