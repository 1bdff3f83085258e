//! CPython frames, walked from the interpreter's own structures: no interpreter flag, and no
//! native stack per socket (CPython's C code has no frame pointers; its frame chain has all a
//! call site needs).
//!
//! At the socket syscalls the GIL is released, so neither "current thread state" global is
//! set. The thread state comes from the pthread TSS slot CPython binds it to, which stays set:
//! `fsbase` (the thread's `struct pthread`) + glibc's offset of the key's slot, checked by
//! `tstate->thread_id == fsbase`; else a bounded walk of the interpreters' thread lists. Then
//! one read per frame: its code object and position (joining the hash), and whether it is the
//! outermost frame of a C-level interpreter call (for userspace to merge with native frames).
//! Offsets come from userspace per process (`PyProc`).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task, bpf_loop},
    },
    macros::map,
    maps::PerCpuArray,
};
use sockleak_common::{
    runtime::{
        PY_FRAME_OWNED_BY_CSTACK, PY_FRAME_READ_MAX, PY_TSTATE_FIELD_MAX, PyProc, RT_MAX_FRAMES,
        RtFrame, frame_flag, kind, py_layout, stack_flag,
    },
    target::flag,
};

use crate::{
    args::WalkStart,
    filter::StackHow,
    maps::{PY_PROCS, task_fsbase_offset},
    runtime,
    stack::{FNV_OFFSET, WALKED, mix},
};

const FRAME_WORDS: usize = (PY_FRAME_READ_MAX / 8) as usize;

/// Per-CPU scratch: one frame as read.
#[map]
static PY_FRAME: PerCpuArray<[u64; FRAME_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Steps of the list walk: one per interpreter and per thread state visited.
const LIST_STEPS: u32 = 256;

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The current thread's fsbase: its `struct pthread`, what `pthread_self()` returns.
#[inline(always)]
fn fsbase() -> Option<u64> {
    let off = task_fsbase_offset();
    if off == 0 {
        return None;
    }
    let task = unsafe { bpf_get_current_task() };
    unsafe { bpf_probe_read_kernel((task + u64::from(off)) as *const u64) }.ok()
}

/// The thread state bound to the current thread, and whether the list walk found it.
#[inline(always)]
fn thread_state(cfg: &PyProc, fsbase: u64) -> Option<(u64, bool)> {
    if cfg.ts_thread_id > PY_TSTATE_FIELD_MAX {
        return None;
    }
    if cfg.tss_key != 0 && cfg.tsd_first != 0 {
        let key = unsafe { bpf_probe_read_user(cfg.tss_key as *const i32) }.unwrap_or(-1);
        if key >= 0 && (key as u32) < cfg.tsd_keys {
            let slot = fsbase + u64::from(cfg.tsd_first) + key as u64 * u64::from(cfg.tsd_stride);
            if let Some(ts) = read_u64(slot)
                && ts != 0
                && read_u64(ts + u64::from(cfg.ts_thread_id)) == Some(fsbase)
            {
                return Some((ts, false));
            }
        }
    }
    let mut w = ListWalk {
        head: cfg.interp_head,
        interp_next: cfg.interp_next,
        interp_threads: cfg.interp_threads,
        ts_next: cfg.ts_next,
        ts_thread_id: cfg.ts_thread_id,
        started: 0,
        interp: 0,
        ts: 0,
        fsbase,
        found: 0,
    };
    unsafe { bpf_loop(LIST_STEPS, list_step as *mut c_void, (&raw mut w).cast(), 0) };
    (w.found != 0).then_some((w.found, true))
}

/// A walk of every interpreter's thread list for the state whose `thread_id` is ours.
#[repr(C)]
struct ListWalk {
    head: u64,
    interp_next: u32,
    interp_threads: u32,
    ts_next: u32,
    ts_thread_id: u32,
    /// 0 before the first interpreter (a flag, not a count: the verifier would walk each count).
    started: u32,
    interp: u64,
    ts: u64,
    fsbase: u64,
    found: u64,
}

unsafe extern "C" fn list_step(_i: u64, ctx: *mut c_void) -> i64 {
    let w = unsafe { &mut *(ctx as *mut ListWalk) };
    if w.ts == 0 {
        let next = if w.started == 0 {
            read_u64(w.head)
        } else {
            read_u64(w.interp + u64::from(w.interp_next))
        };
        w.started = 1;
        w.interp = next.unwrap_or(0);
        if w.interp == 0 {
            return 1;
        }
        w.ts = read_u64(w.interp + u64::from(w.interp_threads)).unwrap_or(0);
        return 0;
    }
    if read_u64(w.ts + u64::from(w.ts_thread_id)) == Some(w.fsbase) {
        w.found = w.ts;
        return 1;
    }
    w.ts = read_u64(w.ts + u64::from(w.ts_next)).unwrap_or(0);
    0
}

/// The innermost frame of a thread state.
#[inline(always)]
fn first_frame(cfg: &PyProc, tstate: u64) -> Option<u64> {
    if cfg.ts_frame > PY_TSTATE_FIELD_MAX {
        return None;
    }
    let p = read_u64(tstate + u64::from(cfg.ts_frame))?;
    match cfg.layout {
        // Through the C frame (`tstate->cframe->current_frame`).
        py_layout::IS_ENTRY | py_layout::CFRAME_SHIMS if p != 0 => {
            read_u64(p + u64::from(cfg.cframe_frame))
        }
        _ => Some(p),
    }
}

/// Per-CPU: the frame walk in progress. In a map, not on the stack: kernels before 6.13 add a
/// global function's frame to its callers' against the 512-byte limit.
#[aya_ebpf::macros::map]
static PY_WALK: aya_ebpf::maps::PerCpuArray<PyWalk> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

/// State of a frame walk (`py_step`'s).
#[repr(C)]
struct PyWalk {
    frame: u64,
    hash: u64,
    f_back: u32,
    f_code: u32,
    f_pos: u32,
    f_mark: u32,
    f_size: u32,
    layout: u8,
    _pad: [u8; 3],
}

#[inline(always)]
fn word(buf: &[u64; FRAME_WORDS], off: u32) -> u64 {
    buf[((off / 8) as usize) & (FRAME_WORDS - 1)]
}

/// One frame: record it and move to the one that called it. Returns 1 to stop.
unsafe extern "C" fn py_step(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return 1;
    };
    let w = unsafe { &mut *w };
    let f = w.frame;
    if f == 0 {
        return 1;
    }
    let Some(buf) = PY_FRAME.get_ptr_mut(0) else {
        return 1;
    };
    let buf = unsafe { &mut *buf };
    let size = w.f_size;
    if size == 0 || size > PY_FRAME_READ_MAX {
        return 1;
    }
    let ok = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            buf.as_mut_ptr().cast(),
            size,
            f as *const c_void,
        )
    } == 0;
    if !ok {
        runtime::flag(stack_flag::READ_FAILED);
        return 1;
    }
    let code = word(buf, w.f_code);
    let back = word(buf, w.f_back);
    let mut pos = word(buf, w.f_pos);
    let mark = (word(buf, w.f_mark) >> ((w.f_mark % 8) * 8)) as u8;
    let mut flags = 0;
    match w.layout {
        py_layout::FRAME_OBJECTS => {
            // f_lasti, an int.
            pos = pos as u32 as i32 as i64 as u64;
            flags = frame_flag::ENTRY;
        }
        py_layout::IS_ENTRY => {
            if mark != 0 {
                flags = frame_flag::ENTRY;
            }
        }
        _ => {
            // A shim frame ends the frames of one interpreter call: the one before was its
            // outermost.
            if mark == PY_FRAME_OWNED_BY_CSTACK {
                runtime::mark_last(frame_flag::ENTRY);
                w.frame = back;
                return 0;
            }
        }
    }
    let frame = RtFrame {
        ptr: code,
        at: pos,
        cookie: 0,
        off: 0,
        flags,
    };
    if !runtime::push(frame) {
        return 1;
    }
    w.hash = mix(mix(w.hash, code), pos);
    w.frame = back;
    0
}

