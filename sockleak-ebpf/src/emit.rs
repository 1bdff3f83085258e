//! Building and sending events; stack capture.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    programs::tracing::StackIdContext,
};
use aya_log_ebpf::warn;
use sockleak_common::{
    counters::LossCause,
    event::{Event, EventKind, Syscall},
    socket::{ENDPOINT_ADDR_LEN, Endpoint, NO_STACK, SAMPLED_OUT, SocketRecord},
};

use crate::{
    args::Regs,
    filter::Task,
    maps::{
        EVENTS, SAMPLE_COUNTER, STACKS, capture_stacks, count_loss, stack_sample, wakeup_bytes,
    },
};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Captures the user call site into `rec`: stack id (or NO_STACK) and the leaf caller.
#[inline(always)]
pub fn capture_site<C: StackIdContext>(ctx: &C, regs: &Regs, rec: &mut SocketRecord) {
    if !capture_stacks() {
        rec.stack_id = NO_STACK;
        return;
    }
    rec.caller = regs.caller();
    // Sampling: the stack walk is most of the cost; skipped sockets keep their leaf caller.
    let n = stack_sample();
    if n > 1
        && let Some(c) = SAMPLE_COUNTER.get_ptr_mut(0)
    {
        let v = unsafe {
            *c = (*c).wrapping_add(1);
            *c
        };
        // The first creation on each CPU is sampled, then every n-th.
        if v % n != 1 {
            rec.stack_id = SAMPLED_OUT;
            return;
        }
    }
    rec.stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(_) => {
            count_loss(LossCause::StackLost);
            NO_STACK
        }
    };
}

/// What an event says besides who and which socket.
pub struct Header {
    pub kind: EventKind,
    pub syscall: Syscall,
    pub fd: i32,
    pub arg: i64,
    pub flags: u16,
}

/// Sends one event; counts it as lost when the ring buffer is full.
#[inline(always)]
pub fn send<C: EbpfContext>(ctx: &C, task: Task, h: Header, record: &SocketRecord) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(Event {
                ts_ns: now(),
                tgid: task.tgid,
                tid: task.tid,
                kind: h.kind as u8,
                syscall: h.syscall as u8,
                flags: h.flags,
                fd: h.fd,
                arg: h.arg,
                record: *record,
            });
            // Batch: wake the reader only once enough is queued (it also drains on a timer).
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= wakeup_bytes() {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(flags);
        }
        None => {
            if count_loss(LossCause::RingBufFull) {
                warn!(ctx, "sockleak: ring buffer full, events are being dropped");
            }
        }
    }
}

/// Errors that are part of normal non-blocking operation, not failures worth reporting.
#[inline(always)]
fn benign(errno: i64) -> bool {
    const EINTR: i64 = 4;
    const EAGAIN: i64 = 11;
    const EALREADY: i64 = 114;
    const EINPROGRESS: i64 = 115;
    matches!(errno, EINTR | EAGAIN | EALREADY | EINPROGRESS)
}

/// Reports a failed socket-making call with its errno and user stack.
#[inline(always)]
pub fn failure<C: EbpfContext + StackIdContext>(
    ctx: &C,
    regs: &Regs,
    syscall: Syscall,
    task: Task,
    errno: i64,
    fd: i32,
    record: &mut SocketRecord,
) {
    if benign(errno) {
        return;
    }
    capture_site(ctx, regs, record);
    record.tid = task.tid;
    record.created_ns = now();
    let h = Header {
        kind: EventKind::Failure,
        syscall,
        fd,
        arg: errno,
        flags: 0,
    };
    send(ctx, task, h, record);
}

/// Reads a sockaddr the process passed in or got back. Unknown families keep only the family.
#[inline(always)]
pub fn read_sockaddr(ptr: u64) -> Endpoint {
    let mut ep = Endpoint::UNKNOWN;
    if ptr == 0 {
        return ep;
    }
    let p = ptr as *const u8;
    let Ok(family) = (unsafe { bpf_probe_read_user(p as *const u16) }) else {
        return ep;
    };
    ep.family = family;
    const AF_UNIX: u16 = 1;
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    unsafe {
        match family {
            AF_INET => {
                // sockaddr_in: family, port (network order), addr.
                if let Ok(raw) = bpf_probe_read_user(p.add(2) as *const [u8; 6]) {
                    ep.port = u16::from_be_bytes([raw[0], raw[1]]);
                    ep.addr[..4].copy_from_slice(&raw[2..6]);
                }
            }
            AF_INET6 => {
                // sockaddr_in6: family, port, flowinfo, addr[16].
                if let Ok(port) = bpf_probe_read_user(p.add(2) as *const [u8; 2]) {
                    ep.port = u16::from_be_bytes(port);
                }
                if let Ok(addr) = bpf_probe_read_user(p.add(8) as *const [u8; 16]) {
                    ep.addr[..16].copy_from_slice(&addr);
                }
            }
            AF_UNIX => {
                if let Ok(path) = bpf_probe_read_user(p.add(2) as *const [u8; ENDPOINT_ADDR_LEN]) {
                    ep.addr = path;
                }
            }
            _ => {}
        }
    }
    ep
}
