//! The stack a program's deepest call chain needs, as kernels before 6.13 count it: each BPF
//! function's own frame (the furthest below r10 its code reaches), rounded up to 32 bytes, summed
//! along every chain of bpf-to-bpf calls and callbacks, global functions included. Over 512
//! bytes such a kernel refuses the program ("combined stack size of N calls is M. Too large")
//! while a newer one, which verifies global functions on their own, loads it: only a check of
//! the object catches that before a VM run does.

use aya_obj::generated::{
    BPF_ADD, BPF_ALU64, BPF_CALL, BPF_DW, BPF_IMM, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_MOV,
    BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_ST, BPF_STX, BPF_X, bpf_insn,
};

/// The kernel's limit for a call chain (MAX_BPF_STACK).
pub const LIMIT: u32 = 512;

/// Frames are counted in multiples of this (older kernels; newer ones round to 16 or less).
const ROUND: u32 = 32;

const FP: u8 = 10;

/// One program's deepest chain: the frames along it (function start, own depth) and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub frames: Vec<(usize, u32)>,
    pub bytes: u32,
}

/// The furthest below the frame pointer that straight-line code reaches: loads and stores off
/// r10, and pointers made from it (`rX = r10; rX += -N`, passed to helpers).
pub fn frame_depth(insns: &[bpf_insn]) -> u32 {
    // Per register: its offset from r10 when it holds a pointer into the frame.
    let mut at: [Option<i64>; 11] = [None; 11];
    let mut depth = 0i64;
    let mut below = |off: i64| depth = depth.max(-off);
    let mut skip = false;
    for insn in insns {
        if std::mem::take(&mut skip) {
            continue;
        }
        let (code, dst, src) = (u32::from(insn.code), insn.dst_reg(), insn.src_reg());
        let off = i64::from(insn.off);
        let base = |r: u8| {
            if r == FP {
                Some(0)
            } else {
                at.get(r as usize).copied().flatten()
            }
        };
        match code & 0x07 {
            c if c == BPF_LDX => {
                if let Some(o) = base(src) {
                    below(o + off);
                }
                set(&mut at, dst, None);
            }
            c if c == BPF_ST || c == BPF_STX => {
                if let Some(o) = base(dst) {
                    below(o + off);
                }
            }
            c if c == BPF_ALU64 => {
                let op = code & 0xf0;
                let value = if op == BPF_MOV && code & 0x08 == BPF_X {
                    base(src)
                } else if op == BPF_ADD && code & 0x08 == BPF_K {
                    base(dst).map(|o| o + i64::from(insn.imm))
                } else {
                    None
                };
                if let Some(o) = value {
                    below(o);
                }
                set(&mut at, dst, value);
            }
            c if c == BPF_LD => {
                set(&mut at, dst, None);
                // A 64-bit immediate takes two instructions.
                skip = code == BPF_LD | BPF_IMM | BPF_DW;
            }
            _ => {
                if code == BPF_JMP | BPF_CALL {
                    // Calls clobber r0-r5.
                    for r in at.iter_mut().take(6) {
                        *r = None;
                    }
                } else if code & 0x07 != BPF_JMP {
                    set(&mut at, dst, None);
                }
            }
        }
    }
    depth.clamp(0, i64::from(u32::MAX)) as u32
}

fn set(at: &mut [Option<i64>; 11], r: u8, v: Option<i64>) {
    if let Some(slot) = at.get_mut(r as usize) {
        *slot = v;
    }
}

