//! Process lifecycle: fork (children inherit fds), exec (close-on-exec fds vanish), exit.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::debug;
use sockleak_common::{
    event::{EventKind, Syscall},
    socket::SocketRecord,
    target::state,
};

use crate::{
    emit::{Header, send},
    filter::{current, target_state},
    maps::TARGETS,
};

/// `task:task_newtask`: pid at 8, clone_flags at 32. Fires in the parent, before the child runs,
/// so the child is a target from its first syscall.
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const CLONE_THREAD: u64 = 0x0001_0000;

/// Offset of `group_dead` in `sched:sched_process_exit` (true when the last thread exits),
/// read by userspace from the tracepoint's format; 0 on kernels without the field, where the
/// group leader's exit stands in for the process's.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: u32 = 0;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_newtask(&ctx);
    0
}

fn try_newtask(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    target_state(task.tgid)?;
    let flags: u64 = unsafe { ctx.read_at(NEWTASK_CLONE_FLAGS) }.ok()?;
    if flags & CLONE_THREAD != 0 {
        return None;
    }
    let child: i32 = unsafe { ctx.read_at(NEWTASK_PID) }.ok()?;
    let _ = TARGETS.insert(child as u32, state::FORK_PENDING, 0);
    debug!(ctx, "sockleak: tracing child {} of {}", child, task.tgid);
    send(
        ctx,
        task,
        Header {
            kind: EventKind::Fork,
            syscall: Syscall::None,
            fd: -1,
            arg: child as i64,
            flags: 0,
        },
        &SocketRecord::EMPTY,
    );
    Some(())
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let task = current();
    if target_state(task.tgid).is_some() {
        send(
            &ctx,
            task,
            Header {
                kind: EventKind::Exec,
                syscall: Syscall::None,
                fd: -1,
                arg: 0,
                flags: 0,
            },
            &SocketRecord::EMPTY,
        );
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let offset = unsafe { core::ptr::read_volatile(&EXIT_GROUP_DEAD_OFFSET) } as usize;
    let group_dead = if offset == 0 {
        task.tid == task.tgid
    } else {
        unsafe { ctx.read_at::<u8>(offset) }.ok()? != 0
    };
    if !group_dead {
        return None;
    }
    target_state(task.tgid)?;
    let _ = TARGETS.remove(task.tgid);
    send(
        ctx,
        task,
        Header {
            kind: EventKind::Exit,
            syscall: Syscall::None,
            fd: -1,
            arg: 0,
            flags: 0,
        },
        &SocketRecord::EMPTY,
    );
    Some(())
}
