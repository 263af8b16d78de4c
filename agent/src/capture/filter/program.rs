//! A classic BPF program: checked once when it is made, then run on packets
//! in user space (capture files) or handed to the kernel (live capture).
//!
//! The interpreter follows libpcap's own `bpf_filter` (bpf_filter.c), so a
//! file filtered here keeps exactly the packets `tcpdump -r` keeps: a load
//! beyond the captured bytes or a division by zero rejects the packet, `len`
//! is the length on the wire. It never panics and always ends: every jump
//! goes forward, so a program of n instructions runs at most n of them.

/// One instruction as libpcap and the kernel lay it out (`struct bpf_insn`,
/// `struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }
}

/// Scratch memory words (`BPF_MEMWORDS`).
pub const MEMWORDS: usize = 16;
/// The kernel's limit on a classic program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// The opcodes, named as in `pcap/bpf.h` (class | size | mode, or class |
/// op | source).
pub mod op {
    pub const LD_W_ABS: u16 = 0x20;
    pub const LD_H_ABS: u16 = 0x28;
    pub const LD_B_ABS: u16 = 0x30;
    pub const LD_W_IND: u16 = 0x40;
    pub const LD_H_IND: u16 = 0x48;
    pub const LD_B_IND: u16 = 0x50;
    pub const LD_W_LEN: u16 = 0x80;
    pub const LD_IMM: u16 = 0x00;
    pub const LD_MEM: u16 = 0x60;
    pub const LDX_IMM: u16 = 0x01;
    pub const LDX_MEM: u16 = 0x61;
    pub const LDX_W_LEN: u16 = 0x81;
    pub const LDX_B_MSH: u16 = 0xb1;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;
    /// ALU: `0x04 | operation | source` (source K = 0x00, X = 0x08).
    pub const ALU: u16 = 0x04;
    pub const ADD: u16 = 0x00;
    pub const SUB: u16 = 0x10;
    pub const MUL: u16 = 0x20;
    pub const DIV: u16 = 0x30;
    pub const OR: u16 = 0x40;
    pub const AND: u16 = 0x50;
    pub const LSH: u16 = 0x60;
    pub const RSH: u16 = 0x70;
    pub const NEG: u16 = 0x80;
    pub const MOD: u16 = 0x90;
    pub const XOR: u16 = 0xa0;
    pub const K: u16 = 0x00;
    pub const X: u16 = 0x08;
    /// Jumps: `0x05 | test | source`.
    pub const JMP: u16 = 0x05;
    pub const JA: u16 = 0x00;
    pub const JEQ: u16 = 0x10;
    pub const JGT: u16 = 0x20;
    pub const JGE: u16 = 0x30;
    pub const JSET: u16 = 0x40;
    pub const ALU_ADD_K: u16 = ALU | ADD | K;
    pub const ALU_ADD_X: u16 = ALU | ADD | X;
    pub const ALU_SUB_K: u16 = ALU | SUB | K;
    pub const ALU_SUB_X: u16 = ALU | SUB | X;
    pub const ALU_MUL_K: u16 = ALU | MUL | K;
    pub const ALU_MUL_X: u16 = ALU | MUL | X;
    pub const ALU_DIV_K: u16 = ALU | DIV | K;
    pub const ALU_DIV_X: u16 = ALU | DIV | X;
    pub const ALU_MOD_K: u16 = ALU | MOD | K;
    pub const ALU_MOD_X: u16 = ALU | MOD | X;
    pub const ALU_OR_K: u16 = ALU | OR | K;
    pub const ALU_OR_X: u16 = ALU | OR | X;
    pub const ALU_AND_K: u16 = ALU | AND | K;
    pub const ALU_AND_X: u16 = ALU | AND | X;
    pub const ALU_XOR_K: u16 = ALU | XOR | K;
    pub const ALU_XOR_X: u16 = ALU | XOR | X;
    pub const ALU_LSH_K: u16 = ALU | LSH | K;
    pub const ALU_LSH_X: u16 = ALU | LSH | X;
    pub const ALU_RSH_K: u16 = ALU | RSH | K;
    pub const ALU_RSH_X: u16 = ALU | RSH | X;
    pub const ALU_NEG: u16 = ALU | NEG;
    pub const JMP_JA: u16 = JMP | JA;
    pub const JMP_JEQ_K: u16 = JMP | JEQ | K;
    pub const JMP_JEQ_X: u16 = JMP | JEQ | X;
    pub const JMP_JGT_K: u16 = JMP | JGT | K;
    pub const JMP_JGT_X: u16 = JMP | JGT | X;
    pub const JMP_JGE_K: u16 = JMP | JGE | K;
    pub const JMP_JGE_X: u16 = JMP | JGE | X;
    pub const JMP_JSET_K: u16 = JMP | JSET | K;
    pub const JMP_JSET_X: u16 = JMP | JSET | X;
    pub const RET_K: u16 = 0x06;
    pub const RET_A: u16 = 0x16;
    pub const TAX: u16 = 0x07;
    pub const TXA: u16 = 0x87;
}

