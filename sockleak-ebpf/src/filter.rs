//! Which tasks cost map work. Every path first tests the process's bit in TRACED_BITS: an
//! untraced process pays that and nothing else. Paths that count (a new socket) look up the
//! process's TARGETS entry; paths that only remove (close) do not, unless the process is
//! fork-pending (PENDING_BITS), where userspace needs to hear of them.

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
    },
    maps::Array,
};
use sockleak_common::target::{
    FILTER_BITS, FILTER_WORDS, MAX_CGROUPS, Target, UNCHANGED, cgroup_flag, stack_mode, state,
};

use crate::{
    atomic::{add_u32, add_u64, and_u64, or_u64},
    maps::{
        CGROUPS, CONTROL, CONTROL_GEN, DENIED_CGROUPS, OUTSIDE_BITS, PENDING_BITS, TARGETS,
        TRACED_BITS, n_cgroups, tick, trace_all,
    },
};

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

/// The first test of every hot program, kept apart from its body: an untraced process runs a
/// few instructions in one place and returns, while the body (kilobytes of code once inlined)
/// is a BPF subprogram it never reaches. With the body inlined, the early return jumped over
/// it to the epilogue and an untraced syscall paid for the cache lines of both ends (measured:
/// 40-50 ns more per run than bpftrace's `pid ==` filter on the largest programs).
pub mod gate {
    use super::{OUTSIDE_BITS, current, is_traced, n_cgroups, test, trace_all};

    /// Hooks that only follow processes already traced (close, connect, dup, ...).
    #[inline(always)]
    pub fn traced_only() -> bool {
        is_traced(current().tgid)
    }

    /// Hooks that may start tracing a process (a new socket under `--all` or `--cgroup`).
    /// Frozen globals make the `--pid` case a single bit test.
    #[inline(always)]
    pub fn may_create() -> bool {
        let tgid = current().tgid;
        is_traced(tgid) || trace_all() || (n_cgroups() > 0 && !test(&OUTSIDE_BITS, tgid))
    }
}

/// How a process's stacks are taken: its `target::stack_mode`, its `target::flag` bits (the
/// runtimes whose frames are walked) and its exec generation.
#[derive(Clone, Copy, Default)]
pub struct StackHow {
    pub mode: u8,
    pub flags: u8,
    pub exec_gen: u8,
}

impl StackHow {
    /// A frame-pointer walk with no runtime frames: the origin probes' (Go keeps frame
    /// pointers; Node's libuv entry is native code reached from V8's JIT).
    pub const FRAME_POINTERS: StackHow = StackHow {
        mode: stack_mode::FRAME_POINTERS,
        flags: 0,
        exec_gen: 0,
    };

    /// Packed with the process id in one u64, for global BPF functions (which take scalars).
    #[inline(always)]
    pub fn pack(self, tgid: u32) -> u64 {
        (u64::from(tgid) << 32)
            | (u64::from(self.exec_gen) << 16)
            | (u64::from(self.flags) << 8)
            | u64::from(self.mode)
    }

    #[inline(always)]
    pub fn unpack(v: u64) -> (u32, StackHow) {
        (
            (v >> 32) as u32,
            StackHow {
                mode: v as u8,
                flags: (v >> 8) as u8,
                exec_gen: (v >> 16) as u8,
            },
        )
    }
}

/// A traced process's TARGETS entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Traced(*mut Target);

impl Traced {
    #[inline(always)]
    pub fn pending(&self) -> bool {
        unsafe { (*self.0).state == state::FORK_PENDING }
    }

    #[inline(always)]
    pub fn stack_mode(&self) -> u8 {
        unsafe { (*self.0).stack_mode }
    }

    /// What taking one of its stacks needs to know.
    #[inline(always)]
    pub fn stack_how(&self) -> StackHow {
        let t = unsafe { &*self.0 };
        StackHow {
            mode: t.stack_mode,
            flags: t.flags,
            exec_gen: t.exec_gen,
        }
    }

    /// The process exec'd: layouts found for its old image no longer apply.
    #[inline(always)]
    pub fn exec_happened(&self) {
        unsafe { (*self.0).exec_gen = (*self.0).exec_gen.wrapping_add(1) };
    }

    #[inline(always)]
    pub fn flags(&self) -> u8 {
        unsafe { (*self.0).flags }
    }

