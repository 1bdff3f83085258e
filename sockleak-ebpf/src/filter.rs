//! Which tasks cost map work: everything else returns after one hash lookup.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid};
use sockleak_common::target::{MAX_CGROUPS, state};

use crate::maps::{CGROUPS, TARGETS, n_cgroups, trace_all};

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
    if trace_all() || in_target_cgroup() {
        return Some(state::ACTIVE);
    }
    None
}

/// Whether the current task lives in a traced cgroup subtree. Comparing the ancestor at the
/// target's level covers cgroups created below it after sockleak started.
#[inline(always)]
fn in_target_cgroup() -> bool {
    let n = n_cgroups();
    for i in 0..MAX_CGROUPS {
        if i >= n {
            break;
        }
        let Some(t) = CGROUPS.get(i) else { break };
        if unsafe { bpf_get_current_ancestor_cgroup_id(t.level as i32) } == t.id {
            return true;
        }
    }
    false
}