/// Why a program was refused (libpcap never makes one of these; the checks
/// are what `bpf_validate` and the kernel's `bpf_check_classic` demand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("empty program")]
    Empty,
    #[error("{0} instructions (the kernel takes at most 4096)")]
    TooLong(usize),
    #[error("instruction {at}: unknown opcode {code:#06x}")]
    UnknownOpcode { at: usize, code: u16 },
    #[error("instruction {at}: scratch word {k} out of 0..16")]
    Memory { at: usize, k: u32 },
    #[error("instruction {at}: division by the constant 0")]
    DivideByZero { at: usize },
    #[error("instruction {at}: shift by {k} (at most 31)")]
    Shift { at: usize, k: u32 },
    #[error("instruction {at}: jump past the end")]
    Jump { at: usize },
    #[error("the last instruction is not a return")]
    NoReturn,
}

/// A checked program. Made only by [`Program::new`], so every instance
/// passed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// Checks `insns` like libpcap's `bpf_validate`, a little stricter
    /// (opcodes are matched whole, constant shifts must be below 32 as the
    /// kernel wants).
    pub fn new(insns: Vec<Insn>) -> Result<Program, ProgramError> {
        use op::*;
        let len = insns.len();
        if len == 0 {
            return Err(ProgramError::Empty);
        }
        if len > MAX_INSNS {
            return Err(ProgramError::TooLong(len));
        }
        for (at, i) in insns.iter().enumerate() {
            let mem = |k: u32| {
                if (k as usize) < MEMWORDS {
                    Ok(())
                } else {
                    Err(ProgramError::Memory { at, k })
                }
            };
            // Instructions after this one: how far a jump may go.
            let room = (len - at - 1) as u64;
            match i.code {
                LD_W_ABS | LD_H_ABS | LD_B_ABS | LD_W_IND | LD_H_IND | LD_B_IND | LD_W_LEN
                | LD_IMM | LDX_IMM | LDX_W_LEN | LDX_B_MSH | RET_K | RET_A | TAX | TXA => {}
                LD_MEM | LDX_MEM | ST | STX => mem(i.k)?,
                c if c & 0x07 == ALU => {
                    let (operation, source) = (c & 0xf0, c & 0x08);
                    if c & !0xff != 0 {
                        return Err(ProgramError::UnknownOpcode { at, code: c });
                    }
                    match operation {
                        ADD | SUB | MUL | OR | AND | XOR => {}
                        NEG if source == K => {}
                        DIV | MOD if source == K && i.k == 0 => {
                            return Err(ProgramError::DivideByZero { at })
                        }
                        DIV | MOD => {}
                        LSH | RSH if source == K && i.k >= 32 => {
                            return Err(ProgramError::Shift { at, k: i.k })
                        }
                        LSH | RSH => {}
                        _ => return Err(ProgramError::UnknownOpcode { at, code: c }),
                    }
                }
                c if c & 0x07 == JMP => {
                    if c & !0xff != 0 {
                        return Err(ProgramError::UnknownOpcode { at, code: c });
                    }
                    match c & 0xf0 {
                        JA if c == JMP | JA => {
                            if u64::from(i.k) >= room {
                                return Err(ProgramError::Jump { at });
                            }
                        }
                        JEQ | JGT | JGE | JSET => {
                            if u64::from(i.jt) >= room || u64::from(i.jf) >= room {
                                return Err(ProgramError::Jump { at });
                            }
                        }
                        _ => return Err(ProgramError::UnknownOpcode { at, code: c }),
                    }
                }
                c => return Err(ProgramError::UnknownOpcode { at, code: c }),
            }
        }
        match insns[len - 1].code {
            op::RET_K | op::RET_A => Ok(Program { insns }),
            _ => Err(ProgramError::NoReturn),
        }
    }

    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Runs the program on one packet: `data` is what was captured,
    /// `wire_len` the length on the wire. The result is how many bytes to
    /// keep; 0 rejects the packet.
    pub fn run(&self, data: &[u8], wire_len: u32) -> u32 {
        use op::*;
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; MEMWORDS];
        let mut pc = 0usize;
        // `new` checked every jump and scratch index, so none of the `?`
        // and `get` below can fail on a program made here; they keep the
        // interpreter panic-free on its own all the same.
        loop {
            let Some(&i) = self.insns.get(pc) else {
                return 0;
            };
            pc += 1;
            let k = i.k;
            match i.code {
                LD_W_ABS => match load::<4>(data, k, 0) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_ABS => match load::<2>(data, k, 0) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match load::<1>(data, k, 0) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_W_IND => match load::<4>(data, k, x) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_IND => match load::<2>(data, k, x) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_IND => match load::<1>(data, k, x) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_W_LEN => a = wire_len,
                LDX_W_LEN => x = wire_len,
                LD_IMM => a = k,
                LDX_IMM => x = k,
                LD_MEM => match mem.get(k as usize) {
                    Some(&v) => a = v,
                    None => return 0,
                },
                LDX_MEM => match mem.get(k as usize) {
                    Some(&v) => x = v,
                    None => return 0,
                },
                // The IPv4 header length: 4 × the low nibble of a byte.
                LDX_B_MSH => match data.get(k as usize) {
                    Some(&b) => x = u32::from(b & 0x0f) << 2,
                    None => return 0,
                },
                ST => match mem.get_mut(k as usize) {
                    Some(m) => *m = a,
                    None => return 0,
                },
                STX => match mem.get_mut(k as usize) {
                    Some(m) => *m = x,
                    None => return 0,
                },
                TAX => x = a,
                TXA => a = x,
                RET_K => return k,
                RET_A => return a,
                // Every ALU and jump opcode is an arm of its own, so an
                // instruction costs one dispatch (jumps are most of what
                // libpcap's programs execute).
                ALU_ADD_K => a = a.wrapping_add(k),
                ALU_ADD_X => a = a.wrapping_add(x),
                ALU_SUB_K => a = a.wrapping_sub(k),
                ALU_SUB_X => a = a.wrapping_sub(x),
                ALU_MUL_K => a = a.wrapping_mul(k),
                ALU_MUL_X => a = a.wrapping_mul(x),
                ALU_DIV_K | ALU_DIV_X => {
                    let v = if i.code == ALU_DIV_X { x } else { k };
                    match a.checked_div(v) {
                        Some(r) => a = r,
                        None => return 0,
                    }
                }
                ALU_MOD_K | ALU_MOD_X => {
                    let v = if i.code == ALU_MOD_X { x } else { k };
                    match a.checked_rem(v) {
                        Some(r) => a = r,
                        None => return 0,
                    }
                }
                ALU_OR_K => a |= k,
                ALU_OR_X => a |= x,
                ALU_AND_K => a &= k,
                ALU_AND_X => a &= x,
                ALU_XOR_K => a ^= k,
                ALU_XOR_X => a ^= x,
                // libpcap: a shift by 32 or more gives 0.
                ALU_LSH_K => a = a.checked_shl(k).unwrap_or(0),
                ALU_LSH_X => a = a.checked_shl(x).unwrap_or(0),
                ALU_RSH_K => a = a.checked_shr(k).unwrap_or(0),
                ALU_RSH_X => a = a.checked_shr(x).unwrap_or(0),
                ALU_NEG => a = a.wrapping_neg(),
                JMP_JA => pc = pc.saturating_add(k as usize),
                JMP_JEQ_K => pc += usize::from(if a == k { i.jt } else { i.jf }),
                JMP_JEQ_X => pc += usize::from(if a == x { i.jt } else { i.jf }),
                JMP_JGT_K => pc += usize::from(if a > k { i.jt } else { i.jf }),
                JMP_JGT_X => pc += usize::from(if a > x { i.jt } else { i.jf }),
                JMP_JGE_K => pc += usize::from(if a >= k { i.jt } else { i.jf }),
                JMP_JGE_X => pc += usize::from(if a >= x { i.jt } else { i.jf }),
                JMP_JSET_K => pc += usize::from(if a & k != 0 { i.jt } else { i.jf }),
                JMP_JSET_X => pc += usize::from(if a & x != 0 { i.jt } else { i.jf }),
                _ => return 0,
            }
        }
    }

    /// Whether the packet passes.
    #[inline]
    pub fn accepts(&self, data: &[u8], wire_len: u32) -> bool {
        self.run(data, wire_len) != 0
    }
}

