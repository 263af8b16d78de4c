//! Any instruction stream and any packet through the classic BPF checks and
//! interpreter that filter capture files: a program the checks pass runs to
//! an end without panicking, whatever it loads, divides or jumps to, and
//! running it twice gives the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::capture::filter::{Insn, Program};

fuzz_target!(|data: &[u8]| {
    // First byte: how many 8-byte instructions; the rest is the packet.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 64).min(rest.len() / 8);
    let (code, packet) = rest.split_at(n * 8);
    let insns: Vec<Insn> = code
        .chunks_exact(8)
        .map(|c| {
            Insn::new(
                u16::from_le_bytes([c[0], c[1]]),
                c[2],
                c[3],
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    if let Ok(p) = Program::new(insns) {
        let wire = packet.len() as u32 + u32::from(n as u8);
        let first = p.run(packet, wire);
        assert_eq!(first, p.run(packet, wire));
    }
});
