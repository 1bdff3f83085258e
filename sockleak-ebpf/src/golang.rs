//! Go HTTP clients (net/http, HTTP/1.1, plain and TLS). Uprobes, attached per process by
//! userspace (sockleak/src/symbols/gohttp.rs), at Go functions' entries (register ABI):
//!
//! - `(*Transport).dialConn(t, ...)`, on the dial goroutine: the dial in progress there
//!   (GO_DIALS), so the sockets that goroutine makes carry their `*http.Transport` (`owner`):
//!   counting Transports tells "a Transport per request" from "bodies not closed".
//! - `(*Transport).queueForDial(t, w)`, on the goroutine that sent the request: its stack, by
//!   `*wantConn` (GO_WANTS).
//! - `(*wantConn).tryDeliver(w, pc, ...)` on the dial goroutine: the dial is over (its
//!   GO_DIALS entry goes); `pc`'s socket gets `w`'s stack as its origin (`join::GO_WANTCONN`).
//! - `(*persistConn).roundTrip(pc, req)`, on the goroutine sending each HTTP/1 request (a
//!   reused idle connection too): that request's stack is the origin (`join::GO_ROUNDTRIP`),
//!   and the connection is checked out.
//! - `(*Transport).tryPutIdleConn(t, pc)`: the connection went back to the idle pool.
//!
//! A `*persistConn`'s socket is found through its `net.Conn` (`*net.TCPConn`, or a
//! `*tls.Conn` around one) down to `poll.FD.Sysfd`, with type descriptors and offsets from
//! GO_LAYOUT; a `net.Conn` of another type (a custom DialContext's wrapper) falls back to the
//! socket the dial goroutine made. A socket is only written when it is the connection's: the
//! typed chain reads the fd the connection itself holds (and its Transport then becomes the
//! socket's owner, which tags a dual-stack dial's sockets, made on racer goroutines); the
//! fallback's socket must have been created when the dial saw it made, and be no other
//! Transport's.
//! Probes fire twice when a goroutine's stack grows at a function's entry (Go re-runs the
//! entry): every step is idempotent. Origin stacks are frame-pointer walks whatever the
//! process's stack mode: Go keeps frame pointers, and a stack copy per request would cost.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::uprobe,
    programs::{ProbeContext, tracing::StackIdContext},
};
use sockleak_common::{
    origin::{GoConn, GoDial, GoLayout, ObjectKey, OriginSite, conn_state, join},
    socket::{GoroutineKey, NO_STACK, SockKey, SocketRecord},
    target::flag,
};

use crate::{
    args::Regs,
    filter::{StackHow, Task, Traced, current, is_traced},
    maps::{GO_CONNS, GO_DIALS, GO_LAYOUT, GO_WANTS, LIVE},
    stack,
};

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    if addr < 4096 {
        return None;
    }
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

#[inline(always)]
fn goroutine(regs: &Regs, tgid: u32) -> GoroutineKey {
    GoroutineKey {
        g: regs.go_g(),
        tgid,
        _pad: 0,
    }
}

#[inline(always)]
fn object(addr: u64, tgid: u32) -> ObjectKey {
    ObjectKey {
        addr,
        tgid,
        _pad: 0,
    }
}

#[uprobe]
pub fn go_dial_conn(_ctx: ProbeContext) -> u32 {
    let task = current();
    if !is_traced(task.tgid) {
        return 0;
    }
    let Some(regs) = Regs::current() else {
        return 0;
    };
    let dial = GoDial {
        transport: regs.go_arg(0),
        created_ns: 0,
        fd: -1,
        _pad: 0,
    };
    let _ = GO_DIALS.insert(goroutine(&regs, task.tgid), dial, 0);
    0
}

/// The Transport the current goroutine is dialing for, if this is a Go HTTP client's dial;
/// notes the socket (`fd`, made now) as the dial's latest.
#[inline(always)]
pub fn owner(t: &Traced, regs: &Regs, tgid: u32, fd: i64, created_ns: u64) -> u64 {
    if t.flags() & flag::GO_HTTP == 0 {
        return 0;
    }
    let key = goroutine(regs, tgid);
    let Some(dial) = GO_DIALS.get_ptr_mut(key) else {
        return 0;
    };
    let transport = unsafe { (*dial).transport };
    if t.flags() & flag::GO_DELIVER != 0 {
        // The delivery ends the dial (tryDeliver); until then every socket here is its own.
        unsafe {
            (*dial).fd = fd as i32;
            (*dial).created_ns = created_ns;
        }
    } else {
        // One dial, one connection: a later socket of a reused goroutine is not this dial's.
        let _ = GO_DIALS.remove(key);
    }
    transport
}

#[uprobe]
pub fn go_queue_for_dial(ctx: ProbeContext) -> u32 {
    let _ = queue_for_dial(&ctx);
    0
}

fn queue_for_dial(ctx: &ProbeContext) -> Option<()> {
    let task = current();
    if !is_traced(task.tgid) {
        return None;
    }
    let regs = Regs::current()?;
    let w = regs.go_arg(1);
    let (stack_id, caller) = stack::site(ctx, &regs, task, StackHow::FRAME_POINTERS);
    if stack_id == NO_STACK {
        return None;
    }
    let site = OriginSite {
        caller,
        stack_id,
        _pad: 0,
    };
    let _ = GO_WANTS.insert(object(w, task.tgid), site, 0);
    Some(())
}

