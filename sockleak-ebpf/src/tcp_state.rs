//! When each TCP socket entered its current state, so a report can say "in CLOSE_WAIT for
//! 41 min". State changes happen in softirq context (any task), so they cannot be filtered by
//! target; one LRU update per change keeps the cost bounded host-wide.

use aya_ebpf::{
    cty::c_void, helpers::generated::bpf_get_socket_cookie, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sockleak_common::socket::StateChange;

use crate::{emit::now, maps::TCP_STATES};

const TCP_CLOSE: i32 = 7;

/// tp_btf: `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`. The BTF
/// pointer lets `bpf_get_socket_cookie` give the cookie inet_diag reports for the socket.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut c_void = ctx.arg(0);
    let newstate: i32 = ctx.arg(2);
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    if newstate == TCP_CLOSE {
        let _ = TCP_STATES.remove(cookie);
    } else {
        let v = StateChange {
            ts_ns: now(),
            state: newstate as u32,
            _pad: 0,
        };
        let _ = TCP_STATES.insert(cookie, v, 0);
    }
    0
}