    /// Counts a socket fd added to LIVE (threads of one process may race: atomic).
    #[inline(always)]
    pub fn opened(&self) {
        add_u64(unsafe { &raw mut (*self.0).opened }, 1);
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

/// (array entry, word, bit) of a pid in a bit filter.
#[inline(always)]
fn bit(tgid: u32) -> (u32, usize, u64) {
    let b = tgid % FILTER_BITS;
    (tgid / FILTER_BITS, (b / 64) as usize, 1u64 << (b % 64))
}

#[inline(always)]
fn test(bits: &Array<[u64; FILTER_WORDS]>, tgid: u32) -> bool {
    let (entry, word, mask) = bit(tgid);
    match bits.get(entry) {
        Some(b) => b.get(word).is_some_and(|w| w & mask != 0),
        // A pid beyond the filter (pid_max raised since start): the lookup decides.
        None => true,
    }
}

#[inline(always)]
fn set(bits: &Array<[u64; FILTER_WORDS]>, tgid: u32, on: bool) {
    let (entry, word, mask) = bit(tgid);
    if let Some(b) = bits.get_ptr_mut(entry)
        && let Some(w) = unsafe { (*b).get_mut(word) }
    {
        if on {
            or_u64(w, mask);
        } else {
            and_u64(w, !mask);
        }
    }
}

/// False when `tgid` is certainly not traced.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    test(&TRACED_BITS, tgid)
}

/// Whether `tgid` may be fork-pending (then `traced` tells for sure).
#[inline(always)]
pub fn maybe_pending(tgid: u32) -> bool {
    test(&PENDING_BITS, tgid)
}

/// Marks a process as traced, and as pending or not.
#[inline(always)]
pub fn mark(tgid: u32, pending: bool) {
    set(&TRACED_BITS, tgid, true);
    set(&PENDING_BITS, tgid, pending);
}

/// Clears a process from the filters (it exited).
#[inline(always)]
pub fn unmark(tgid: u32) {
    set(&TRACED_BITS, tgid, false);
    set(&PENDING_BITS, tgid, false);
}

/// Applies a change userspace asked for: on every lookup while the process is fork-pending
/// (its seeding finishing is what it waits for), at once after userspace bumped the CONTROL
/// generation (an array read), and otherwise on one in 64 per CPU (a generation missed by
/// wrapping around).
#[inline(always)]
fn apply_control(tgid: u32, t: *mut Target) {
    let generation = CONTROL_GEN.get(0).map_or(0, |g| *g as u8);
    if unsafe { (*t).state } != state::FORK_PENDING
        && unsafe { (*t).ctl_gen } == generation
        && tick(1) % 64 != 0
    {
        return;
    }
    unsafe { (*t).ctl_gen = generation };
    let Some(c) = (unsafe { CONTROL.get(tgid) }) else {
        return;
    };
    let c = *c;
    unsafe {
        if c.state != UNCHANGED {
            (*t).state = c.state;
            set(&PENDING_BITS, tgid, c.state == state::FORK_PENDING);
        }
        if c.stack_mode != UNCHANGED {
            (*t).stack_mode = c.stack_mode;
        }
        if c.flags != UNCHANGED {
            (*t).flags = c.flags;
        }
    }
    let _ = CONTROL.remove(tgid);
}

/// The entry of a traced process.
#[inline(always)]
pub fn traced(tgid: u32) -> Option<Traced> {
    if !is_traced(tgid) {
        return None;
    }
    let t = TARGETS.get_ptr_mut(tgid)?;
    apply_control(tgid, t);
    Some(Traced(t))
}

/// Whether a traced process is fork-pending. The bit test first: an active process needs no
/// lookup.
#[inline(always)]
pub fn pending(tgid: u32) -> bool {
    maybe_pending(tgid) && traced(tgid).is_some_and(|t| t.pending())
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

/// Whether `--all` or a traced cgroup covers the current task. A process found outside every
/// traced cgroup is remembered (OUTSIDE_BITS), so its next sockets cost a bit test.
#[inline(always)]
pub fn creatable(tgid: u32) -> bool {
    if trace_all() {
        return true;
    }
    if n_cgroups() == 0 || test(&OUTSIDE_BITS, tgid) {
        return false;
    }
    if in_target_cgroup() {
        return true;
    }
    set(&OUTSIDE_BITS, tgid, true);
    false
}

/// Forgets that a process was outside the traced cgroups (it exec'd: container runtimes move a
/// process into the container's cgroup, then exec its entry point).
#[inline(always)]
pub fn maybe_inside_now(tgid: u32) {
    if n_cgroups() > 0 {
        set(&OUTSIDE_BITS, tgid, false);
    }
}

/// A new entry for a process `--all` or a traced cgroup covers.
#[inline(always)]
pub fn create(tgid: u32) -> Option<Traced> {
    if tgid == crate::maps::self_tgid() || !creatable(tgid) {
        return None;
    }
    // No entry: the process held no socket sockleak knows, so nothing is pending for it.
    let _ = TARGETS.insert(tgid, Target::new(state::ACTIVE, 0), BPF_NOEXIST);
    mark(tgid, false);
    TARGETS.get_ptr_mut(tgid).map(Traced)
}

const BPF_NOEXIST: u64 = 1;

/// Whether the current task lives in a traced cgroup subtree. Comparing the ancestor at the
/// target's level covers cgroups created below it after sockleak started. Below a FILTERED
/// target (a pods root) the task's own cgroup must not be denied: a container userspace has
/// not looked up yet is traced from its first socket, one that matches no filter is not.
#[inline(always)]
fn in_target_cgroup() -> bool {
    let n = n_cgroups();
    let mut filtered = false;
    for i in 0..MAX_CGROUPS {
        if i >= n {
            break;
        }
        let Some(t) = CGROUPS.get(i) else { break };
        if unsafe { bpf_get_current_ancestor_cgroup_id(t.level as i32) } == t.id {
            if t.flags & cgroup_flag::FILTERED == 0 {
                return true;
            }
            filtered = true;
        }
    }
    filtered && unsafe { DENIED_CGROUPS.get(&bpf_get_current_cgroup_id()) }.is_none()
}
