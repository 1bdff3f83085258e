//! The kernel's BPF run-time statistics, for the own-cost line's "BPF ns per socket". They
//! cost every BPF program on the host two clock reads per run while on, so sockleak turns them
//! on (BPF_ENABLE_STATS: reference counted, off again when the fd closes, even if sockleak is
//! killed) only for short windows, unless the host already has them on.

use std::os::fd::OwnedFd;

use aya::sys::{Stats, enable_stats};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Whether the host keeps run-time statistics on (`kernel.bpf_stats_enabled=1`).
pub fn on_for_host() -> bool {
    std::fs::read_to_string(SYSCTL).is_ok_and(|s| s.trim() == "1")
}

/// Statistics on for as long as this lives.
pub struct Window(#[allow(dead_code, reason = "held: closing it ends the window")] OwnedFd);

/// Turns statistics on (kernels ≥ 5.8); None when the kernel refuses.
pub fn window() -> Option<Window> {
    match enable_stats(Stats::RunTime) {
        Ok(fd) => Some(Window(fd)),
        Err(e) => {
            log::debug!("BPF run-time statistics unavailable: {e}");
            None
        }
    }
}
