//! Maps and load-time globals. Userspace may resize LIVE, STACKS and EVENTS at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use sockleak_common::{
    counters::{LOSS_CAUSES, LossCause},
    kernel::{Offsets, UringKey, UringSite},
    origin::{GoConn, GoDial, GoLayout, NodeClosed, NodeHandle, ObjectKey, OriginSite},
    runtime::{JvmProc, PyProc, RtStack},
    socket::{DestKey, DestStats, GoroutineKey, SockKey, SocketRecord, StackKey},
    target::{
        CgroupTarget, Clock, ClockSample, Control, FILTER_WORDS, MAX_CGROUPS, MAX_DENIED_CGROUPS,
        Target,
    },
};

/// Reads a global userspace set before load. `read_volatile` keeps the compiler from folding
/// the default; the verifier still sees the frozen value as a constant.
macro_rules! global {
    ($name:ident: $ty:ty = $default:expr, $getter:ident) => {
        #[unsafe(no_mangle)]
        static $name: $ty = $default;
        #[inline(always)]
        pub fn $getter() -> $ty {
            unsafe { core::ptr::read_volatile(&$name) }
        }
    };
}

global!(TRACE_ALL: u8 = 0, trace_all_raw);
global!(CAPTURE_STACKS: u8 = 1, capture_stacks_raw);
global!(N_CGROUPS: u32 = 0, n_cgroups);
global!(WAKEUP_BYTES: u64 = 0, wakeup_bytes);
global!(STACK_SAMPLE: u32 = 1, stack_sample);
global!(STACK_COPY_BYTES: u32 = 0, stack_copy_bytes);
global!(EXIT_GROUP_DEAD_OFFSET: u32 = 0, exit_group_dead_offset);
// sockleak's own pid: `--all` leaves it out.
global!(SELF_TGID: u32 = 0, self_tgid);
// task_struct.thread.fsbase (x86_64), from BTF; 0: unknown.
global!(TASK_FSBASE_OFFSET: u32 = 0, task_fsbase_offset);
global!(
    OFFSETS: Offsets = Offsets {
        valid: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        fdt_open_fds: 0,
        file_inode: 0,
        file_private: 0,
        inode_private: 0,
        inode_mode: 0,
        pid_numbers: 0,
        req_opcode: 0,
        req_cmd: 0,
        accept_file_slot: 0,
        socket_file_slot: 0,
        close_fd: 0,
        close_file_slot: 0,
        _pad: 0,
    },
    offsets
);

#[inline(always)]
pub fn trace_all() -> bool {
    trace_all_raw() != 0
}

#[inline(always)]
pub fn capture_stacks() -> bool {
    capture_stacks_raw() != 0
}

const BPF_F_NO_PREALLOC: u32 = 1;

/// tgid -> what is traced and counted for it. Changes only when processes come and go, so it
/// is not preallocated: memory follows the number of traced processes.
#[map]
pub static TARGETS: HashMap<u32, Target> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// tgid -> a change userspace asks for (TARGETS entries are only written by the kernel once
/// they exist, so their counters never race with a userspace rewrite).
#[map]
pub static CONTROL: HashMap<u32, Control> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// One bit per pid, set while the process is traced (see `target::FILTER_BITS`); userspace
/// sizes it for the host's pid_max. Userspace sets bits only before attach, the kernel after.
#[map]
pub static TRACED_BITS: Array<[u64; FILTER_WORDS]> = Array::with_max_entries(1024, 0);

/// One bit per pid, set while the process is fork-pending (same shape and rules).
#[map]
pub static PENDING_BITS: Array<[u64; FILTER_WORDS]> = Array::with_max_entries(1024, 0);

/// With `--cgroup`: one bit per pid found outside every traced cgroup, so its next sockets
/// skip the cgroup check. A cache of negative answers: userspace clears it every interval and
/// exec clears a process's bit (a process moved into a traced cgroup is found again).
#[map]
pub static OUTSIDE_BITS: Array<[u64; FILTER_WORDS]> = Array::with_max_entries(1024, 0);

/// Jiffies to ns (see `target::Clock`), written by userspace before attach.
#[map]
pub static CLOCK: Array<Clock> = Array::with_max_entries(1, 0);

/// Calibration: the clock probe's last reading.
#[map]
pub static CLOCK_SAMPLE: Array<ClockSample> = Array::with_max_entries(1, 0);

/// Traced cgroup subtrees, filled by userspace before attach.
#[map]
pub static CGROUPS: Array<CgroupTarget> = Array::with_max_entries(MAX_CGROUPS, 0);

/// cgroup id -> 0: cgroups below a FILTERED target whose tasks are not traced (containers that
/// match no Kubernetes filter). Written by userspace while tracing; read only when a process
/// not yet traced makes a socket.
#[map]
pub static DENIED_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(MAX_DENIED_CGROUPS, BPF_F_NO_PREALLOC);

