//! Runtime frames (see `sockleak_common::runtime`): what CPython's walk (`python`) and
//! HotSpot's (`hotspot`) share. A walk fills the per-CPU RT_SCRATCH record and a hash of its
//! frames; a hash seen before in the process maps to its stack id through STACK_CACHE, and only
//! a new one captures the native stack and sends the record to userspace.

use aya_ebpf::{EbpfContext, bindings::BPF_F_USER_STACK, programs::tracing::StackIdContext};
use sockleak_common::{
    counters::LossCause,
    runtime::{RT_ID_BASE, RT_MAX_FRAMES, RtFrame, RtStack, stack_flag},
    socket::{NO_STACK, StackKey},
    target::stack_mode,
};

use crate::{
    args::Regs,
    filter::{StackHow, Task},
    maps::{RT_SCRATCH, RT_STACKS, STACK_CACHE, STACKS, count_loss, tick},
    stack::copy_stack,
};

/// RUNTIME FRAMES of a process are no longer walked: its image was replaced (exec) or it exited.
/// Its layouts go (the exec generation check would ignore them anyway).
#[inline(always)]
pub fn forget(tgid: u32, flags: u8) {
    if flags & sockleak_common::target::flag::PYTHON != 0 {
        let _ = crate::maps::PY_PROCS.remove(tgid);
    }
    if flags & sockleak_common::target::flag::HOTSPOT != 0 {
        let _ = crate::maps::JVM_PROCS.remove(tgid);
    }
}

/// The per-CPU record being filled.
#[inline(always)]
pub fn scratch() -> Option<&'static mut RtStack> {
    RT_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Starts a walk of `kind` frames in the scratch record.
#[inline(always)]
pub fn begin(kind: u8, generation: u32, exec_gen: u8) -> bool {
    match scratch() {
        Some(s) => {
            s.kind = kind;
            s.n = 0;
            s.flags = 0;
            s.generation = generation;
            s.exec_gen = exec_gen;
            true
        }
        None => false,
    }
}

/// A frame index the verifier sees bounded: read back through memory, so the compiler cannot
/// fold the bounds check into the address computation, then checked.
#[inline(always)]
fn frame_index(i: usize) -> Option<usize> {
    let i = unsafe { core::ptr::read_volatile(&i) };
    (i < RT_MAX_FRAMES).then_some(i)
}

/// Appends a frame; false (and the record marked truncated) when it is full.
#[inline(always)]
pub fn push(f: RtFrame) -> bool {
    let Some(s) = scratch() else { return false };
    let n = s.n as usize;
    let Some(i) = frame_index(n) else {
        s.flags |= stack_flag::TRUNCATED;
        return false;
    };
    s.frames[i] = f;
    s.n = (i + 1) as u8;
    true
}

/// Frames recorded so far.
#[inline(always)]
pub fn count() -> u8 {
    scratch().map_or(0, |s| s.n)
}

/// Sets `stack_flag` bits on the record.
#[inline(always)]
pub fn flag(bits: u8) {
    if let Some(s) = scratch() {
        s.flags |= bits;
    }
}

/// Adds `frame_flag` bits to the last frame recorded.
#[inline(always)]
pub fn mark_last(bits: u32) {
    if let Some(s) = scratch() {
        if let Some(i) = (s.n as usize).checked_sub(1).and_then(frame_index) {
            s.frames[i].flags |= bits;
        }
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BYTES_PER_FRAME: usize = core::mem::size_of::<RtFrame>();
const HEADER_BYTES: usize = core::mem::size_of::<RtStack>() - RT_MAX_FRAMES * BYTES_PER_FRAME;

/// The stack id of a walk whose frames are in the scratch record and whose hash is `hash`:
/// cached, or a new runtime stack. A new one takes the native stack as the process's stack
/// mode says (once per call path, not per socket) and goes to userspace; when the ring is full
/// nothing is cached, so the next socket on that path tries again.
#[inline(always)]
pub fn stack_id<C: EbpfContext + StackIdContext>(
    ctx: &C,
    regs: &Regs,
    task: Task,
    how: StackHow,
    hash: u64,
    caller: u64,
) -> i32 {
    let key = StackKey {
        hash,
        tgid: task.tgid,
        _pad: 0,
    };
    if let Some(id) = unsafe { STACK_CACHE.get(key) } {
        return *id;
    }
    // Tables or copies: the native part is copied, once per runtime stack.
    let native = if how.mode == stack_mode::STACK_COPY || how.mode == stack_mode::TABLES {
        copy_stack(regs, task)
    } else {
        match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
            Ok(id) => id as i32,
            Err(_) => NO_STACK,
        }
    };
    send(task, hash, native, caller)
}

/// Sends the scratch record as a new runtime stack and caches its id (a subprogram: the
/// callers' stacks are deep). The native id when the ring is full.
#[inline(never)]
fn send(task: Task, hash: u64, native: i32, caller: u64) -> i32 {
    let Some(s) = scratch() else {
        return native;
    };
    // Unique without atomics, as stack copies are: this CPU's count, tagged with the CPU.
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() };
    let id = RT_ID_BASE | (((cpu & 0x7f) << 22) | (tick(3) & 0x3f_ffff)) as i32;
    s.tgid = task.tgid;
    s.tid = task.tid;
    s.id = id;
    s.native_id = native;
    s.caller = caller;
    // Only the frames used go out.
    let mut n = s.n as usize;
    if n > RT_MAX_FRAMES {
        n = RT_MAX_FRAMES;
    }
    let len = (HEADER_BYTES + n * BYTES_PER_FRAME) as u64;
    // The helper itself (a slice from raw parts would bring a debug-build check the verifier
    // rejects): `RT_STACKS` is the map definition.
    // No wakeup: userspace drains this ring on a timer and before every event batch.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_ringbuf_output(
            (&raw const RT_STACKS).cast_mut().cast(),
            (s as *mut RtStack).cast(),
            len,
            BPF_RB_NO_WAKEUP,
        )
    };
    if ret < 0 {
        count_loss(LossCause::StackLost);
        return native;
    }
    let key = StackKey {
        hash,
        tgid: task.tgid,
        _pad: 0,
    };
    let _ = STACK_CACHE.insert(key, id, 0);
    id
}