/// Walks the current thread's Python frames into the scratch record (the leaf caller into
/// `stack::WALKED`) when the process is a CPython whose layout userspace found: the walk's hash,
/// or 0 when there is no Python frame to walk (not CPython, a thread without a thread state, a
/// layout for an image since replaced): the native paths decide.
///
/// A global function: verified once, on its own (see `stack::sockleak_fp_walk`). `who`:
/// `StackHow::pack`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sockleak_py_walk(ip: u64, sp: u64, lr: u64, who: u64) -> u64 {
    let (tgid, how) = StackHow::unpack(who);
    try_walk(WalkStart { ip, sp, fp: 0, lr }, tgid, how).unwrap_or(0)
}

#[inline(always)]
fn try_walk(start: WalkStart, tgid: u32, how: StackHow) -> Option<u64> {
    if how.flags & flag::PYTHON == 0 {
        return None;
    }
    let cfg = unsafe { PY_PROCS.get(tgid) }?;
    if cfg.exec_gen != how.exec_gen {
        return None;
    }
    let fs = fsbase()?;
    let (tstate, from_list) = thread_state(cfg, fs)?;
    let first = first_frame(cfg, tstate)?;
    if first == 0 || !runtime::begin(kind::PYTHON, 0, how.exec_gen) {
        return None;
    }
    if from_list {
        runtime::flag(stack_flag::FROM_LIST);
    }
    let caller = start.caller();
    let w = unsafe { &mut *PY_WALK.get_ptr_mut(0)? };
    w.frame = first;
    w.hash = mix(
        mix(mix(FNV_OFFSET, start.ip), caller),
        u64::from(kind::PYTHON),
    );
    w.f_back = cfg.f_back;
    w.f_code = cfg.f_code;
    w.f_pos = cfg.f_pos;
    w.f_mark = cfg.f_mark;
    w.f_size = cfg.f_size;
    w.layout = cfg.layout;
    // Shim frames take steps without adding one: room for one per frame.
    unsafe {
        bpf_loop(
            2 * RT_MAX_FRAMES as u32,
            py_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let w = unsafe { &*PY_WALK.get_ptr_mut(0)? };
    if runtime::count() == 0 {
        return None;
    }
    // Frames left when the record filled up.
    if w.frame != 0 && runtime::count() as usize >= RT_MAX_FRAMES {
        runtime::flag(stack_flag::TRUNCATED);
    }
    if let Some(out) = WALKED.get_ptr_mut(0) {
        unsafe { (*out).caller = caller };
    }
    // 0 means "none" to the caller.
    Some(w.hash | 1)
}
