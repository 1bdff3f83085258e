//! dup, dup2, dup3, fcntl(F_DUPFD, F_DUPFD_CLOEXEC): a copy of a socket fd is a socket fd.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    event::{EventKind, Syscall},
    socket::{Origin, SockKey, SocketRecord},
    target::state,
};

use crate::{
    args::{Regs, SYSCALL_RET},
    emit::{Header, capture_site, now, send},
    filter::{current, target_state},
    maps::LIVE,
};

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    let _ = try_dup(&ctx, Syscall::Dup);
    0
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    let _ = try_dup(&ctx, Syscall::Dup2);
    0
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    let _ = try_dup(&ctx, Syscall::Dup3);
    0
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    let _ = try_dup(&ctx, Syscall::Fcntl);
    0
}

/// Tells userspace `newfd` is a copy of `oldfd` (`rec.origin` 0: userspace resolves it).
#[inline(always)]
fn send_dup(
    ctx: &TracePointContext,
    task: crate::filter::Task,
    syscall: Syscall,
    oldfd: i32,
    newfd: u32,
    rec: &SocketRecord,
) {
    let h = Header {
        kind: EventKind::Dup,
        syscall,
        fd: oldfd,
        arg: newfd as i64,
        flags: 0,
    };
    send(ctx, task, h, rec);
}

fn try_dup(ctx: &TracePointContext, syscall: Syscall) -> Option<()> {
    let task = current();
    let st = target_state(task.tgid)?;
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.ok()?;
    if ret < 0 {
        return None;
    }
    let regs = Regs::read()?;
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
    match unsafe { LIVE.get(old) } {
        Some(src) => {
            // The copy is a new fd with its own creation site (where a dup'd fd leaks, the dup
            // is the culprit) but keeps what the original knew about the peer.
            let mut rec = *src;
            rec.created_ns = now();
            rec.tid = task.tid;
            rec.origin = Origin::Dup as u8;
            capture_site(ctx, &regs, &mut rec);
            // Overwrites a socket dup2/dup3 implicitly closed at `newfd`; the Dup event tells
            // userspace to replace it.
            let _ = LIVE.insert(new, rec, 0);
            send_dup(ctx, task, syscall, oldfd as i32, newfd, &rec);
        }
        None => {
            if LIVE.remove(new).is_ok() || st == state::FORK_PENDING {
                // dup2 over a socket with a non-socket, or an fd userspace may know from the
                // parent: an empty record (origin 0) asks userspace to resolve it.
                let mut rec = SocketRecord::EMPTY;
                if st == state::FORK_PENDING {
                    rec.created_ns = now();
                    rec.tid = task.tid;
                    capture_site(ctx, &regs, &mut rec);
                }
                send_dup(ctx, task, syscall, oldfd as i32, newfd, &rec);
            }
        }
    }
    Some(())
}
