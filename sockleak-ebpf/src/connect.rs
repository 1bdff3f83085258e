//! connect(2): the remote endpoint of a live socket, or a failure with its destination.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    event::{EventKind, Syscall},
    socket::{SockKey, SocketRecord},
    target::state,
};

use crate::{
    args::{Regs, SYSCALL_RET},
    emit::{Header, failure, read_sockaddr, send},
    filter::{current, target_state},
    maps::LIVE,
};

const EINPROGRESS: i64 = 115;

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_connect(&ctx);
    0
}

fn try_connect(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let st = target_state(task.tgid)?;
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.ok()?;
    let regs = Regs::read()?;
    let [fd, addr, _addrlen, _] = regs.args();
    let key = SockKey {
        tgid: task.tgid,
        fd: fd as u32,
    };
    let remote = read_sockaddr(addr);
    if ret < 0 && ret != -EINPROGRESS {
        let mut rec = match unsafe { LIVE.get(key) } {
            Some(r) => *r,
            None => SocketRecord::EMPTY,
        };
        rec.remote = remote;
        failure(
            ctx,
            &regs,
            Syscall::Connect,
            task,
            -ret,
            fd as i32,
            &mut rec,
        );
        return None;
    }
    let mut rec = SocketRecord::EMPTY;
    match LIVE.get_ptr_mut(key) {
        Some(p) => unsafe {
            (*p).remote = remote;
            rec.remote = remote;
        },
        // Possibly an fd inherited at fork that userspace has not copied into LIVE yet.
        None if st == state::FORK_PENDING => rec.remote = remote,
        None => return None,
    }
    send(
        ctx,
        task,
        Header {
            kind: EventKind::Connect,
            syscall: Syscall::Connect,
            fd: fd as i32,
            arg: 0,
            flags: 0,
        },
        &rec,
    );
    Some(())
}
