//! Building and sending the (rare) events, failures, and reading socket addresses.

use aya_ebpf::{
    EbpfContext, helpers::generated::bpf_probe_read_user, programs::tracing::StackIdContext,
};
use aya_log_ebpf::warn;
use sockleak_common::{
    counters::LossCause,
    event::{Event, EventKind, Syscall},
    socket::{ENDPOINT_ADDR_LEN, Endpoint, SocketRecord},
};

use crate::{
    args::Regs,
    clock::now,
    filter::{StackHow, Task},
    maps::{EVENTS, count_loss, first_loss, wakeup_bytes},
    stack,
};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// What an event says besides who and which socket.
pub struct Header {
    pub kind: EventKind,
    pub syscall: Syscall,
    pub fd: i32,
    pub arg: i64,
}

impl Header {
    #[inline(always)]
    pub fn of(kind: EventKind, fd: i32, arg: i64) -> Header {
        Header {
            kind,
            syscall: Syscall::None,
            fd,
            arg,
        }
    }
}

/// Sends one event; counts it as lost when the ring buffer is full.
#[inline(always)]
pub fn send<C: EbpfContext>(ctx: &C, task: Task, h: Header, record: &SocketRecord) {
    send_full(ctx, task, h, 0, 0, 0, record)
}

#[inline(always)]
pub fn send_full<C: EbpfContext>(
    ctx: &C,
    task: Task,
    h: Header,
    flags: u16,
    arg2: u64,
    arg3: u64,
    record: &SocketRecord,
) {
    if !submit(task, h, flags, arg2, arg3, record) && first_loss(LossCause::RingBufFull) {
        warn!(ctx, "sockleak: ring buffer full, events are being dropped");
    }
}

/// Sends one event without a program context (bpf_loop bodies). False when the ring buffer
/// was full (the loss is counted).
#[inline(always)]
pub fn submit(
    task: Task,
    h: Header,
    flags: u16,
    arg2: u64,
    arg3: u64,
    record: &SocketRecord,
) -> bool {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(Event {
                ts_ns: now(),
                tgid: task.tgid,
                tid: task.tid,
                kind: h.kind as u8,
                syscall: h.syscall as u8,
                flags,
                fd: h.fd,
                arg: h.arg,
                arg2,
                arg3,
                record: *record,
            });
            // Batch: wake the reader only once enough is queued (it also drains on a timer).
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= wakeup_bytes() {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(flags);
            true
        }
        None => {
            count_loss(LossCause::RingBufFull);
            false
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
    how: StackHow,
    errno: i64,
    fd: i32,
    record: &mut SocketRecord,
) {
    if benign(errno) {
        return;
    }
    stack::capture(ctx, regs, task, how, record);
    record.tid = task.tid;
    record.created_ns = now();
    let h = Header {
        kind: EventKind::Failure,
        syscall,
        fd,
        arg: errno,
    };
    send(ctx, task, h, record);
}

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// Bytes of a sockaddr kept: family, then port and address (inet) or the path (unix).
const SOCKADDR_MAX: usize = 2 + ENDPOINT_ADDR_LEN;

/// Reads a sockaddr the process passed in or got back, in one user read bounded by its length.
/// Unknown families keep only the family.
#[inline(always)]
pub fn read_sockaddr(ptr: u64, len: u64) -> Endpoint {
    let mut ep = Endpoint::UNKNOWN;
    if ptr == 0 || len < 2 {
        return ep;
    }
    let mut raw = [0u8; SOCKADDR_MAX];
    let n = if len > SOCKADDR_MAX as u64 {
        SOCKADDR_MAX as u32
    } else {
        len as u32
    };
    if unsafe { bpf_probe_read_user(raw.as_mut_ptr().cast(), n, ptr as *const core::ffi::c_void) }
        != 0
    {
        return ep;
    }
    ep.family = u16::from_ne_bytes([raw[0], raw[1]]);
    match ep.family {
        // sockaddr_in: family, port (network order), addr.
        AF_INET if n >= 8 => {
            ep.port = u16::from_be_bytes([raw[2], raw[3]]);
            ep.addr[..4].copy_from_slice(&raw[4..8]);
        }
        // sockaddr_in6: family, port, flowinfo, addr[16].
        AF_INET6 if n >= 24 => {
            ep.port = u16::from_be_bytes([raw[2], raw[3]]);
            ep.addr[..16].copy_from_slice(&raw[8..24]);
        }
        AF_UNIX => ep.addr[..ENDPOINT_ADDR_LEN].copy_from_slice(&raw[2..SOCKADDR_MAX]),
        _ => {}
    }
    ep
}
