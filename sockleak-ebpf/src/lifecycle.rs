//! Process lifecycle: fork (children inherit fds), exec (close-on-exec fds vanish), exit (the
//! sockets held at exit are handed to userspace, then forgotten).

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::debug;
use sockleak_common::{
    event::EventKind,
    socket::{SockKey, SocketRecord},
    target::{Target, state},
};

use crate::{
    args::{ctx_u8_at, ctx_u32, ctx_u64},
    emit::{Header, send, send_full, submit},
    fdtable::FdTable,
    filter::{Task, current, gate, is_traced, mark, maybe_inside_now, traced, unmark},
    maps::{LIVE, TARGETS, exit_group_dead_offset},
};

/// `task:task_newtask` fields (checked against the kernel's format file before attaching). It
/// fires in the parent, before the child runs, so the child is a target from its first syscall.
const NEWTASK_PID: usize = sockleak_common::tracepoint::task_newtask::PID;
const NEWTASK_CLONE_FLAGS: usize = sockleak_common::tracepoint::task_newtask::CLONE_FLAGS;
const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        newtask_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn newtask_traced(ctx: TracePointContext) {
    let _ = try_newtask(&ctx);
}

fn try_newtask(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let parent = traced(task.tgid)?;
    if ctx_u64(ctx, NEWTASK_CLONE_FLAGS) & CLONE_THREAD != 0 {
        return None;
    }
    let child = ctx_u32(ctx, NEWTASK_PID);
    // Pending until userspace has copied the inherited sockets in (it asks through CONTROL).
    let _ = TARGETS.insert(
        child,
        Target::new(state::FORK_PENDING, parent.stack_mode()),
        0,
    );
    mark(child, true);
    debug!(ctx, "sockleak: tracing child {} of {}", child, task.tgid);
    send(
        ctx,
        task,
        Header::of(EventKind::Fork, -1, child as i64),
        &SocketRecord::EMPTY,
    );
    Some(())
}

/// A bpf_loop context (see close.rs).
#[repr(C)]
struct ExecScan {
    fdt: FdTable,
    tgid: u32,
}

/// bpf_loop body: a LIVE entry whose fd is no longer open was closed on exec.
unsafe extern "C" fn drop_if_closed(i: u64, ctx: *mut c_void) -> i64 {
    let s = unsafe { &*(ctx as *const ExecScan) };
    let key = SockKey {
        tgid: s.tgid,
        fd: i as u32,
    };
    if unsafe { LIVE.get(key) }.is_some() && !s.fdt.is_open(i as u32) {
        let _ = LIVE.remove(key);
    }
    0
}

/// At `sched_process_exec` close-on-exec fds are already closed and no new one is open yet:
/// every LIVE entry without an open fd behind it went with the old image.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let tgid = current().tgid;
    maybe_inside_now(tgid);
    if is_traced(tgid) {
        exec_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn exec_traced(ctx: TracePointContext) {
    let _ = try_exec(&ctx);
}

fn try_exec(ctx: &TracePointContext) -> Option<()> {
    // Only reached through the gate, which found the process traced.
    let task = current();
    // UNWIND TABLES: the old image's mappings are gone; userspace lists the new ones.
    crate::unwind::forget(task.tgid);
    // RUNTIME FRAMES: layouts found for the old image no longer apply.
    if let Some(t) = traced(task.tgid) {
        t.exec_happened();
        crate::runtime::forget(task.tgid, t.flags());
    }
    let mut handled = -1i64;
    if let Some(fdt) = FdTable::current() {
        let mut s = ExecScan {
            fdt,
            tgid: task.tgid,
        };
        unsafe {
            bpf_loop(
                fdt.max_fds,
                drop_if_closed as *mut c_void,
                (&raw mut s).cast(),
                0,
            )
        };
        handled = 0;
    }
    // arg -1: the fd table could not be read; userspace reconciles with /proc.
    send(
        ctx,
        task,
        Header::of(EventKind::Exec, -1, handled),
        &SocketRecord::EMPTY,
    );
    Some(())
}

/// A bpf_loop context: the exiting task, and whether the ring buffer filled up.
#[repr(C)]
struct HandOver {
    task: Task,
    full: u64,
}

/// bpf_loop body: hand a socket held at exit to userspace and forget it. When the ring buffer
/// is full, stop: what is left stays in LIVE for userspace to collect.
unsafe extern "C" fn hand_over(i: u64, ctx: *mut c_void) -> i64 {
    let h = unsafe { &mut *(ctx as *mut HandOver) };
    let key = SockKey {
        tgid: h.task.tgid,
        fd: i as u32,
    };
    if let Some(rec) = unsafe { LIVE.get(key) } {
        let rec = *rec;
        let ev = Header::of(EventKind::ExitSocket, i as i32, 0);
        if !submit(h.task, ev, 0, 0, 0, &rec) {
            h.full = 1;
            return 1;
        }
        let _ = LIVE.remove(key);
    }
    0
}

/// `sched:sched_process_exit` fires per thread, before the fd table is released.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        exit_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn exit_traced(ctx: TracePointContext) {
    let _ = try_exit(&ctx);
}

fn try_exit(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let offset = exit_group_dead_offset() as usize;
    let group_dead = if offset == 0 {
        task.tid == task.tgid
    } else {
        ctx_u8_at(ctx, offset)? != 0
    };
    if !group_dead {
        return None;
    }
    let Some(t) = traced(task.tgid) else {
        // Its bit outlived its entry (userspace dropped the process: a container that matches
        // no filter): clear it, or the pid keeps costing a lookup after reuse. Untraced
        // processes pay only the bit test.
        if is_traced(task.tgid) {
            unmark(task.tgid);
        }
        return None;
    };
    let final_counts = t.entry();
    // arg2 of Exit says whether the kernel handed over every socket; if not (no fd-table
    // offsets), userspace collects what is left in LIVE.
    let mut handed = 0u64;
    if let Some(fdt) = FdTable::current() {
        let mut s = HandOver { task, full: 0 };
        unsafe {
            bpf_loop(
                fdt.max_fds,
                hand_over as *mut c_void,
                (&raw mut s).cast(),
                0,
            )
        };
        handed = u64::from(s.full == 0);
    }
    crate::runtime::forget(task.tgid, final_counts.flags);
    let _ = TARGETS.remove(task.tgid);
    crate::unwind::forget(task.tgid);
    unmark(task.tgid);
    let h = Header::of(EventKind::Exit, -1, final_counts.opened as i64);
    send_full(
        ctx,
        task,
        h,
        handed as u16,
        0,
        (u64::from(final_counts.direct_opened) << 32) | u64::from(final_counts.direct_closed),
        &SocketRecord::EMPTY,
    );
    Some(())
}