/// Live socket fds of traced processes. Preallocated: an allocation per insert cost more on
/// the hot path than the memory saved (userspace sizes it with --max-sockets).
#[map]
pub static LIVE: HashMap<SockKey, SocketRecord> = HashMap::with_max_entries(131_072, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Copies of user stacks for processes without frame pointers (see stack.rs), apart from
/// EVENTS: they are large and must not crowd out the events.
#[map]
pub static STACK_COPIES: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// [0]: the CONTROL generation (userspace bumps it after writing CONTROL).
#[map]
pub static CONTROL_GEN: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// (tgid, hash of the frame-pointer chain) -> stack id: a stack seen before costs a chain walk
/// and a lookup instead of the kernel's full stack capture.
#[map]
pub static STACK_CACHE: LruHashMap<StackKey, i32> = LruHashMap::with_max_entries(16384, 0);

/// (tgid, leaf caller) -> the latest walked stack id, for `--stack-sample`.
#[map]
pub static LAST_STACK: LruHashMap<StackKey, i32> = LruHashMap::with_max_entries(16384, 0);

/// Connects per (process, destination): what TIME_WAIT churn and self-connects are judged by.
#[map]
pub static DESTS: LruHashMap<DestKey, DestStats> = LruHashMap::with_max_entries(16384, 0);

/// (process, goroutine) -> the dial in progress there (see golang.rs).
#[map]
pub static GO_DIALS: LruHashMap<GoroutineKey, GoDial> = LruHashMap::with_max_entries(8192, 0);

/// (process, `*wantConn`) -> the stack of the request that queued the dial (golang.rs).
#[map]
pub static GO_WANTS: LruHashMap<ObjectKey, OriginSite> = LruHashMap::with_max_entries(8192, 0);

/// (process, `*persistConn`) -> the socket it was delivered with (golang.rs): read only for
/// connections whose `net.Conn` the typed chain cannot follow.
#[map]
pub static GO_CONNS: LruHashMap<ObjectKey, GoConn> = LruHashMap::with_max_entries(8192, 0);

/// tgid -> where its Go binary keeps what the origin probes read; written by userspace before
/// it attaches them.
#[map]
pub static GO_LAYOUT: HashMap<u32, GoLayout> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// (process, libuv TCP handle) -> its origin (node.rs). Handle addresses are reused: every
/// `uv_tcp_init` overwrites, `uv_close` deletes.
#[map]
pub static NODE_HANDLES: LruHashMap<ObjectKey, NodeHandle> = LruHashMap::with_max_entries(16384, 0);

/// tid -> the handle whose `uv_tcp_connect`/`uv_tcp_bind` runs on it (node.rs).
#[map]
pub static NODE_CUR: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// tid -> the origin of the connected TCP handle it closed last, since its last connect.
#[map]
pub static NODE_CLOSED: LruHashMap<u32, NodeClosed> = LruHashMap::with_max_entries(4096, 0);

/// In-flight io_uring socket-making requests, from submission to (last) completion.
#[map]
pub static URING_SITES: LruHashMap<UringKey, UringSite> = LruHashMap::with_max_entries(8192, 0);

#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_CAUSES, 0);

/// Per-CPU scratch: [0] stack-sampling counter, [1] CONTROL check counter, [2] stack copies,
/// [3] runtime stacks.
#[map]
pub static TICKS: PerCpuArray<u32> = PerCpuArray::with_max_entries(4, 0);

/// tgid -> a CPython process's layout (see runtime.rs, python.rs).
#[map]
pub static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// tgid -> a HotSpot JVM's layout (see hotspot.rs).
#[map]
pub static JVM_PROCS: HashMap<u32, JvmProc> = HashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// New stacks with runtime frames, for userspace to name (see runtime.rs): one record per
/// new interpreted call path, apart from EVENTS.
#[map]
pub static RT_STACKS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU scratch: the runtime stack being walked (too big for the BPF stack).
#[map]
pub static RT_SCRATCH: PerCpuArray<RtStack> = PerCpuArray::with_max_entries(1, 0);

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

/// Whether exactly one loss of `cause` was counted on this CPU so far (log it once).
#[inline(always)]
pub fn first_loss(cause: LossCause) -> bool {
    LOSSES.get(cause as u32).is_some_and(|n| *n == 1)
}

/// Counts `n` losses of one cause.
#[inline(always)]
pub fn count_loss_n(cause: LossCause, n: u64) {
    if let Some(p) = LOSSES.get_ptr_mut(cause as u32) {
        unsafe { *p += n };
    }
}

/// Increments a per-CPU tick counter and returns its new value.
#[inline(always)]
pub fn tick(i: u32) -> u32 {
    match TICKS.get_ptr_mut(i) {
        Some(p) => unsafe {
            *p = (*p).wrapping_add(1);
            *p
        },
        None => 0,
    }
}
