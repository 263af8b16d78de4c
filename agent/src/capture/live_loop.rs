//! The live capture loop: every ring drained into the engine, a tick so
//! timeouts fire on an idle link, kernel drops reported as coverage gaps,
//! interfaces that come and go followed, and new settings applied without
//! losing a flow.

use std::net::SocketAddr;
use std::time::Duration;

use super::live::{self, IfaceStats, Ring, RingOptions};
use super::SourceError;
use crate::config::Config;
use crate::pipeline::live::{EngineLive, IfaceNow};
use crate::pipeline::{self, InlineFeed, PipelineError};
use crate::sink::RecordSink;

/// Live capture into `sink` until `stop` is set: packets from every ring, and
/// a tick every `tick` so timeouts fire on an idle link. Time while idle is
/// the last packet's kernel timestamp advanced by the monotonic clock, so a
/// wall-clock step cannot fire or freeze timeouts.
#[allow(clippy::too_many_arguments)]
pub fn capture<S: RecordSink>(
    cfg: &Config,
    rings: &mut Vec<Ring>,
    sink: S,
    exclude: Option<SocketAddr>,
    stop: &std::sync::atomic::AtomicBool,
    reload: &mut dyn FnMut() -> Option<Config>,
    drops: &std::sync::atomic::AtomicU64,
    tick: Duration,
    block_timeout_ms: u32,
    follow: Option<&IfaceWatch>,
    live: Option<&EngineLive>,
) -> (pipeline::Report<SourceError>, Vec<IfaceStats>) {
    use std::sync::atomic::Ordering;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let opts = pipeline::InlineOptions {
        run: pipeline::RunOptions {
            end: vmflow_proto::EndReason::Shutdown,
            exclude,
        },
        restore: None,
    };
    // Small batches keep a batch in L2 between the reader writing it and the
    // tables reading it back (measured in BENCHMARKS.md); live capture does
    // not need the long batches that amortize thread hand-offs in replay.
    let mut cfg = cfg.clone();
    cfg.pipeline.batch_packets = cfg.pipeline.batch_packets.min(256);
    let mut gone: Vec<IfaceStats> = Vec::new();
    let report = pipeline::run_inline(&cfg, sink, opts, |feed: &mut dyn InlineFeed| {
        let mut last_ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut last_mono = Instant::now();
        let mut last_tick = Instant::now();
        let mut prev_look = last_ts;
        let mut last_scan = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut got = 0;
            for r in rings.iter_mut() {
                got += r.drain(&mut |p| {
                    last_ts = last_ts.max(p.ts_ns);
                    feed.packet(p);
                });
            }
            if got > 0 {
                last_mono = Instant::now();
            }
            if last_tick.elapsed() >= tick {
                let now = last_ts + last_mono.elapsed().as_nanos() as u64;
                feed.tick(now);
                let last_look = std::mem::replace(&mut prev_look, now);
                last_tick = Instant::now();
                // Kernel drops are coverage gaps: say where and how many, as
                // they happen, and keep the running total for the batches.
                let mut ifaces = Vec::new();
                for r in rings.iter_mut() {
                    let before = r.drops();
                    let st = r.kernel_stats();
                    ifaces.push(IfaceNow {
                        iface: st.iface.clone(),
                        packets: st.packets,
                        kernel_drops: st.kernel_drops,
                    });
                    if st.kernel_drops > before {
                        // The drops happened since the last look: flows
                        // open then may be short.
                        feed.gap(last_look, now);
                        if let Some(l) = live {
                            l.add_gap();
                        }
                        tracing::warn!(
                            "{}: coverage gap: the kernel dropped {} packets (ring full) up to {} ns",
                            st.iface,
                            st.kernel_drops - before,
                            now
                        );
                        drops.fetch_add(st.kernel_drops - before, Ordering::Relaxed);
                    }
                }
                if let Some(l) = live {
                    // Interfaces that went away keep their last counts.
                    ifaces.extend(gone.iter().map(|st| IfaceNow {
                        iface: st.iface.clone(),
                        packets: st.packets,
                        kernel_drops: st.kernel_drops,
                    }));
                    l.set_ifaces(ifaces);
                    l.publish(feed.progress());
                }
                if let Some(f) = follow {
                    if last_scan.elapsed() >= f.every {
                        last_scan = Instant::now();
                        rescan(f, rings, &mut gone, &mut |p| feed.packet(p));
                    }
                }
                if let Some(new) = reload() {
                    let applied = new
                        .engine_settings()
                        .map_err(PipelineError::from)
                        .and_then(|s| Ok(feed.reconfigure(&s)?));
                    match applied {
                        Ok(()) => tracing::info!("configuration reloaded; every open flow kept"),
                        Err(e) => tracing::error!("reload refused, old settings stay: {e}"),
                    }
                }
            }
            if got == 0 {
                let left = tick.saturating_sub(last_tick.elapsed());
                live::wait(rings, left.as_millis().clamp(1, 1000) as i32);
            }
        }
        // Packets captured before the stop may sit in a block the kernel has
        // not handed over yet; it does so within the block timeout. Wait two
        // of those and take everything.
        let until = Instant::now() + Duration::from_millis(2 * u64::from(block_timeout_ms) + 20);
        while Instant::now() < until {
            live::wait(rings, block_timeout_ms as i32);
            for r in rings.iter_mut() {
                r.drain(&mut |p| feed.packet(p));
            }
        }
        Ok(())
    });
    let mut stats: Vec<IfaceStats> = gone;
    stats.extend(rings.iter_mut().map(|r| r.kernel_stats()));
    if let Some(l) = live {
        l.set_ifaces(
            stats
                .iter()
                .map(|st| IfaceNow {
                    iface: st.iface.clone(),
                    packets: st.packets,
                    kernel_drops: st.kernel_drops,
                })
                .collect(),
        );
        l.publish_summary(&report.summary);
    }
    (report, stats)
}

