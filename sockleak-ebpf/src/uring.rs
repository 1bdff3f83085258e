//! io_uring: sockets made by IORING_OP_SOCKET and IORING_OP_ACCEPT (multishot included) and fds
//! closed by IORING_OP_CLOSE. A submission in a traced process records the submitter's call
//! site; the completion (in the process's own task or io-wq thread) carries the result.
//! Multishot accept completions carry no request, so they are found by (ring, user_data).
//! Fixed-file ("direct") sockets are not fds: they are only counted.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use sockleak_common::{
    kernel::{CQE_F_MORE, UringKey, UringSite, have, uring_op},
    socket::{NO_STACK, Origin, SockKey},
    tracepoint::{uring_complete as complete, uring_submit as submit},
};

use crate::{
    args::{Regs, ctx_u8, ctx_u32, ctx_u64},
    filter::{current, gate, traced, traced_or_new},
    maps::{LIVE, URING_SITES, offsets},
    open::{new_record, track_new_fd},
    stack,
};

/// Record fields (offsets checked against the kernel's format files before attaching).
const SUBMIT_CTX: usize = submit::CTX;
const SUBMIT_REQ: usize = submit::REQ;
const SUBMIT_USER_DATA: usize = submit::USER_DATA;
const SUBMIT_OPCODE: usize = submit::OPCODE;
const COMPLETE_CTX: usize = complete::CTX;
const COMPLETE_REQ: usize = complete::REQ;
const COMPLETE_USER_DATA: usize = complete::USER_DATA;
const COMPLETE_RES: usize = complete::RES;
const COMPLETE_CFLAGS: usize = complete::CFLAGS;

#[inline(always)]
fn read_u32(at: u64) -> u32 {
    unsafe { bpf_probe_read_kernel(at as *const u32) }.unwrap_or(0)
}

#[tracepoint]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    if gate::may_create() {
        submit_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn submit_traced(ctx: TracePointContext) {
    let _ = try_submit(&ctx);
}

fn try_submit(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let opcode = ctx_u8(ctx, SUBMIT_OPCODE);
    if opcode != uring_op::ACCEPT && opcode != uring_op::SOCKET {
        return None;
    }
    let t = traced_or_new(task.tgid)?;
    let o = offsets();
    if o.valid & have::IO_URING == 0 {
        return None;
    }
    let req = ctx_u64(ctx, SUBMIT_REQ);
    let cmd = req + u64::from(o.req_cmd);
    let slot = if opcode == uring_op::ACCEPT {
        read_u32(cmd + u64::from(o.accept_file_slot))
    } else {
        read_u32(cmd + u64::from(o.socket_file_slot))
    };
    let mut rec = new_record(&t, task, Origin::IoUring);
    // The submitter's stack (none when a kernel SQPOLL thread submits).
    match Regs::current() {
        Some(regs) => stack::capture(ctx, &regs, task, t.stack_how(), &mut rec),
        None => rec.stack_id = NO_STACK,
    }
    let key = UringKey {
        ctx: ctx_u64(ctx, SUBMIT_CTX),
        user_data: ctx_u64(ctx, SUBMIT_USER_DATA),
    };
    let site = UringSite {
        caller: rec.caller,
        stack_id: rec.stack_id,
        tid: task.tid,
        opcode,
        direct: (slot != 0) as u8,
        _pad: [0; 6],
    };
    let _ = URING_SITES.insert(key, site, 0);
    Some(())
}

#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    if gate::traced_only() {
        complete_traced(ctx);
    }
    0
}

/// The traced path, a subprogram of its own: see `gate`.
#[inline(never)]
fn complete_traced(ctx: TracePointContext) {
    let _ = try_complete(&ctx);
}

fn try_complete(ctx: &TracePointContext) -> Option<()> {
    let task = current();
    let t = traced(task.tgid)?;
    let o = offsets();
    if o.valid & have::IO_URING == 0 {
        return None;
    }
    let res = ctx_u32(ctx, COMPLETE_RES) as i32;
    let req = ctx_u64(ctx, COMPLETE_REQ);
    let key = UringKey {
        ctx: ctx_u64(ctx, COMPLETE_CTX),
        user_data: ctx_u64(ctx, COMPLETE_USER_DATA),
    };
    let more = ctx_u32(ctx, COMPLETE_CFLAGS) & CQE_F_MORE != 0;
    let opcode = if req != 0 {
        unsafe { bpf_probe_read_kernel((req + u64::from(o.req_opcode)) as *const u8) }.ok()?
    } else {
        // A multishot completion: only its submission says what it is.
        unsafe { URING_SITES.get(key) }?.opcode
    };
    match opcode {
        uring_op::CLOSE if res == 0 => {
            let cmd = req + u64::from(o.req_cmd);
            if read_u32(cmd + u64::from(o.close_file_slot)) != 0 {
                t.direct_closed();
            } else {
                let fd = read_u32(cmd + u64::from(o.close_fd));
                let _ = LIVE.remove(SockKey {
                    tgid: task.tgid,
                    fd,
                });
            }
        }
        uring_op::ACCEPT | uring_op::SOCKET => {
            let site = unsafe { URING_SITES.get(key) }.copied();
            if !more {
                let _ = URING_SITES.remove(key);
            }
            if res < 0 {
                return None;
            }
            // A fixed-file request's result is a slot, not an fd.
            let direct = if req != 0 {
                let cmd = req + u64::from(o.req_cmd);
                let off = if opcode == uring_op::ACCEPT {
                    o.accept_file_slot
                } else {
                    o.socket_file_slot
                };
                read_u32(cmd + u64::from(off)) != 0
            } else {
                site.is_some_and(|s| s.direct != 0)
            };
            if direct {
                t.direct_opened();
                return None;
            }
            // Family and type come from the socket tables at report time (joined by inode).
            let mut rec = new_record(&t, task, Origin::IoUring);
            if let Some(s) = site {
                rec.stack_id = s.stack_id;
                rec.caller = s.caller;
                rec.tid = s.tid;
            }
            track_new_fd(ctx, &t, task, res as u32, &rec);
        }
        _ => {}
    }
    Some(())
}
