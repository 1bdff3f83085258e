//! Node.js (libuv TCP): `net.connect` (and `http.get` through an Agent) makes its libuv handle
//! synchronously, on the user's tick, and the socket on a later one. Uprobes attached per
//! process by userspace (sockleak/src/symbols/nodeuv.rs), at libuv's exported functions:
//!
//! - `uv_tcp_init(loop, handle)` (and `uv_tcp_init_ex`, which a shared libuv's `uv_tcp_init`
//!   calls): the user's stack, by handle (NODE_HANDLES). Handle memory is reused, so every
//!   init overwrites.
//! - `uv_tcp_connect(req, handle, ...)` / `uv_tcp_bind(handle, ...)` and their returns: the
//!   thread is making that handle's socket (NODE_CUR); `socket()` inside takes the handle's
//!   origin (`origin` below, from the socket path).
//! - `uv_close(handle, cb)` of a TCP handle: the entry goes; a connected one's origin is kept
//!   for the thread's next connect (NODE_CLOSED): a happy-eyeballs retry is a handle Node makes
//!   itself on a later tick, and inherits the attempt it replaces (userspace decides, from
//!   the retry's own stack, whether it is one).
//!
//! Origin stacks are frame-pointer walks whatever the process's stack mode: node, V8's
//! builtins and its JIT code keep frame pointers.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sockleak_common::{
    origin::{ConnOrigin, NodeClosed, NodeHandle, ObjectKey, UV_HANDLE_TYPE_OFFSET, UV_TCP, join},
    socket::NO_STACK,
    target::flag,
};

use crate::{
    args::Regs,
    filter::{StackHow, Task, Traced, current, is_traced},
    maps::{NODE_CLOSED, NODE_CUR, NODE_HANDLES},
    stack,
};

#[inline(always)]
fn handle_key(handle: u64, tgid: u32) -> ObjectKey {
    ObjectKey {
        addr: handle,
        tgid,
        _pad: 0,
    }
}

#[uprobe]
pub fn node_tcp_init(ctx: ProbeContext) -> u32 {
    let _ = tcp_init(&ctx);
    0
}

fn tcp_init(ctx: &ProbeContext) -> Option<()> {
    let task = current();
    if !is_traced(task.tgid) {
        return None;
    }
    let regs = Regs::current()?;
    let handle = regs.c_arg(1);
    let (stack_id, caller) = stack::site(ctx, &regs, task, StackHow::FRAME_POINTERS);
    let h = NodeHandle {
        caller,
        stack_id,
        alt_stack_id: NO_STACK,
        alt2_stack_id: NO_STACK,
        connected: 0,
    };
    let _ = NODE_HANDLES.insert(handle_key(handle, task.tgid), h, 0);
    Some(())
}

/// The thread starts making `handle`'s socket; a connected handle it closed since its last
/// connect is what this one may inherit.
#[inline(always)]
fn begin(task: Task, handle: u64) {
    let _ = NODE_CUR.insert(task.tid, handle, 0);
    if let Some(closed) = unsafe { NODE_CLOSED.get(task.tid) }.copied() {
        let _ = NODE_CLOSED.remove(task.tid);
        if let Some(h) = NODE_HANDLES.get_ptr_mut(handle_key(handle, task.tgid)) {
            unsafe {
                if (*h).connected == 0 && (*h).alt_stack_id == NO_STACK {
                    (*h).alt_stack_id = closed.stack_id;
                    (*h).alt2_stack_id = closed.alt_stack_id;
                }
            }
        }
    }
}

#[uprobe]
pub fn node_tcp_connect(_ctx: ProbeContext) -> u32 {
    let task = current();
    if is_traced(task.tgid)
        && let Some(regs) = Regs::current()
    {
        begin(task, regs.c_arg(1));
    }
    0
}

#[uprobe]
pub fn node_tcp_bind(_ctx: ProbeContext) -> u32 {
    let task = current();
    if is_traced(task.tgid)
        && let Some(regs) = Regs::current()
    {
        begin(task, regs.c_arg(0));
    }
    0
}

/// `uv_tcp_connect` / `uv_tcp_bind` returned: no socket the thread makes now is the handle's.
#[uretprobe]
pub fn node_tcp_done(_ctx: RetProbeContext) -> u32 {
    let task = current();
    if is_traced(task.tgid) {
        let _ = NODE_CUR.remove(task.tid);
    }
    0
}

#[uprobe]
pub fn node_close(_ctx: ProbeContext) -> u32 {
    let _ = close();
    0
}

fn close() -> Option<()> {
    let task = current();
    if !is_traced(task.tgid) {
        return None;
    }
    let regs = Regs::current()?;
    let handle = regs.c_arg(0);
    let kind: u32 =
        unsafe { bpf_probe_read_user((handle + UV_HANDLE_TYPE_OFFSET) as *const u32) }.ok()?;
    if kind != UV_TCP {
        return None;
    }
    let key = handle_key(handle, task.tgid);
    let h = unsafe { NODE_HANDLES.get(key) }.copied()?;
    let _ = NODE_HANDLES.remove(key);
    if h.connected != 0 {
        let closed = NodeClosed {
            stack_id: h.stack_id,
            alt_stack_id: h.alt_stack_id,
        };
        let _ = NODE_CLOSED.insert(task.tid, closed, 0);
    }
    Some(())
}

/// The origin of a socket the current thread makes, if it is a libuv TCP handle's.
#[inline(always)]
pub fn origin(t: &Traced, task: Task) -> Option<ConnOrigin> {
    if t.flags() & flag::NODE_UV == 0 {
        return None;
    }
    let handle = unsafe { NODE_CUR.get(task.tid) }.copied()?;
    let h = NODE_HANDLES.get_ptr_mut(handle_key(handle, task.tgid))?;
    unsafe {
        (*h).connected = 1;
        if (*h).stack_id == NO_STACK && (*h).alt_stack_id == NO_STACK {
            return None;
        }
        Some(ConnOrigin {
            caller: (*h).caller,
            stack_id: (*h).stack_id,
            alt_stack_id: (*h).alt_stack_id,
            alt2_stack_id: (*h).alt2_stack_id,
            join: join::NODE_HANDLE,
            state: 0,
            _pad: [0; 2],
        })
    }
}
