//! Go HTTP clients: a uprobe on `net/http.(*Transport).dialConn` in a traced Go binary notes,
//! per goroutine, the `*http.Transport` being dialed for (Go's register ABI: the receiver is
//! the first argument). The socket that goroutine makes next is tagged with it, so a report can
//! tell one Transport per request (a leak pattern) from a shared one.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use sockleak_common::{socket::GoroutineKey, target::flag};

use crate::{
    args::{Regs, go_entry},
    filter::{Traced, current, is_traced},
    maps::GO_DIALS,
};

#[uprobe]
pub fn go_dial_conn(ctx: ProbeContext) -> u32 {
    let task = current();
    if !is_traced(task.tgid) {
        return 0;
    }
    let (g, transport) = go_entry(ctx.regs as *const u64);
    let key = GoroutineKey {
        g,
        tgid: task.tgid,
        _pad: 0,
    };
    let _ = GO_DIALS.insert(key, transport, 0);
    0
}

/// The Transport the current goroutine is dialing for, if this is a Go HTTP client's dial.
#[inline(always)]
pub fn owner(t: &Traced, regs: &Regs, tgid: u32) -> u64 {
    if t.flags() & flag::GO_HTTP == 0 {
        return 0;
    }
    let key = GoroutineKey {
        g: regs.go_g(),
        tgid,
        _pad: 0,
    };
    let Some(transport) = (unsafe { GO_DIALS.get(key) }).copied() else {
        return 0;
    };
    // One dial, one connection: a later socket of a reused goroutine is not this dial's.
    let _ = GO_DIALS.remove(key);
    transport
}
