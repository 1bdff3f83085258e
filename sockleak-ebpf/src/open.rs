//! Socket fds appearing: socket, socketpair, accept, accept4 (and their failures). A new socket
//! costs a LIVE insert and a counter increment: no event.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::warn;
use sockleak_common::{
    counters::LossCause,
    event::Syscall,
    socket::{Origin, SockKey, SocketRecord},
};

use crate::{
    args::{Regs, syscall_ret},
    clock::{coarse_now, now},
    emit::{failure, read_sockaddr},
    filter::{Task, Traced, current, gate, traced_or_new},
    golang,
    maps::{LIVE, capture_stacks, count_loss, first_loss},
    node, stack,
};

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// Records a new socket fd in the live map and counts it. An entry already at that fd is a
/// socket that went away without a close the kernel saw (a copy userspace seeded just as the
/// process closed it): it is replaced. False when the map is full.
#[inline(always)]
pub fn track_new_fd_quiet(t: &Traced, task: Task, fd: u32, rec: &SocketRecord) -> bool {
    let key = SockKey {
        tgid: task.tgid,
        fd,
    };
    // A replaced entry needs no counting: closes are derived from what is still open.
    match LIVE.insert(key, rec, BPF_NOEXIST) {
        Ok(()) => {}
        Err(e) if e == -EEXIST && LIVE.insert(key, rec, 0).is_ok() => {}
        Err(_) => {
            count_loss(LossCause::LiveMapFull);
            return false;
        }
    }
    t.opened();
    true
}

/// `track_new_fd_quiet`, logging (once per CPU) when the map is full.
#[inline(always)]
pub fn track_new_fd<C: aya_ebpf::EbpfContext>(
    ctx: &C,
    t: &Traced,
    task: Task,
    fd: u32,
    rec: &SocketRecord,
) {
    if !track_new_fd_quiet(t, task, fd, rec) && first_loss(LossCause::LiveMapFull) {
        warn!(ctx, "sockleak: live-socket map full, sockets go untracked");
    }
}

/// A record of a socket made now. A fork-pending process's sockets get the precise clock
/// (userspace orders them against its events); others the cheap one.
#[inline(always)]
pub fn new_record(t: &Traced, task: Task, origin: Origin) -> SocketRecord {
    let mut rec = SocketRecord::EMPTY;
    rec.created_ns = if t.pending() { now() } else { coarse_now() };
    rec.tid = task.tid;
    rec.origin = origin as u8;
    rec
}

/// A record from socket(2)/socketpair(2)'s (family, type, protocol) arguments.
#[inline(always)]
fn socket_record(t: &Traced, task: Task, origin: Origin, args: [u64; 4]) -> SocketRecord {
    let mut rec = new_record(t, task, origin);
    rec.family = args[0] as u16;
    rec.sock_type = args[1] as u32;
    rec.protocol = args[2] as u16;
    rec
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        socket_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn socket_traced(ctx: TracePointContext) {
    let _ = try_socket(&ctx);
}

fn try_socket(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let t = traced_or_new(task.tgid)?;
    let ret = syscall_ret(ctx);
    if ret >= 0 && !capture_stacks() && t.flags() == 0 {
        // The cheapest path (`--no-stacks`): no register read; the socket's kind comes from
        // the kernel's socket tables at report time instead of socket()'s arguments.
        let rec = new_record(&t, task, Origin::Socket);
        track_new_fd(ctx, &t, task, ret as u32, &rec);
        return Some(());
    }
    let regs = Regs::current()?;
    let mut rec = socket_record(&t, task, Origin::Socket, regs.args());
    if ret < 0 {
        failure(
            ctx,
            &regs,
            Syscall::Socket,
            task,
            t.stack_how(),
            -ret,
            -1,
            &mut rec,
        );
        return None;
    }
    rec.owner = golang::owner(&t, &regs, task.tgid, ret, rec.created_ns);
    if let Some(o) = node::origin(&t, task) {
        rec.conn = o;
    }
    stack::capture(ctx, &regs, task, t.stack_how(), &mut rec);
    track_new_fd(ctx, &t, task, ret as u32, &rec);
    Some(())
}

#[tracepoint]
pub fn sys_exit_socketpair(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        socketpair_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn socketpair_traced(ctx: TracePointContext) {
    let _ = try_socketpair(&ctx);
}

fn try_socketpair(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let t = traced_or_new(task.tgid)?;
    let ret = syscall_ret(ctx);
    let regs = Regs::current()?;
    let args = regs.args();
    let mut rec = socket_record(&t, task, Origin::Socketpair, args);
    if ret < 0 {
        failure(
            ctx,
            &regs,
            Syscall::Socketpair,
            task,
            t.stack_how(),
            -ret,
            -1,
            &mut rec,
        );
        return None;
    }
    let fds: [i32; 2] = unsafe { bpf_probe_read_user(args[3] as *const [i32; 2]) }.ok()?;
    stack::capture(ctx, &regs, task, t.stack_how(), &mut rec);
    track_new_fd(ctx, &t, task, fds[0] as u32, &rec);
    track_new_fd(ctx, &t, task, fds[1] as u32, &rec);
    Some(())
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        accept_traced(ctx, Syscall::Accept, Origin::Accept);
    }
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        accept_traced(ctx, Syscall::Accept4, Origin::Accept4);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn accept_traced(ctx: TracePointContext, syscall: Syscall, origin: Origin) {
    let _ = try_accept(&ctx, syscall, origin);
}

fn try_accept(ctx: &TracePointContext, syscall: Syscall, origin: Origin) -> Option<()> {
    let task = current();
    let t = traced_or_new(task.tgid)?;
    let ret = syscall_ret(ctx);
    let regs = Regs::current()?;
    let [listener, addr, _addrlen, flags] = regs.args();
    let mut rec = new_record(&t, task, origin);
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
        failure(
            ctx,
            &regs,
            syscall,
            task,
            t.stack_how(),
            -ret,
            listener as i32,
            &mut rec,
        );
        return None;
    }
    rec.remote = read_sockaddr(addr, 2 + sockleak_common::socket::ENDPOINT_ADDR_LEN as u64);
    if rec.family == 0 {
        rec.family = rec.remote.family;
    }
    stack::capture(ctx, &regs, task, t.stack_how(), &mut rec);
    track_new_fd(ctx, &t, task, ret as u32, &rec);
    Some(())
}
