//! Call sites. A socket's user stack is named by a hash of its frame-pointer chain: a chain
//! seen before in the process maps to its stack id through STACK_CACHE (a few user reads and a
//! lookup); only a new one pays for the kernel's full capture into STACKS, and userspace hears
//! of it (NewStack) to symbolize it while the process is alive.
//!
//! A process whose code has no frame pointers gets its stack walked in the kernel with the
//! binaries' compiled CFI (`stack_mode::TABLES`, see `unwind`), or a copy of the top of its
//! user stack (`stack_mode::STACK_COPY`, and what the tables cannot walk), which userspace
//! unwinds with DWARF CFI: a chain of garbage frame pointers would name (and merge) call sites
//! wrongly.
//!
//! Interpreted code (see `runtime`): a CPython process's Python frames are walked instead of
//! its native stack (`python`), and the frame-pointer walk of a JVM also records the `Method*`
//! of each interpreted frame it passes (`hotspot`). The hooks are marked `RUNTIME FRAMES`.

use aya_ebpf::{
    EbpfContext, bindings::BPF_F_USER_STACK, helpers::bpf_probe_read_user,
    programs::tracing::StackIdContext,
};
use sockleak_common::{
    counters::LossCause,
    event::{EventKind, Syscall},
    socket::{NO_STACK, REC_SAMPLED, SAMPLED_OUT, SocketRecord, StackKey},
    stack::{COPY_ID_BASE, STACK_COPY_MAX, StackCopy},
    target::{flag, stack_mode},
};

use crate::{
    args::{Regs, WalkStart},
    emit::{Header, send},
    filter::{StackHow, Task},
    hotspot::JvmWalk,
    maps::{
        LAST_STACK, STACK_CACHE, STACK_COPIES, STACKS, capture_stacks, count_loss,
        stack_copy_bytes, stack_sample, tick,
    },
};

/// Frames hashed at most (the stack map keeps as many).
const MAX_FRAMES: usize = 64;
/// Bytes of user stack read at once: one read usually covers the leaf's caller and the first
/// frames, so most chains cost one or two reads.
pub const WINDOW_WORDS: usize = 64;
/// A frame larger than this ends the walk: the "frame pointer" is some other value.
const MAX_FRAME_BYTES: u64 = 1 << 20;

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
pub fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(FNV_PRIME)
}

#[inline(always)]
fn read_window(buf: &mut [u64; WINDOW_WORDS], at: u64) -> bool {
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            buf.as_mut_ptr().cast(),
            (WINDOW_WORDS * 8) as u32,
            at as *const core::ffi::c_void,
        ) == 0
    }
}

/// Per-CPU scratch for stack windows (too big for the 512-byte BPF stack).
#[aya_ebpf::macros::map]
static WINDOW: aya_ebpf::maps::PerCpuArray<[u64; WINDOW_WORDS]> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

/// State of a frame-pointer walk (a bpf_loop context: the verifier checks one step, not 64).
#[repr(C)]
struct Walk {
    hash: u64,
    sp: u64,
    fp: u64,
    /// Start of the window in WINDOW; `have`: it holds user memory from there.
    base: u64,
    have: u64,
    /// RUNTIME FRAMES: a JVM's interpreter and code cache (`jvm.on` 0: not a JVM).
    jvm: JvmWalk,
}

/// The hash of the syscall's ip, the leaf caller and every return address on the
/// frame-pointer chain (with, in a JVM, each interpreted frame's method and bytecode index,
/// recorded in RT_SCRATCH). Deterministic for a call path in a process (return addresses, not
/// stack positions). One read of the stack from `sp` gives the caller (x86_64) and usually the
/// first frames. The caller and the number of interpreted frames go to WALKED.
///
/// A global function: the kernel verifies it once, on its own, rather than on every path of
/// every program that takes a stack. `who`: `StackHow::pack`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sockleak_fp_walk(ip: u64, sp: u64, fp: u64, lr: u64, who: u64) -> u64 {
    let (tgid, how) = StackHow::unpack(who);
    let start = WalkStart { ip, sp, fp, lr };
    let mut have = 0;
    let mut top = 0;
    if let Some(buf) = WINDOW.get_ptr_mut(0) {
        let buf = unsafe { &mut *buf };
        have = read_window(buf, sp) as u64;
        top = buf[0];
    }
    // Every argument is used on every architecture: one the compiler sees unused is left
    // unset by callers, which the verifier refuses for a global function.
    let caller = if lr != 0 {
        lr
    } else if have != 0 {
        top
    } else {
        start.caller()
    };
    // The walk's state lives in a per-CPU map, not on this function's stack: kernels before
    // 6.x add a global function's stack to its callers' when checking the 512-byte limit, and
    // a program's frame plus this one's would pass it (6.1: "combined stack size ... Too large").
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 0;
    };
    let w = unsafe { &mut *w };
    w.hash = mix(mix(FNV_OFFSET, ip), caller);
    w.sp = sp;
    w.fp = fp;
    w.base = sp;
    w.have = have;
    JvmWalk::set(&mut w.jvm, tgid, how);
    w.jvm.start(&mut w.hash, caller);
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_FRAMES as u32,
            walk_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 0;
    };
    let w = unsafe { &*w };
    if let Some(out) = WALKED.get_ptr_mut(0) {
        unsafe {
            (*out).caller = caller;
            (*out).runtime_frames = u64::from(w.jvm.found());
        }
    }
    w.hash
}

