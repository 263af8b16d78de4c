//! Flow logs as any bytes: a tuple of each schema, a committed block of a
//! PT1H.json document (whole, or cut into blocks anywhere), the Get Block
//! List answer and the blob name parse or fail cleanly; what parses goes
//! through the stitcher, whose records keep its invariants. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::flowlog::{parse_block, Schema, StitchSettings, Stitcher, Tuple};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for schema in [Schema::NsgV1, Schema::NsgV2, Schema::Vnet] {
        for line in text.lines().take(64) {
            let _ = Tuple::parse(schema, line);
        }
    }
    let _ = vmflow::azure::blob::parse_block_list(&text);
    let _ = vmflow::follow::flowlog::names::hourly(&text);

    // The first byte picks where the document is cut into blocks.
    let (cut, doc) = data.split_first().map_or((0, data), |(c, d)| (*c as usize, d));
    let at = if doc.is_empty() { 0 } else { cut * doc.len() / 256 };
    let settings = StitchSettings {
        idle_ns: 600_000_000_000,
        max_open: 8,
    };
    let mut st = Stitcher::new(settings);
    let mut out = Vec::new();
    for (i, block) in [&doc[..at], &doc[at..], doc].into_iter().enumerate() {
        let p = parse_block("fuzz/PT1H.json", i as u32, block);
        for e in &p.errors {
            assert!(e.to_string().starts_with("fuzz/PT1H.json: block "));
        }
        for e in &p.entries {
            st.push(e, &mut out);
            assert!(st.open_flows() <= settings.max_open);
        }
    }
    st.end_all(vmflow_proto::EndReason::Shutdown, &mut out);
    assert_eq!(st.open_flows(), 0);
    for r in &out {
        assert!(r.first_ns <= r.last_ns, "{r:?}");
        assert!(r.decision.is_some() && r.rule.is_some());
        // Every record survives the wire.
        let back = vmflow_proto::decode_records(&vmflow_proto::encode_records(
            std::slice::from_ref(r),
            1,
        ))
        .unwrap();
        assert_eq!(&back[0], r);
    }
});