/// `N` bytes big-endian at `base + k`; `None` when any of them lies beyond
/// the captured data (or the offset overflows).
#[inline]
fn load<const N: usize>(data: &[u8], k: u32, base: u32) -> Option<u32> {
    let at = (k as usize).checked_add(base as usize)?;
    let b = data.get(at..at.checked_add(N)?)?;
    Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
}

#[cfg(test)]
mod tests {
    use super::op::*;
    use super::*;

    fn prog(insns: &[Insn]) -> Program {
        Program::new(insns.to_vec()).unwrap()
    }

    fn i(code: u16, k: u32) -> Insn {
        Insn::new(code, 0, 0, k)
    }

    /// Loads A with `load`, then returns A.
    fn run_load(load: Insn, data: &[u8]) -> u32 {
        prog(&[i(LDX_IMM, 1), load, i(RET_A, 0)]).run(data, 1000)
    }

    #[test]
    fn absolute_loads_are_big_endian_and_bounded() {
        let d = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(run_load(i(LD_W_ABS, 0), &d), 0x1234_5678);
        assert_eq!(run_load(i(LD_W_ABS, 1), &d), 0x3456_789a);
        assert_eq!(run_load(i(LD_H_ABS, 3), &d), 0x789a);
        assert_eq!(run_load(i(LD_B_ABS, 4), &d), 0x9a);
        // One byte too far: the packet is rejected, as the kernel does.
        assert_eq!(run_load(i(LD_W_ABS, 2), &d), 0);
        assert_eq!(run_load(i(LD_H_ABS, 4), &d), 0);
        assert_eq!(run_load(i(LD_B_ABS, 5), &d), 0);
        assert_eq!(run_load(i(LD_W_ABS, u32::MAX), &d), 0);
        // Ancillary-data offsets (SKF_AD_OFF) are beyond any packet here.
        assert_eq!(run_load(i(LD_W_ABS, 0xffff_f000), &d), 0);
    }

