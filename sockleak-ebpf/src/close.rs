//! Socket fds going away: close, close_range.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    event::{EventKind, Syscall},
    socket::{SockKey, SocketRecord},
    target::state,
};

use crate::{
    args::{SYSCALL_ARG0, SYSCALL_RET, syscall_args},
    emit::{Header, send},
    filter::{current, target_state},
    maps::LIVE,
};

/// At entry: close(2) releases the fd even when it then reports an error (EINTR, EIO).
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let _ = try_close(&ctx);
    0
}

fn try_close(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let st = target_state(task.tgid)?;
    let fd: u64 = unsafe { ctx.read_at(SYSCALL_ARG0) }.ok()?;
    let key = SockKey {
        tgid: task.tgid,
        fd: fd as u32,
    };
    // Only sockets cost an event, except while a forked child's inherited fds are not yet in
    // LIVE: then userspace decides.
    // arg 1: the kernel held the entry; 0: userspace must check its own copy.
    let removed = LIVE.remove(key).is_ok();
    if removed || st == state::FORK_PENDING {
        send(
            ctx,
            task,
            Header {
                kind: EventKind::Close,
                syscall: Syscall::Close,
                fd: fd as i32,
                arg: removed as i64,
                flags: 0,
            },
            &SocketRecord::EMPTY,
        );
    }
    Some(())
}

/// close_range(first, last, flags): the range may span every fd, which a BPF program cannot
/// walk, so userspace applies it to its copy of LIVE.
#[tracepoint]
pub fn sys_exit_close_range(ctx: TracePointContext) -> u32 {
    let _ = try_close_range(&ctx);
    0
}

fn try_close_range(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    target_state(task.tgid)?;
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.ok()?;
    if ret != 0 {
        return None;
    }
    let [first, last, flags, _] = syscall_args()?;
    send(
        ctx,
        task,
        Header {
            kind: EventKind::CloseRange,
            syscall: Syscall::CloseRange,
            fd: first as u32 as i32,
            arg: last as u32 as i64,
            flags: flags as u16,
        },
        &SocketRecord::EMPTY,
    );
    Some(())
}