/// The deepest chain of a linked program: `insns` is the program with every function it calls
/// appended, `starts` where each function begins (the first is the program itself).
pub fn deepest(insns: &[bpf_insn], starts: &[usize]) -> Chain {
    let mut starts: Vec<usize> = starts.to_vec();
    starts.sort_unstable();
    starts.dedup();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let end = |i: usize| starts.get(i + 1).copied().unwrap_or(insns.len());
    let of = |at: usize| starts.partition_point(|s| *s <= at).saturating_sub(1);
    let n = starts.len();
    let depth: Vec<u32> = (0..n)
        .map(|i| frame_depth(&insns[starts[i].min(insns.len())..end(i).min(insns.len())]))
        .collect();
    let calls: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut to = Vec::new();
            let range = starts[i].min(insns.len())..end(i).min(insns.len());
            for (at, insn) in insns[range.clone()].iter().enumerate() {
                let at = at + range.start;
                let code = u32::from(insn.code);
                let src = u32::from(insn.src_reg());
                let call = code == BPF_JMP | BPF_CALL && src == BPF_PSEUDO_CALL;
                let func = code == BPF_LD | BPF_IMM | BPF_DW && src == BPF_PSEUDO_FUNC;
                if call || func {
                    let target = at as i64 + i64::from(insn.imm) + 1;
                    if let Ok(t) = usize::try_from(target) {
                        to.push(of(t));
                    }
                }
            }
            to
        })
        .collect();
    // Deepest from each function (calls form a DAG: the verifier refuses recursion).
    let mut memo: Vec<Option<(u32, Vec<usize>)>> = vec![None; n];
    fn walk(
        i: usize,
        depth: &[u32],
        calls: &[Vec<usize>],
        memo: &mut Vec<Option<(u32, Vec<usize>)>>,
        on_path: &mut Vec<bool>,
    ) -> (u32, Vec<usize>) {
        if let Some(m) = &memo[i] {
            return m.clone();
        }
        on_path[i] = true;
        let own = depth[i].max(1).div_ceil(ROUND) * ROUND;
        let mut best = (0, Vec::new());
        for &c in &calls[i] {
            if on_path[c] {
                continue;
            }
            let sub = walk(c, depth, calls, memo, on_path);
            if sub.0 > best.0 {
                best = sub;
            }
        }
        on_path[i] = false;
        let mut path = vec![i];
        path.extend(best.1);
        let r = (own + best.0, path);
        memo[i] = Some(r.clone());
        r
    }
    let (bytes, path) = walk(0, &depth, &calls, &mut memo, &mut vec![false; n]);
    Chain {
        frames: path.iter().map(|&i| (starts[i], depth[i])).collect(),
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
        // SAFETY: bpf_insn is plain data; all zeroes is a valid value.
        let mut i: bpf_insn = unsafe { std::mem::zeroed() };
        i.code = code as u8;
        i.off = off;
        i.imm = imm;
        i.set_dst_reg(dst);
        i.set_src_reg(src);
        i
    }
    fn store(off: i16) -> bpf_insn {
        insn(BPF_STX | BPF_DW | 0x60, FP, 1, off, 0)
    }
    fn call_rel(imm: i32) -> bpf_insn {
        insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL as u8, 0, imm)
    }
    fn exit() -> bpf_insn {
        insn(BPF_JMP | 0x90, 0, 0, 0, 0)
    }

    #[test]
    fn frame_depth_follows_stores_loads_and_pointers_made_from_r10() {
        assert_eq!(frame_depth(&[store(-8), exit()]), 8);
        let ptr = [
            insn(BPF_ALU64 | BPF_MOV | BPF_X, 2, FP, 0, 0),
            insn(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -40),
            insn(BPF_LDX | BPF_DW | 0x60, 3, 2, -16, 0),
            exit(),
        ];
        assert_eq!(frame_depth(&ptr), 56);
        // A call clobbers r2: a later add is not a frame pointer.
        let clobbered = [
            insn(BPF_ALU64 | BPF_MOV | BPF_X, 2, FP, 0, 0),
            insn(BPF_JMP | BPF_CALL, 0, 0, 0, 1),
            insn(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -400),
            exit(),
        ];
        assert_eq!(frame_depth(&clobbered), 0);
    }

    #[test]
    fn chains_add_rounded_frames_and_pick_the_deepest() {
        // main (8 bytes) calls f (224) at 2 and g (40) at 5; f calls h (280).
        let prog = [
            store(-8),
            call_rel(1), // -> 3 (f)
            exit(),
            store(-224), // f
            call_rel(2), // -> 7 (h)
            exit(),
            store(-40),  // g, never called
            store(-280), // h
            exit(),
        ];
        let c = deepest(&prog, &[0, 3, 6, 7]);
        assert_eq!(c.bytes, 32 + 224 + 288);
        assert_eq!(c.frames, vec![(0, 8), (3, 224), (7, 280)]);
        assert!(c.bytes > LIMIT);
    }
}