/// Per-CPU: the frame-pointer walk in progress (`sockleak_fp_walk`, `walk_step`).
#[aya_ebpf::macros::map]
static WALK: aya_ebpf::maps::PerCpuArray<Walk> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

/// What a walk found besides its hash (a global function returns one value).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Walked {
    pub caller: u64,
    /// RUNTIME FRAMES: interpreted Java frames recorded in RT_SCRATCH.
    pub runtime_frames: u64,
}

/// Per-CPU: the last walk's `Walked`.
#[aya_ebpf::macros::map]
pub static WALKED: aya_ebpf::maps::PerCpuArray<Walked> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

/// The last walk's `Walked` (zero if unreadable).
#[inline(always)]
pub fn walked() -> Walked {
    WALKED.get(0).copied().unwrap_or(Walked {
        caller: 0,
        runtime_frames: 0,
    })
}

/// One frame: hash its return address and move to the caller's frame. Returns 1 to stop.
unsafe extern "C" fn walk_step(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    let w = unsafe { &mut *w };
    let Some(buf) = WINDOW.get_ptr_mut(0) else {
        return 1;
    };
    let buf = unsafe { &mut *buf };
    let fp = w.fp;
    if fp <= w.sp || fp & 7 != 0 {
        return 1;
    }
    let mut off = fp.wrapping_sub(w.base);
    if w.have == 0 || off > ((WINDOW_WORDS - 2) * 8) as u64 {
        w.base = fp;
        w.have = read_window(buf, fp) as u64;
        if w.have == 0 {
            // Near the end of the mapping: read just this frame's two words.
            match unsafe { bpf_probe_read_user(fp as *const [u64; 2]) } {
                Ok(v) => {
                    buf[0] = v[0];
                    buf[1] = v[1];
                }
                Err(_) => return 1,
            }
        }
        off = 0;
    }
    let i = ((off / 8) as usize) & (WINDOW_WORDS - 1);
    if i + 1 >= WINDOW_WORDS {
        return 1;
    }
    let next = buf[i];
    let ra = buf[i + 1];
    w.hash = mix(w.hash, ra);
    if next <= fp || next - fp > MAX_FRAME_BYTES {
        return 1;
    }
    // RUNTIME FRAMES: `ra` returns into the frame at `next`: interpreted Java code (its method
    // joins the hash), or compiled Java code whose frame pointer cannot be trusted (stop).
    if w.jvm.on != 0 && w.jvm.step(&mut w.hash, buf, w.base, w.have, next, ra) {
        return 1;
    }
    // After the two-word fallback `have` stays 0: the next frame needs its own read.
    w.fp = next;
    0
}

/// Copies the registers and the top of the user stack for userspace to unwind; the copy id
/// the socket carries, or NO_STACK when the copy ring is full. A subprogram: runtime stacks
/// call it too.
#[inline(never)]
pub fn copy_stack(regs: &Regs, task: Task) -> i32 {
    // Unique without atomics (the BPF target has no fetch-add): this CPU's count, tagged with
    // the CPU. An id comes back after 4M copies on one CPU.
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() };
    let seq = ((cpu & 0xff) << 22) | (tick(2) & 0x3f_ffff);
    let id = COPY_ID_BASE | seq as i32;
    let Some(mut entry) = STACK_COPIES.reserve::<StackCopy>(0) else {
        // UNWIND TABLES: a copy that cannot be made leaves no stop behind for the next one.
        crate::unwind::take_stop_into(core::ptr::null_mut());
        count_loss(LossCause::StackLost);
        return NO_STACK;
    };
    let c = entry.as_mut_ptr();
    // UNWIND TABLES: where a kernel walk stopped short, when this copy stands in for it.
    crate::unwind::take_stop_into(c);
    let sp = regs.sp();
    unsafe {
        (*c).tgid = task.tgid;
        (*c).tid = task.tid;
        (*c).id = id;
        (*c).ip = regs.ip();
        (*c).sp = sp;
        (*c).fp = regs.fp();
        (*c).lr = regs.caller_in_register().unwrap_or(0);
        (*c).len = 0;
    }
    // A read crossing the end of the stack mapping fails as a whole: fill greedily with
    // halving chunks, so the copy reaches to within 128 bytes of the end.
    let mut want = stack_copy_bytes() as usize;
    if want == 0 || want > STACK_COPY_MAX {
        want = STACK_COPY_MAX;
    }
    let data = unsafe { (*c).data.as_mut_ptr() };
    let mut len = 0usize;
    for chunk in COPY_CHUNKS {
        if len + chunk > want || len > STACK_COPY_MAX - chunk {
            continue;
        }
        let ok = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                data.add(len).cast(),
                chunk as u32,
                (sp + len as u64) as *const core::ffi::c_void,
            )
        } == 0;
        if ok {
            len += chunk;
        }
    }
    unsafe { (*c).len = len as u32 };
    // No wakeup: userspace drains copies on a timer and before every event batch.
    entry.submit(BPF_RB_NO_WAKEUP);
    id
}

