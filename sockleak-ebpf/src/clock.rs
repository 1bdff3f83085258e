//! Timestamps. A new socket's creation time comes from jiffies (see `target::Clock`): reading
//! the precise clock costs more than the rest of recording the socket. Events, and sockets of a
//! fork-pending process (whose order against its events matters), use the precise clock.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use sockleak_common::target::ClockSample;

use crate::maps::{CLOCK, CLOCK_SAMPLE};

/// CLOCK_MONOTONIC ns, precise.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC ns to within a tick, cheap.
#[inline(always)]
pub fn coarse_now() -> u64 {
    let Some(c) = CLOCK.get(0) else {
        return now();
    };
    if c.hz == 0 {
        return now();
    }
    let dj = unsafe { bpf_jiffies64() }.wrapping_sub(c.base_jiffies);
    c.base_ns + dj / c.hz * 1_000_000_000 + dj % c.hz * 1_000_000_000 / c.hz
}

/// Calibration probe: never attached, run by userspace with BPF_PROG_TEST_RUN.
#[raw_tracepoint]
pub fn clock_probe(_ctx: RawTracePointContext) -> i32 {
    let s = ClockSample {
        jiffies: unsafe { bpf_jiffies64() },
        ns: now(),
    };
    let _ = CLOCK_SAMPLE.set(0, &s, 0);
    0
}
