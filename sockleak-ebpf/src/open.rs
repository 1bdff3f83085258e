//! Socket fds appearing: socket, socketpair, accept, accept4 (and their failures).

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::warn;
use sockleak_common::{
    counters::LossCause,
    event::{EventKind, Syscall},
    socket::{Origin, SockKey, SocketRecord},
};

use crate::{
    args::{Regs, SYSCALL_RET},
    emit::{Header, capture_site, failure, now, read_sockaddr, send},
    filter::{Task, current, target_state},
    maps::{LIVE, count_loss},
};

/// Records a new socket fd in the live map and tells userspace.
#[inline(always)]
pub fn track_new_fd(ctx: &TracePointContext, task: Task, fd: u32, rec: &SocketRecord) {
    let key = SockKey {
        tgid: task.tgid,
        fd,
    };
    if LIVE.insert(key, rec, 0).is_err() && count_loss(LossCause::LiveMapFull) {
        warn!(ctx, "sockleak: live-socket map full, sockets go untracked");
    }
    // The event goes out even when the map is full: userspace still counts the socket.
    send(
        ctx,
        task,
        Header {
            kind: EventKind::Open,
            syscall: Syscall::None,
            fd: fd as i32,
            arg: 0,
            flags: 0,
        },
        rec,
    );
}

#[inline(always)]
fn new_record(task: Task, origin: Origin) -> SocketRecord {
    let mut rec = SocketRecord::EMPTY;
    rec.created_ns = now();
    rec.tid = task.tid;
    rec.origin = origin as u8;
    rec
}

/// A record from socket(2)/socketpair(2)'s (family, type, protocol) arguments.
#[inline(always)]
fn socket_record(task: Task, origin: Origin, family: u64, ty: u64, protocol: u64) -> SocketRecord {
    let mut rec = new_record(task, origin);
    rec.family = family as u16;
    rec.sock_type = ty as u32;
    rec.protocol = protocol as u16;
    rec
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let _ = try_socket(&ctx);
    0
}

fn try_socket(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    target_state(task.tgid)?;
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.ok()?;
    let regs = Regs::read()?;
    let [family, ty, protocol, _] = regs.args();
    let mut rec = socket_record(task, Origin::Socket, family, ty, protocol);
    if ret < 0 {
        failure(ctx, &regs, Syscall::Socket, task, -ret, -1, &mut rec);
        return None;
    }
    capture_site(ctx, &regs, &mut rec);
    track_new_fd(ctx, task, ret as u32, &rec);
    Some(())
}

#[tracepoint]
pub fn sys_exit_socketpair(ctx: TracePointContext) -> u32 {
    let _ = try_socketpair(&ctx);
    0
}

fn try_socketpair(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    target_state(task.tgid)?;
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.ok()?;
    let regs = Regs::read()?;
    let [family, ty, protocol, sv] = regs.args();
    let mut rec = socket_record(task, Origin::Socketpair, family, ty, protocol);
    if ret < 0 {
        failure(ctx, &regs, Syscall::Socketpair, task, -ret, -1, &mut rec);
        return None;
    }
    let fds: [i32; 2] = unsafe { bpf_probe_read_user(sv as *const [i32; 2]) }.ok()?;
    capture_site(ctx, &regs, &mut rec);
    track_new_fd(ctx, task, fds[0] as u32, &rec);
    track_new_fd(ctx, task, fds[1] as u32, &rec);
    Some(())
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_accept(&ctx, Syscall::Accept, Origin::Accept);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = try_accept(&ctx, Syscall::Accept4, Origin::Accept4);
    0
}

fn try_accept(ctx: &TracePointContext, syscall: Syscall, origin: Origin) -> Option<()> {
    let task = current();
    target_state(task.tgid)?;
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.ok()?;
    let regs = Regs::read()?;
    let [listener, addr, _addrlen, flags] = regs.args();
    let mut rec = new_record(task, origin);
    // The accepted socket shares the listener's family, type and protocol.
    let lkey = SockKey {
        tgid: task.tgid,
        fd: listener as u32,
    };
    if let Some(l) = unsafe { LIVE.get(lkey) } {
        rec.family = l.family;
        rec.sock_type = (l.sock_type & 0xf) | (flags as u32);
        rec.protocol = l.protocol;
    }
    if ret < 0 {
        failure(ctx, &regs, syscall, task, -ret, listener as i32, &mut rec);
        return None;
    }
    rec.remote = read_sockaddr(addr);
    if rec.family == 0 {
        rec.family = rec.remote.family;
    }
    capture_site(ctx, &regs, &mut rec);
    track_new_fd(ctx, task, ret as u32, &rec);
    Some(())
}