    #[test]
    fn indirect_loads_add_x_and_are_bounded() {
        let d = [0x12, 0x34, 0x56, 0x78, 0x9a];
        // X = 1 (see run_load).
        assert_eq!(run_load(i(LD_W_IND, 0), &d), 0x3456_789a);
        assert_eq!(run_load(i(LD_H_IND, 2), &d), 0x789a);
        assert_eq!(run_load(i(LD_B_IND, 3), &d), 0x9a);
        assert_eq!(run_load(i(LD_B_IND, 4), &d), 0);
        assert_eq!(run_load(i(LD_W_IND, u32::MAX), &d), 0);
        let p = prog(&[i(LDX_IMM, u32::MAX), i(LD_B_IND, u32::MAX), i(RET_A, 0)]);
        assert_eq!(p.run(&d, 5), 0);
    }

    #[test]
    fn lengths_immediates_and_msh() {
        let d = [0x45, 0, 0, 0];
        // len is the length on the wire, not what was captured.
        assert_eq!(prog(&[i(LD_W_LEN, 0), i(RET_A, 0)]).run(&d, 1500), 1500);
        assert_eq!(
            prog(&[i(LDX_W_LEN, 0), i(TXA, 0), i(RET_A, 0)]).run(&d, 60),
            60
        );
        assert_eq!(prog(&[i(LD_IMM, 77), i(RET_A, 0)]).run(&d, 4), 77);
        assert_eq!(
            prog(&[i(LDX_IMM, 78), i(TXA, 0), i(RET_A, 0)]).run(&d, 4),
            78
        );
        // 0x45: an IPv4 header of 5 words, 20 bytes.
        assert_eq!(
            prog(&[i(LDX_B_MSH, 0), i(TXA, 0), i(RET_A, 0)]).run(&d, 4),
            20
        );
        assert_eq!(
            prog(&[i(LDX_B_MSH, 4), i(TXA, 0), i(RET_A, 0)]).run(&d, 4),
            0
        );
    }