const BPF_RB_NO_WAKEUP: u64 = 1;

/// Copy sizes tried in turn (each read is all or nothing).
const COPY_CHUNKS: [usize; 8] = [16384, 8192, 4096, 2048, 1024, 512, 256, 128];

/// Captures the user call site into `rec`: stack id (or NO_STACK) and the leaf caller.
#[inline(always)]
pub fn capture<C: EbpfContext + StackIdContext>(
    ctx: &C,
    regs: &Regs,
    task: Task,
    how: StackHow,
    rec: &mut SocketRecord,
) {
    if !capture_stacks() {
        rec.stack_id = NO_STACK;
        return;
    }
    let sample = stack_sample();
    // Sampling: skip the walk, take the latest walked stack with the same leaf caller.
    if sample > 1 && tick(0) % sample != 1 {
        rec.caller = regs.caller();
        rec.flags |= REC_SAMPLED;
        let last = StackKey {
            hash: rec.caller,
            tgid: task.tgid,
            _pad: 0,
        };
        rec.stack_id = match unsafe { LAST_STACK.get(last) } {
            Some(id) => *id,
            None => SAMPLED_OUT,
        };
        return;
    }
    let (stack_id, caller) = site(ctx, regs, task, how);
    rec.stack_id = stack_id;
    rec.caller = caller;
    remember_sampled(sample, task, rec);
}

/// The user stack at this point, always walked (never sampled: an origin probe's leaf caller
/// is the same runtime function for every caller, so a sampled stack would name the wrong
/// one): (stack id or NO_STACK, leaf caller). A new stack is announced (NewStack).
#[inline(always)]
pub fn site<C: EbpfContext + StackIdContext>(
    ctx: &C,
    regs: &Regs,
    task: Task,
    how: StackHow,
) -> (i32, u64) {
    if !capture_stacks() {
        return (NO_STACK, 0);
    }
    let start = regs.walk_start();
    // RUNTIME FRAMES: CPython's own frame chain, which needs no native stack per socket.
    if how.flags & flag::PYTHON != 0 {
        let hash =
            crate::python::sockleak_py_walk(start.ip, start.sp, start.lr, how.pack(task.tgid));
        if hash != 0 {
            let caller = walked().caller;
            return (
                crate::runtime::stack_id(ctx, regs, task, how, hash, caller),
                caller,
            );
        }
    }
    // UNWIND TABLES: walked in the kernel with the binaries' CFI (unwind.rs); what the tables
    // cannot walk is copied below, the copy saying where the walk stopped.
    if how.mode == stack_mode::TABLES
        && let Some(site) = crate::unwind::capture(regs, task)
    {
        return site;
    }
    if how.mode == stack_mode::STACK_COPY || how.mode == stack_mode::TABLES {
        let caller = match regs.caller_in_register() {
            Some(c) => c,
            None => regs.caller(),
        };
        return (copy_stack(regs, task), caller);
    }
    let hash = sockleak_fp_walk(start.ip, start.sp, start.fp, start.lr, how.pack(task.tgid));
    let walked = walked();
    let caller = walked.caller;
    // RUNTIME FRAMES: interpreted Java frames give the stack an id of its own.
    if walked.runtime_frames > 0 {
        return (
            crate::runtime::stack_id(ctx, regs, task, how, hash, caller),
            caller,
        );
    }
    let key = StackKey {
        hash,
        tgid: task.tgid,
        _pad: 0,
    };
    let id = match unsafe { STACK_CACHE.get(key) } {
        Some(id) => *id,
        None => match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
            Ok(id) => {
                let id = id as i32;
                let _ = STACK_CACHE.insert(key, id, 0);
                let mut r = SocketRecord::EMPTY;
                r.stack_id = id;
                r.caller = caller;
                r.tid = task.tid;
                let h = Header {
                    kind: EventKind::NewStack,
                    syscall: Syscall::None,
                    fd: -1,
                    arg: 0,
                };
                send(ctx, task, h, &r);
                id
            }
            Err(_) => {
                count_loss(LossCause::StackLost);
                NO_STACK
            }
        },
    };
    (id, caller)
}

/// With sampling, the latest walked stack per leaf caller stands in for the skipped ones.
#[inline(always)]
fn remember_sampled(sample: u32, task: Task, rec: &SocketRecord) {
    if sample > 1 && rec.stack_id >= 0 {
        let last = StackKey {
            hash: rec.caller,
            tgid: task.tgid,
            _pad: 0,
        };
        let _ = LAST_STACK.insert(last, rec.stack_id, 0);
    }
}
