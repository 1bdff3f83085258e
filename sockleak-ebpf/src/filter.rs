//! Which tasks cost map work: everything else returns after one hash lookup.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sockleak_common::target::state;

use crate::maps::{TARGETS, trace_all};

/// The current task, split.
#[derive(Clone, Copy)]
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
}

#[inline(always)]
pub fn current() -> Task {
    let v = bpf_get_current_pid_tgid();
    Task {
        tgid: (v >> 32) as u32,
        tid: v as u32,
    }
}

/// Target state of `tgid`, or None when it is not traced.
#[inline(always)]
pub fn target_state(tgid: u32) -> Option<u8> {
    if let Some(s) = unsafe { TARGETS.get(tgid) } {
        return Some(*s);
    }
    if trace_all() {
        return Some(state::ACTIVE);
    }
    None
}