    #[test]
    fn scratch_memory_and_register_moves() {
        let p = prog(&[
            i(LD_IMM, 5),
            i(ST, 3),
            i(LDX_IMM, 9),
            i(STX, 15),
            i(LD_IMM, 0),
            i(LDX_MEM, 3),
            i(LD_MEM, 15),
            // A = 9, X = 5: A - X = 4.
            i(ALU | SUB | X, 0),
            i(TAX, 0),
            i(LD_IMM, 100),
            i(TXA, 0),
            i(RET_A, 0),
        ]);
        assert_eq!(p.run(&[], 0), 4);
    }

    fn alu(code: u16, a: u32, k: u32) -> u32 {
        // With K, and the same with X, must agree.
        let with_k = prog(&[i(LD_IMM, a), i(ALU | code | K, k), i(RET_A, 0)]).run(&[], 0);
        let with_x = prog(&[
            i(LDX_IMM, k),
            i(LD_IMM, a),
            i(ALU | code | X, 0),
            i(RET_A, 0),
        ])
        .run(&[], 0);
        assert_eq!(with_k, with_x, "op {code:#x}");
        with_k
    }

    #[test]
    fn arithmetic_wraps_like_u32() {
        assert_eq!(alu(ADD, u32::MAX, 2), 1);
        assert_eq!(alu(SUB, 1, 2), u32::MAX);
        assert_eq!(alu(MUL, 0x8000_0000, 2), 0);
        assert_eq!(alu(DIV, 7, 2), 3);
        assert_eq!(alu(MOD, 7, 4), 3);
        assert_eq!(alu(OR, 0xf0, 0x0f), 0xff);
        assert_eq!(alu(AND, 0xf0, 0x3c), 0x30);
        assert_eq!(alu(XOR, 0xff, 0x0f), 0xf0);
        assert_eq!(alu(LSH, 1, 31), 0x8000_0000);
        assert_eq!(alu(RSH, 0x8000_0000, 31), 1);
        let neg = prog(&[i(LD_IMM, 1), i(ALU | NEG, 0), i(RET_A, 0)]);
        assert_eq!(neg.run(&[], 0), u32::MAX);
    }

    #[test]
    fn shift_by_x_of_32_or_more_is_zero() {
        for code in [LSH, RSH] {
            let p = prog(&[
                i(LDX_IMM, 32),
                i(LD_IMM, u32::MAX),
                i(ALU | code | X, 0),
                // A is 0: returning 1 + A tells 0 from a reject.
                i(ALU | ADD | K, 1),
                i(RET_A, 0),
            ]);
            assert_eq!(p.run(&[], 0), 1);
        }
    }

    #[test]
    fn division_by_x_zero_rejects() {
        for code in [DIV, MOD] {
            let p = prog(&[
                i(LDX_IMM, 0),
                i(LD_IMM, 7),
                i(ALU | code | X, 0),
                i(RET_K, 1),
            ]);
            assert_eq!(p.run(&[], 0), 0);
        }
    }

    #[test]
    fn jumps_take_the_right_branch() {
        // A = 5; the test decides between `ret 1` (jt) and `ret 2` (jf).
        let test = |code: u16, k: u32| {
            prog(&[
                i(LD_IMM, 5),
                Insn::new(JMP | code | K, 0, 1, k),
                i(RET_K, 1),
                i(RET_K, 2),
            ])
            .run(&[], 0)
        };
        assert_eq!(test(JEQ, 5), 1);
        assert_eq!(test(JEQ, 4), 2);
        assert_eq!(test(JGT, 4), 1);
        assert_eq!(test(JGT, 5), 2);
        assert_eq!(test(JGE, 5), 1);
        assert_eq!(test(JGE, 6), 2);
        assert_eq!(test(JSET, 4), 1);
        assert_eq!(test(JSET, 2), 2);
        // Against X.
        let p = prog(&[
            i(LDX_IMM, 5),
            i(LD_IMM, 5),
            Insn::new(JMP | JEQ | X, 1, 0, 0),
            i(RET_K, 2),
            i(RET_K, 1),
        ]);
        assert_eq!(p.run(&[], 0), 1);
        let ja = prog(&[i(JMP | JA, 1), i(RET_K, 1), i(RET_K, 3)]);
        assert_eq!(ja.run(&[], 0), 3);
    }

