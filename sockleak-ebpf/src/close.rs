//! Socket fds going away: close, close_range.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    event::{EventKind, Syscall},
    socket::{SockKey, SocketRecord},
};

use crate::{
    args::{Regs, syscall_arg0, syscall_ret},
    emit::{Header, send, send_full},
    fdtable::FdTable,
    filter::{current, gate, pending},
    maps::LIVE,
};

/// At entry: close(2) releases the fd even when it then reports an error (EINTR, EIO).
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        close_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn close_traced(ctx: TracePointContext) {
    let _ = try_close(&ctx);
}

fn try_close(ctx: &TracePointContext) -> Option<()> {
    // Only reached through the gate, which found the process traced.
    let task = current();
    let fd = syscall_arg0(ctx) as u32;
    let removed = LIVE
        .remove(SockKey {
            tgid: task.tgid,
            fd,
        })
        .is_ok();
    // While userspace seeds a forked child from /proc, it must hear of every close: the fd may
    // be one it is about to copy in. arg 1: the kernel held the entry itself.
    if pending(task.tgid) {
        send(
            ctx,
            task,
            Header::of(EventKind::Close, fd as i32, removed as i64),
            &SocketRecord::EMPTY,
        );
    }
    Some(())
}

/// A bpf_loop context. (No counter here: a counter would be a known constant to the verifier,
/// which then never sees the loop body converge; closes are not counted anyway.)
#[repr(C)]
struct Range {
    tgid: u32,
    first: u32,
}

/// bpf_loop body: forget LIVE[(tgid, first + i)].
unsafe extern "C" fn forget_fd(i: u64, ctx: *mut c_void) -> i64 {
    let r = unsafe { &*(ctx as *const Range) };
    let key = SockKey {
        tgid: r.tgid,
        fd: r.first.wrapping_add(i as u32),
    };
    let _ = LIVE.remove(key);
    0
}

/// Removes LIVE entries of `tgid` for fds in [first, last].
#[inline(always)]
fn forget_range(tgid: u32, first: u32, last: u32) {
    if last < first {
        return;
    }
    let mut r = Range { tgid, first };
    unsafe {
        bpf_loop(
            last - first + 1,
            forget_fd as *mut c_void,
            (&raw mut r).cast(),
            0,
        )
    };
}

/// close_range(first, last, flags): every fd in the range is gone. The fd table bounds the
/// range (a program cannot walk ~0U fds); without its offsets userspace applies the range.
#[tracepoint]
pub fn sys_exit_close_range(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        close_range_traced(ctx);
    }
    0
}

const CLOSE_RANGE_UNSHARE: u64 = 2;
const CLOSE_RANGE_CLOEXEC: u64 = 4;
/// With CLOSE_RANGE_UNSHARE the table is a new, possibly smaller one: look this far at least
/// (reconciliation catches what lies beyond).
const UNSHARE_REACH: u32 = 4096;

#[inline(never)]
fn close_range_traced(ctx: TracePointContext) {
    let _ = try_close_range(&ctx);
}

fn try_close_range(ctx: &TracePointContext) -> Option<()> {
    // Only reached through the gate, which found the process traced.
    let task = current();
    if syscall_ret(ctx) != 0 {
        return None;
    }
    let [first, last, flags, _] = Regs::current()?.args();
    if flags & CLOSE_RANGE_CLOEXEC != 0 {
        // Nothing closes now; exec removes them (see lifecycle).
        return None;
    }
    let (first, last) = (first as u32, last as u32);
    let handled = match FdTable::current() {
        Some(fdt) if fdt.max_fds > 0 => {
            let mut bound = fdt.max_fds;
            if flags & CLOSE_RANGE_UNSHARE != 0 && bound < UNSHARE_REACH {
                bound = UNSHARE_REACH;
            }
            let top = if last >= bound { bound - 1 } else { last };
            forget_range(task.tgid, first, top);
            true
        }
        _ => false,
    };
    if !handled || pending(task.tgid) {
        let h = Header {
            kind: EventKind::CloseRange,
            syscall: Syscall::CloseRange,
            fd: first as i32,
            arg: last as i64,
        };
        send_full(
            ctx,
            task,
            h,
            flags as u16,
            handled as u64,
            0,
            &SocketRecord::EMPTY,
        );
    }
    Some(())
}
