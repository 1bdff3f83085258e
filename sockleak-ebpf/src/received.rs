//! Sockets that arrive from another process: SCM_RIGHTS control messages returned by recvmsg(2)
//! and recvmmsg(2), and pidfd_getfd(2). Only fds that are sockets count (the fd table says). The
//! work per call is bounded: at most MAX_MSGS messages, MAX_CMSGS control messages each and
//! MAX_FDS fds per control message; what lies beyond is counted as loss.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};
use sockleak_common::{
    counters::LossCause,
    socket::{Origin, SocketRecord},
};

use crate::{
    args::{Regs, syscall_ret},
    fdtable::{FdTable, is_socket, pidfd_pid},
    filter::{Task, Traced, creatable, create, current, gate, traced, traced_or_new},
    maps::count_loss_n,
    open::{new_record, track_new_fd_quiet},
    stack,
};

const MAX_MSGS: u32 = 4;
const MAX_CMSGS: u32 = 4;
const MAX_FDS: u32 = 64;
const SOL_SOCKET: i32 = 1;
const SCM_RIGHTS: i32 = 1;
const SCM_CREDENTIALS: i32 = 2;
/// struct msghdr (64-bit): msg_control at 32, msg_controllen at 40.
const MSG_CONTROL: u64 = 32;
/// struct mmsghdr: a msghdr and an unsigned int, padded to 64 bytes.
const MMSGHDR_SIZE: u64 = 64;
const CMSGHDR_SIZE: u64 = 16;

#[tracepoint]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        recvmsg_traced(ctx, false);
    }
    0
}

#[tracepoint]
pub fn sys_exit_recvmmsg(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        recvmsg_traced(ctx, true);
    }
    0
}

#[repr(C)]
struct Msgs {
    task: Task,
    t: Traced,
    fdt: FdTable,
    vec: u64,
    rec: SocketRecord,
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn recvmsg_traced(ctx: TracePointContext, multi: bool) {
    let _ = try_recvmsg(&ctx, multi);
}

fn try_recvmsg(ctx: &TracePointContext, multi: bool) -> Option<()> {
    let task = current();
    let existing = traced(task.tgid);
    if existing.is_none() && !creatable(task.tgid) {
        return None;
    }
    let ret = syscall_ret(ctx);
    if ret < 0 {
        return None;
    }
    let regs = Regs::current()?;
    let [fd, vec, _, _] = regs.args();
    let n = if multi {
        if ret as u64 > u64::from(MAX_MSGS) {
            MAX_MSGS
        } else {
            ret as u32
        }
    } else {
        1
    };
    // Most recvmsg calls carry no control data: one read decides.
    if !multi && control_len(vec) == 0 {
        return None;
    }
    // A process that never had a socket sockleak knows can still receive one.
    let t = match existing {
        Some(t) => t,
        None => create(task.tgid)?,
    };
    let fdt = FdTable::current()?;
    let mut rec = new_record(&t, task, Origin::Received);
    rec.via_fd = fd as i32;
    let mut m = Msgs {
        task,
        t,
        fdt,
        vec,
        rec,
    };
    let mut stacked = false;
    for i in 0..MAX_MSGS {
        if i >= n {
            break;
        }
        let hdr = if multi {
            vec + u64::from(i) * MMSGHDR_SIZE
        } else {
            vec
        };
        if !stacked && control_len(hdr) != 0 {
            // The receiver's call site, once per call.
            stack::capture(ctx, &regs, task, m.t.stack_how(), &mut m.rec);
            stacked = true;
        }
        message(&mut m, hdr);
    }
    Some(())
}

/// msg_controllen as the kernel wrote it back (bytes of control data returned).
#[inline(always)]
fn control_len(hdr: u64) -> u64 {
    unsafe { bpf_probe_read_user((hdr + MSG_CONTROL + 8) as *const u64) }.unwrap_or(0)
}

/// Walks one message's control data: SCM_CREDENTIALS names the sender, SCM_RIGHTS the fds.
#[inline(always)]
fn message(m: &mut Msgs, hdr: u64) {
    let Ok([control, len]) =
        (unsafe { bpf_probe_read_user((hdr + MSG_CONTROL) as *const [u64; 2]) })
    else {
        return;
    };
    if control == 0 || len < CMSGHDR_SIZE {
        return;
    }
    let mut off = 0u64;
    let mut rights = 0u64;
    let mut nfds = 0u64;
    for _ in 0..MAX_CMSGS {
        if off + CMSGHDR_SIZE > len {
            break;
        }
        let Ok(h) = (unsafe { bpf_probe_read_user((control + off) as *const CmsgHdr) }) else {
            break;
        };
        if h.len < CMSGHDR_SIZE || h.len > len {
            break;
        }
        if h.level == SOL_SOCKET && h.kind == SCM_CREDENTIALS && h.len >= CMSGHDR_SIZE + 4 {
            if let Ok(pid) =
                unsafe { bpf_probe_read_user((control + off + CMSGHDR_SIZE) as *const i32) }
            {
                m.rec.peer_pid = pid as u32;
            }
        } else if h.level == SOL_SOCKET && h.kind == SCM_RIGHTS && rights == 0 {
            rights = control + off + CMSGHDR_SIZE;
            nfds = (h.len - CMSGHDR_SIZE) / 4;
        }
        off += (h.len + 7) & !7;
    }
    if rights == 0 || nfds == 0 {
        return;
    }
    if nfds > u64::from(MAX_FDS) {
        count_loss_n(LossCause::ReceivedOverflow, nfds - u64::from(MAX_FDS));
        nfds = u64::from(MAX_FDS);
    }
    m.vec = rights;
    unsafe {
        bpf_loop(
            nfds as u32,
            take_fd as *mut c_void,
            (m as *mut Msgs).cast(),
            0,
        )
    };
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CmsgHdr {
    len: u64,
    level: i32,
    kind: i32,
}

/// bpf_loop body: the i-th received fd, tracked when it is a socket.
unsafe extern "C" fn take_fd(i: u64, ctx: *mut c_void) -> i64 {
    let m = unsafe { &mut *(ctx as *mut Msgs) };
    let Ok(fd) = (unsafe { bpf_probe_read_user((m.vec + i * 4) as *const i32) }) else {
        return 1;
    };
    if fd >= 0
        && let Some(file) = m.fdt.file(fd as u32)
        && is_socket(file)
    {
        track_new_fd_quiet(&m.t, m.task, fd as u32, &m.rec);
    }
    0
}

#[tracepoint]
pub fn sys_exit_pidfd_getfd(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        pidfd_getfd_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn pidfd_getfd_traced(ctx: TracePointContext) {
    let _ = try_pidfd_getfd(&ctx);
}

fn try_pidfd_getfd(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let t = traced_or_new(task.tgid)?;
    let ret = syscall_ret(ctx);
    if ret < 0 {
        return None;
    }
    let fdt = FdTable::current()?;
    if !is_socket(fdt.file(ret as u32)?) {
        return None;
    }
    let regs = Regs::current()?;
    let pidfd = regs.arg(0);
    let mut rec = new_record(&t, task, Origin::Received);
    rec.via_fd = pidfd as i32;
    rec.peer_pid = fdt.file(pidfd as u32).map_or(0, pidfd_pid);
    stack::capture(ctx, &regs, task, t.stack_how(), &mut rec);
    track_new_fd_quiet(&t, task, ret as u32, &rec);
    Some(())
}
