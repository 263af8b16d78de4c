//! A checkpoint file's body as any bytes: decoding fails cleanly, and an
//! engine state that decodes runs a few packets without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::config::Config;
use vmflow::export::VecSink;
use vmflow::follow::checkpoint::Checkpoint;
use vmflow::pipeline::{run_inline, InlineOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = rmp_serde::from_slice::<Checkpoint<u64>>(data) else {
        return;
    };
    let cfg = Config::default();
    let opts = InlineOptions {
        restore: Some(Box::new(ck.engine)),
        ..InlineOptions::default()
    };
    run_inline(&cfg, VecSink::default(), opts, |feed| {
        feed.tick(u64::MAX / 2);
        Ok::<_, vmflow::pipeline::PipelineError>(())
    });
});
