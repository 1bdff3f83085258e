//! Which tasks cost map work. An untraced process pays one bit test; a traced one a hash lookup
//! whose entry also holds its counters, so the filter and the bookkeeping are one lookup.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid};
use sockleak_common::target::{FILTER_BITS, MAX_CGROUPS, Target, UNCHANGED, state};

use crate::atomic::{add_u32, add_u64, or_u64};
use crate::maps::{CGROUPS, CONTROL, TARGETS, TRACED_BITS, n_cgroups, tick, trace_all};

/// The current task, split.
#[repr(C)]
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

/// A traced process's TARGETS entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Traced(*mut Target);

impl Traced {
    #[inline(always)]
    pub fn state(&self) -> u8 {
        unsafe { (*self.0).state }
    }

    #[inline(always)]
    pub fn pending(&self) -> bool {
        self.state() == state::FORK_PENDING
    }

    #[inline(always)]
    pub fn stack_mode(&self) -> u8 {
        unsafe { (*self.0).stack_mode }
    }

    /// Counts a socket fd added to LIVE (threads of one process may race: atomic).
    #[inline(always)]
    pub fn opened(&self) {
        add_u64(unsafe { &raw mut (*self.0).opened }, 1);
    }

    #[inline(always)]
    pub fn closed(&self) {
        add_u64(unsafe { &raw mut (*self.0).closed }, 1);
    }

    #[inline(always)]
    pub fn direct_opened(&self) {
        add_u32(unsafe { &raw mut (*self.0).direct_opened }, 1);
    }

    #[inline(always)]
    pub fn direct_closed(&self) {
        add_u32(unsafe { &raw mut (*self.0).direct_closed }, 1);
    }

    #[inline(always)]
    pub fn entry(&self) -> Target {
        unsafe { *self.0 }
    }
}

#[inline(always)]
fn bit(tgid: u32) -> (u32, u64) {
    let b = tgid % FILTER_BITS;
    (b / 64, 1u64 << (b % 64))
}

/// False when `tgid` is certainly not traced.
#[inline(always)]
fn maybe_traced(tgid: u32) -> bool {
    let (word, mask) = bit(tgid);
    match TRACED_BITS.get(0) {
        Some(bits) => bits.get(word as usize).is_some_and(|w| w & mask != 0),
        // No filter: fall through to the lookup.
        None => true,
    }
}

/// Marks `tgid` as maybe traced.
#[inline(always)]
pub fn mark(tgid: u32) {
    let (word, mask) = bit(tgid);
    if let Some(bits) = TRACED_BITS.get_ptr_mut(0)
        && let Some(w) = unsafe { (*bits).get_mut(word as usize) }
    {
        or_u64(w, mask);
    }
}

/// Applies a change userspace asked for: on every event of a fork-pending process (its seeding
/// finishing is what it waits for), otherwise on one event in 64 per CPU.
#[inline(always)]
fn apply_control(tgid: u32, t: *mut Target) {
    if unsafe { (*t).state } != state::FORK_PENDING && tick(1) % 64 != 0 {
        return;
    }
    let Some(c) = (unsafe { CONTROL.get(tgid) }) else {
        return;
    };
    let c = *c;
    unsafe {
        if c.state != UNCHANGED {
            (*t).state = c.state;
        }
        if c.stack_mode != UNCHANGED {
            (*t).stack_mode = c.stack_mode;
        }
    }
    let _ = CONTROL.remove(tgid);
}

/// The entry of a traced process, for paths that only matter when it already holds sockets
/// (close, dup, connect, exit).
#[inline(always)]
pub fn traced(tgid: u32) -> Option<Traced> {
    if !maybe_traced(tgid) {
        return None;
    }
    let t = TARGETS.get_ptr_mut(tgid)?;
    apply_control(tgid, t);
    Some(Traced(t))
}

/// The entry of a process about to get a socket: an existing one, or a new one when `--all`
/// or a traced cgroup covers the current task.
#[inline(always)]
pub fn traced_or_new(tgid: u32) -> Option<Traced> {
    match traced(tgid) {
        Some(t) => Some(t),
        None => create(tgid),
    }
}

/// Whether `--all` or a traced cgroup covers the current task.
#[inline(always)]
pub fn creatable() -> bool {
    trace_all() || in_target_cgroup()
}

/// A new entry for a process `--all` or a traced cgroup covers.
#[inline(always)]
pub fn create(tgid: u32) -> Option<Traced> {
    if !creatable() {
        return None;
    }
    // No entry: the process held no socket sockleak knows, so nothing is pending for it.
    let _ = TARGETS.insert(tgid, Target::new(state::ACTIVE, 0), BPF_NOEXIST);
    mark(tgid);
    TARGETS.get_ptr_mut(tgid).map(Traced)
}

const BPF_NOEXIST: u64 = 1;

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