    #[test]
    fn bad_programs_are_refused() {
        let e = |insns: &[Insn]| Program::new(insns.to_vec()).unwrap_err();
        assert_eq!(e(&[]), ProgramError::Empty);
        assert_eq!(
            e(&vec![i(RET_K, 0); MAX_INSNS + 1]),
            ProgramError::TooLong(MAX_INSNS + 1)
        );
        assert_eq!(e(&[i(LD_IMM, 0)]), ProgramError::NoReturn);
        assert_eq!(
            e(&[i(0xff, 0), i(RET_K, 0)]),
            ProgramError::UnknownOpcode { at: 0, code: 0xff }
        );
        assert_eq!(
            e(&[i(0x0e, 0), i(RET_K, 0)]),
            ProgramError::UnknownOpcode { at: 0, code: 0x0e }
        );
        assert_eq!(
            e(&[i(LD_MEM, 16), i(RET_K, 0)]),
            ProgramError::Memory { at: 0, k: 16 }
        );
        assert_eq!(
            e(&[i(ST, 99), i(RET_K, 0)]),
            ProgramError::Memory { at: 0, k: 99 }
        );
        assert_eq!(
            e(&[i(ALU | DIV | K, 0), i(RET_K, 0)]),
            ProgramError::DivideByZero { at: 0 }
        );
        assert_eq!(
            e(&[i(ALU | MOD | K, 0), i(RET_K, 0)]),
            ProgramError::DivideByZero { at: 0 }
        );
        assert_eq!(
            e(&[i(ALU | LSH | K, 32), i(RET_K, 0)]),
            ProgramError::Shift { at: 0, k: 32 }
        );
        assert_eq!(
            e(&[i(JMP | JA, 1), i(RET_K, 0)]),
            ProgramError::Jump { at: 0 }
        );
        assert_eq!(
            e(&[Insn::new(JMP | JEQ, 0, 1, 0), i(RET_K, 0)]),
            ProgramError::Jump { at: 0 }
        );
        assert_eq!(
            e(&[Insn::new(JMP | JGT, 1, 0, 0), i(RET_K, 0)]),
            ProgramError::Jump { at: 0 }
        );
        // NEG takes no source; RET X does not exist.
        assert_eq!(
            e(&[i(ALU | NEG | X, 0), i(RET_K, 0)]),
            ProgramError::UnknownOpcode {
                at: 0,
                code: ALU | NEG | X
            }
        );
        assert_eq!(
            e(&[i(0x0e, 0)]),
            ProgramError::UnknownOpcode { at: 0, code: 0x0e }
        );
    }

    /// Random instruction streams: whatever passes the checks runs to an
    /// end without panicking, on any packet.
    #[test]
    fn random_programs_never_panic() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        // Mostly opcodes that exist, some that do not; a return last, mostly.
        let mut codes: Vec<u16> = vec![
            LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_W_IND, LD_H_IND, LD_B_IND, LD_W_LEN, LD_IMM, LD_MEM,
            LDX_IMM, LDX_MEM, LDX_W_LEN, LDX_B_MSH, ST, STX, RET_K, RET_A, TAX, TXA,
        ];
        for operation in [ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR] {
            codes.extend([ALU | operation | K, ALU | operation | X]);
        }
        for test in [JA, JEQ, JGT, JGE, JSET] {
            codes.extend([JMP | test | K, JMP | test | X]);
        }
        let mut accepted = 0;
        for _ in 0..20_000 {
            let n = (next() % 12 + 1) as usize;
            let insns: Vec<Insn> = (0..n)
                .map(|at| {
                    let r = next();
                    let code = match r % 16 {
                        _ if at == n - 1 && r % 8 != 0 => [RET_K, RET_A][(r >> 3) as usize % 2],
                        0 => (r >> 48) as u16,
                        _ => codes[(r >> 4) as usize % codes.len()],
                    };
                    Insn::new(
                        code,
                        (r >> 8) as u8 % 4,
                        (r >> 16) as u8 % 4,
                        match (r >> 24) % 4 {
                            0 => (r >> 32) as u32 % 16,
                            1 => (r >> 32) as u32 % 64,
                            2 => u32::MAX - (r >> 40) as u32 % 8,
                            _ => (r >> 32) as u32,
                        },
                    )
                })
                .collect();
            if let Ok(p) = Program::new(insns) {
                accepted += 1;
                let data: Vec<u8> = (0..next() % 80).map(|_| next() as u8).collect();
                p.run(&data, next() as u32);
            }
        }
        assert!(accepted > 1000, "only {accepted} random programs passed");
    }
}
