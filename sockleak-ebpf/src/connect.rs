//! connect(2): the remote endpoint of a live socket and a per-destination connect count (what
//! TIME_WAIT churn and self-connects are judged by), or a failure with its destination.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    event::Syscall,
    socket::{DestKey, DestStats, Endpoint, SockKey, SocketRecord},
};

use crate::{
    args::{Regs, syscall_ret},
    atomic::add_u64,
    clock::now,
    emit::{failure, read_sockaddr},
    filter::{StackHow, current, gate, traced},
    maps::{DESTS, LIVE},
};

const EINPROGRESS: i64 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        connect_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn connect_traced(ctx: TracePointContext) {
    let _ = try_connect(&ctx);
}

fn try_connect(ctx: &TracePointContext) -> Option<()> {
    // Only reached through the gate, which found the process traced.
    let task = current();
    let ret = syscall_ret(ctx);
    let regs = Regs::current()?;
    let [fd, addr, addrlen, _] = regs.args();
    let key = SockKey {
        tgid: task.tgid,
        fd: fd as u32,
    };
    let remote = read_sockaddr(addr, addrlen);
    if ret < 0 && ret != -EINPROGRESS {
        let mut rec = match unsafe { LIVE.get(key) } {
            Some(r) => *r,
            None => SocketRecord::EMPTY,
        };
        rec.remote = remote;
        // Failures are rare: the lookup for the stack mode is affordable here.
        let mode = traced(task.tgid).map_or(StackHow::default(), |t| t.stack_how());
        failure(
            ctx,
            &regs,
            Syscall::Connect,
            task,
            mode,
            -ret,
            fd as i32,
            &mut rec,
        );
        return None;
    }
    if let Some(p) = LIVE.get_ptr_mut(key) {
        unsafe { (*p).remote = remote };
    }
    count_dest(task.tgid, &remote);
    Some(())
}

#[inline(always)]
fn count_dest(tgid: u32, ep: &Endpoint) {
    if ep.family != AF_INET && ep.family != AF_INET6 {
        return;
    }
    let mut key = DestKey {
        tgid,
        family: ep.family,
        port: ep.port,
        addr: [0; 16],
    };
    key.addr.copy_from_slice(&ep.addr[..16]);
    match DESTS.get_ptr_mut(key) {
        Some(d) => add_u64(unsafe { &raw mut (*d).connects }, 1),
        None => {
            let _ = DESTS.insert(
                key,
                DestStats {
                    connects: 1,
                    first_ns: now(),
                },
                0,
            );
        }
    }
}
