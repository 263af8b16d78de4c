//! The chosen packages' capture path, for the live benchmark: pnet's datalink
//! channel (one `recvfrom` per packet, whole frames, no kernel drop counter)
//! feeding the same inline engine `vmflow capture` runs. Takes the arguments
//! `vmflow capture` takes in `benches/ab_live_cpu.sh` and prints the same
//! lines, so the script can run it as a capture:
//!
//!   benches/ab_live_cpu.sh 400000 5 target/release/examples/pnet_capture target/release/vmflow

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pnet_datalink::{Channel, Config as ChannelConfig};
use vmflow::capture::RawPacket;
use vmflow::config::Config;
use vmflow::export::CountSink;
use vmflow::pipeline::{run_inline, InlineOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iface = args
        .iter()
        .position(|a| a == "-i")
        .and_then(|i| args.get(i + 1))
        .expect("usage: pnet_capture capture -i IFACE [ignored…]");
    let nic = pnet_datalink::interfaces()
        .into_iter()
        .find(|n| &n.name == iface)
        .expect("no such interface");
    let cfg = ChannelConfig {
        read_timeout: Some(Duration::from_millis(100)),
        read_buffer_size: 65536,
        ..ChannelConfig::default()
    };
    let Ok(Channel::Ethernet(_tx, mut rx)) = pnet_datalink::channel(&nic, cfg) else {
        panic!("no Ethernet channel on {iface}");
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).unwrap();
    }
    let mut cfg = Config::default();
    // The batch size `vmflow capture` uses.
    cfg.pipeline.batch_packets = 256;
    let opts = InlineOptions::default();
    eprintln!("capturing on {iface} (pnet datalink channel)");
    let mut seen = 0u64;
    let mut sink = CountSink::default();
    let report = run_inline(&cfg, &mut sink, opts, |feed| {
        while !stop.load(Ordering::Relaxed) {
            // pnet gives no kernel timestamp; the wall clock stands in.
            let Ok(frame) = rx.next() else { continue };
            let ts_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seen += 1;
            feed.packet(RawPacket {
                ts_ns,
                linktype: 1,
                orig_len: frame.len() as u32,
                data: frame,
            });
        }
        Ok::<_, vmflow::pipeline::PipelineError>(())
    });
    assert!(report.error.is_none());
    // pnet has no PACKET_STATISTICS: kernel drops are unknown.
    eprintln!(
        "records={} iface.{iface}.packets={seen} iface.{iface}.kernel_drops=unknown",
        sink.0
    );
}