/// Following interfaces while capturing: which ones, and how often to look.
pub struct IfaceWatch {
    /// Interfaces named in the configuration (captured whenever they exist);
    /// empty: every interface that is up, not loopback and has an address.
    pub configured: Vec<String>,
    pub ring: RingOptions,
    pub every: Duration,
}

/// Opens rings on interfaces that appeared, closes those on interfaces
/// that went away (or were re-created), after taking their last packets.
fn rescan(
    f: &IfaceWatch,
    rings: &mut Vec<Ring>,
    gone: &mut Vec<IfaceStats>,
    mut feed: &mut dyn FnMut(super::RawPacket<'_>),
) {
    let wanted: Vec<String> = if f.configured.is_empty() {
        live::default_interfaces()
    } else {
        f.configured
            .iter()
            .filter(|n| live::ifindex(n).is_some())
            .cloned()
            .collect()
    };
    let mut i = 0;
    while i < rings.len() {
        let r = &mut rings[i];
        let same = live::ifindex(r.name()) == Some(r.ifindex());
        if same && wanted.iter().any(|w| w == r.name()) {
            i += 1;
            continue;
        }
        r.drain(&mut feed);
        let st = r.kernel_stats();
        tracing::warn!(
            "{}: interface went away or was re-created; {} packets captured on it (drops {}), stopped",
            st.iface,
            st.packets,
            st.kernel_drops
        );
        gone.push(st);
        rings.remove(i);
    }
    for name in wanted {
        if rings.iter().any(|r| r.name() == name) {
            continue;
        }
        match Ring::open(&name, &f.ring) {
            Ok(r) => {
                tracing::info!("{name}: interface appeared; capturing on it");
                rings.push(r);
            }
            Err(e) => tracing::warn!("{name}: cannot capture on the new interface: {e}"),
        }
    }
}
