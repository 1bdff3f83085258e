//! dup, dup2, dup3, fcntl(F_DUPFD, F_DUPFD_CLOEXEC): a copy of a socket fd is a socket fd.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    event::{EventKind, Syscall},
    socket::{Origin, SockKey, SocketRecord},
};

use crate::{
    args::{Regs, syscall_ret},
    clock::{coarse_now, now},
    emit::{Header, send},
    filter::{StackHow, current, gate, pending, traced},
    maps::LIVE,
    open::track_new_fd,
    stack,
};

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        dup_traced(ctx, Syscall::Dup);
    }
    0
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        dup_traced(ctx, Syscall::Dup2);
    }
    0
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        dup_traced(ctx, Syscall::Dup3);
    }
    0
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        dup_traced(ctx, Syscall::Fcntl);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn dup_traced(ctx: TracePointContext, syscall: Syscall) {
    let _ = try_dup(&ctx, syscall);
}

fn try_dup(ctx: &TracePointContext, syscall: Syscall) -> Option<()> {
    // Only reached through the gate, which found the process traced.
    let task = current();
    let ret = syscall_ret(ctx);
    if ret < 0 {
        return None;
    }
    let regs = Regs::current()?;
    let [oldfd, cmd, _, _] = regs.args();
    if syscall == Syscall::Fcntl && cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
        return None;
    }
    let newfd = ret as u32;
    if newfd == oldfd as u32 {
        return None;
    }
    let old = SockKey {
        tgid: task.tgid,
        fd: oldfd as u32,
    };
    let new = SockKey {
        tgid: task.tgid,
        fd: newfd,
    };
    // dup2/dup3 over a socket closes that socket first.
    let _ = LIVE.remove(new);
    match unsafe { LIVE.get(old) } {
        Some(src) => {
            let t = traced(task.tgid)?;
            // The copy is a new fd with its own creation site (where a dup'd fd leaks, the dup
            // is the culprit) but keeps what the original knew about the peer.
            let mut rec = *src;
            rec.created_ns = if t.pending() { now() } else { coarse_now() };
            rec.tid = task.tid;
            rec.origin = Origin::Dup as u8;
            rec.flags = 0;
            stack::capture(ctx, &regs, task, t.stack_how(), &mut rec);
            track_new_fd(ctx, &t, task, newfd, &rec);
        }
        None if pending(task.tgid) => {
            // Possibly a copy of an inherited fd userspace has not seeded yet: it decides.
            let mut rec = SocketRecord::EMPTY;
            rec.created_ns = now();
            rec.tid = task.tid;
            let mode = traced(task.tgid).map_or(StackHow::default(), |t| t.stack_how());
            stack::capture(ctx, &regs, task, mode, &mut rec);
            let h = Header {
                kind: EventKind::Dup,
                syscall,
                fd: oldfd as i32,
                arg: newfd as i64,
            };
            send(ctx, task, h, &rec);
        }
        None => {}
    }
    Some(())
}