/// The fd of a `*persistConn`'s `net.Conn`, through `*net.TCPConn` or a `*tls.Conn` around
/// one; None for any other type.
#[inline(always)]
fn conn_fd(pc: u64, l: &GoLayout) -> Option<i32> {
    let iface: [u64; 2] = read(pc + u64::from(l.pc_conn))?;
    let mut data = iface[1];
    let mut typ: u64 = read(iface[0] + u64::from(l.itab_type))?;
    if typ == l.tls_conn_type && l.tls_conn_type != 0 {
        let inner: [u64; 2] = read(data + u64::from(l.tls_conn))?;
        typ = read(inner[0] + u64::from(l.itab_type))?;
        data = inner[1];
    }
    if typ != l.tcp_conn_type || typ == 0 {
        return None;
    }
    let netfd: u64 = read(data + u64::from(l.tcp_netfd))?;
    let fd: i64 = read(netfd + u64::from(l.netfd_sysfd))?;
    (0..=i64::from(i32::MAX)).contains(&fd).then_some(fd as i32)
}

/// The live record of `pc`'s socket, and its fd, if it is the connection's: through the typed
/// chain (exact: the fd the connection itself holds), else the socket it was delivered with
/// (same creation time, and no other Transport's). Its Transport becomes `pc.t`: a socket a
/// dual-stack dial made on a racer goroutine is untagged until here.
#[inline(always)]
fn connection(
    task: Task,
    pc: u64,
    l: &GoLayout,
    fallback: Option<GoConn>,
) -> Option<(*mut SocketRecord, i32)> {
    let transport: u64 = read(pc + u64::from(l.pc_transport))?;
    let typed = conn_fd(pc, l);
    let (fd, created_ns) = match typed {
        Some(fd) => (fd, 0),
        None => {
            let c = match fallback {
                Some(c) => c,
                None => unsafe { *GO_CONNS.get(object(pc, task.tgid))? },
            };
            (c.fd, c.created_ns)
        }
    };
    if fd < 0 {
        return None;
    }
    let rec = LIVE.get_ptr_mut(SockKey {
        tgid: task.tgid,
        fd: fd as u32,
    })?;
    unsafe {
        if typed.is_none()
            && ((*rec).created_ns != created_ns || ((*rec).owner != 0 && (*rec).owner != transport))
        {
            return None;
        }
        (*rec).owner = transport;
    }
    Some((rec, fd))
}

#[uprobe]
pub fn go_try_deliver(_ctx: ProbeContext) -> u32 {
    let _ = try_deliver();
    0
}

fn try_deliver() -> Option<()> {
    let task = current();
    if !is_traced(task.tgid) {
        return None;
    }
    let regs = Regs::current()?;
    // Only the dial goroutine's delivery counts (idle connections handed to waiting requests
    // go through here too, and roundTrip joins those): it ends the dial.
    let key = goroutine(&regs, task.tgid);
    let dial = unsafe { *GO_DIALS.get(key)? };
    let _ = GO_DIALS.remove(key);
    let (w, pc) = (regs.go_arg(0), regs.go_arg(1));
    let want = unsafe { GO_WANTS.get(object(w, task.tgid)).copied() };
    let _ = GO_WANTS.remove(object(w, task.tgid));
    if pc == 0 {
        return None;
    }
    let l = unsafe { *GO_LAYOUT.get(task.tgid)? };
    let fallback = GoConn {
        created_ns: dial.created_ns,
        fd: dial.fd,
        _pad: 0,
    };
    let (rec, fd) = connection(task, pc, &l, Some(fallback))?;
    unsafe {
        if let Some(want) = want
            && (*rec).conn.join != join::GO_ROUNDTRIP
        {
            (*rec).conn.caller = want.caller;
            (*rec).conn.stack_id = want.stack_id;
            (*rec).conn.join = join::GO_WANTCONN;
        }
        let conn = GoConn {
            created_ns: (*rec).created_ns,
            fd,
            _pad: 0,
        };
        let _ = GO_CONNS.insert(object(pc, task.tgid), conn, 0);
    }
    Some(())
}

#[uprobe]
pub fn go_round_trip(ctx: ProbeContext) -> u32 {
    let _ = round_trip(&ctx);
    0
}

fn round_trip<C: StackIdContext>(ctx: &C) -> Option<()> {
    let task = current();
    if !is_traced(task.tgid) {
        return None;
    }
    let regs = Regs::current()?;
    let l = unsafe { *GO_LAYOUT.get(task.tgid)? };
    let (rec, _) = connection(task, regs.go_arg(0), &l, None)?;
    let (stack_id, caller) = stack::site(ctx, &regs, task, StackHow::FRAME_POINTERS);
    unsafe {
        if stack_id != NO_STACK {
            (*rec).conn.caller = caller;
            (*rec).conn.stack_id = stack_id;
            (*rec).conn.join = join::GO_ROUNDTRIP;
        }
        (*rec).conn.state = conn_state::GO_CHECKED_OUT;
    }
    Some(())
}

#[uprobe]
pub fn go_put_idle(_ctx: ProbeContext) -> u32 {
    let _ = put_idle();
    0
}

fn put_idle() -> Option<()> {
    let task = current();
    if !is_traced(task.tgid) {
        return None;
    }
    let regs = Regs::current()?;
    let l = unsafe { *GO_LAYOUT.get(task.tgid)? };
    let (rec, _) = connection(task, regs.go_arg(1), &l, None)?;
    unsafe { (*rec).conn.state = conn_state::GO_IDLE };
    Some(())
}
