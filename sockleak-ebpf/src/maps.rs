//! Maps and load-time globals. Userspace may resize LIVE and STACKS at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use sockleak_common::{
    counters::{LOSS_CAUSES, LossCause},
    socket::{SockKey, SocketRecord, StateChange},
    target::{CgroupTarget, MAX_CGROUPS},
};

/// Set by userspace before load; `read_volatile` keeps the compiler from folding the defaults.
#[unsafe(no_mangle)]
static TRACE_ALL: u8 = 0;
#[unsafe(no_mangle)]
static CAPTURE_STACKS: u8 = 1;

#[inline(always)]
pub fn trace_all() -> bool {
    unsafe { core::ptr::read_volatile(&TRACE_ALL) != 0 }
}

#[unsafe(no_mangle)]
static N_CGROUPS: u32 = 0;

/// Unread bytes in EVENTS past which a submit wakes the reader (userspace sets ring size / 8).
/// Below it events are batched: a wakeup per event costs more than the rest of the hot path.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) }
}

/// Number of cgroup subtrees traced (`--cgroup`, `--container`).
#[inline(always)]
pub fn n_cgroups() -> u32 {
    unsafe { core::ptr::read_volatile(&N_CGROUPS) }
}

/// Traced cgroup subtrees, filled by userspace before attach.
#[map]
pub static CGROUPS: Array<CgroupTarget> = Array::with_max_entries(MAX_CGROUPS, 0);

/// Capture a stack for 1 in this many creations (per CPU); 1 or 0: every one.
#[unsafe(no_mangle)]
static STACK_SAMPLE: u32 = 1;

#[inline(always)]
pub fn stack_sample() -> u32 {
    unsafe { core::ptr::read_volatile(&STACK_SAMPLE) }
}

/// Per-CPU creation counter for stack sampling.
#[map]
pub static SAMPLE_COUNTER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn capture_stacks() -> bool {
    unsafe { core::ptr::read_volatile(&CAPTURE_STACKS) != 0 }
}

/// tgid -> target state (see `sockleak_common::target::state`). Changes only at fork, exit and
/// start-up, so it is not preallocated: memory follows the number of targets.
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

const BPF_F_NO_PREALLOC: u32 = 1;

/// Live socket fds of traced processes. Preallocated: an allocation per insert cost more on
/// the hot path than the memory saved (userspace sizes it with --max-sockets).
#[map]
pub static LIVE: HashMap<SockKey, SocketRecord> = HashMap::with_max_entries(131_072, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// Socket cookie -> when the TCP socket entered its current state (host-wide, bounded).
#[map]
pub static TCP_STATES: LruHashMap<u64, StateChange> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_CAUSES, 0);

/// Counts something the kernel side could not record. Returns true the first time on this CPU,
/// so callers can log once instead of flooding.
#[inline(always)]
pub fn count_loss(cause: LossCause) -> bool {
    match LOSSES.get_ptr_mut(cause as u32) {
        Some(p) => unsafe {
            *p += 1;
            *p == 1
        },
        None => false,
    }
}
