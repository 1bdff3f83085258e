//! Which processes the kernel programs trace, and what they count for each.

/// `Target::state`.
pub mod state {
    /// Traced; the live-socket map is authoritative for its fds.
    pub const ACTIVE: u8 = 1;
    /// Forked from a traced process (or just added at start): userspace has not yet copied its
    /// socket fds from /proc into the live-socket map, so closes and dups of fds the map does
    /// not know must still be reported.
    pub const FORK_PENDING: u8 = 2;
}

/// `Target::stack_mode`: how a user stack is captured for a new socket.
pub mod stack_mode {
    /// Walk the frame-pointer chain (hash it; the kernel's stack map keeps each distinct stack).
    pub const FRAME_POINTERS: u8 = 0;
    /// The process's code has no frame pointers: send a copy of the top of the user stack
    /// for userspace to unwind with DWARF CFI (see `crate::stack`).
    pub const STACK_COPY: u8 = 1;
    /// The process's code has no frame pointers: walk its stack in the kernel with the
    /// binaries' compiled CFI (see `crate::unwind`); what that cannot walk is copied as in
    /// STACK_COPY.
    pub const TABLES: u8 = 2;
}

/// Value of the TARGETS map (key: tgid). Created by userspace (before a process is active) or by
/// the kernel (fork, first socket under `--all`/`--cgroup`); after creation only the kernel
/// writes it, so its counters never race with a userspace rewrite: userspace asks for changes
/// through the CONTROL map instead.
///
/// Closes are not counted: a socket's close only costs its LIVE delete, and userspace derives
/// the count (everything that was open minus what still is).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Socket fds the kernel added to the live map for this process.
    pub opened: u64,
    /// io_uring fixed-file ("direct") sockets made and closed: they are not fds.
    pub direct_opened: u32,
    pub direct_closed: u32,
    pub state: u8,
    pub stack_mode: u8,
    /// `flag::*` bits.
    pub flags: u8,
    /// The CONTROL generation this entry last looked at (see `map::CONTROL_GEN`).
    pub ctl_gen: u8,
    /// Bumped at each execve: runtime layouts userspace found (`runtime::PyProc`,
    /// `runtime::JvmProc`) carry the generation of the image they describe.
    pub exec_gen: u8,
    pub _pad: [u8; 3],
}
crate::assert_layout!(
    Target,
    size = 24,
    fields = [u64, u32, u32, u8, u8, u8, u8, u8, [u8; 3]]
);

impl Target {
    pub const fn new(state: u8, stack_mode: u8) -> Target {
        Target {
            opened: 0,
            direct_opened: 0,
            direct_closed: 0,
            state,
            stack_mode,
            flags: 0,
            ctl_gen: 0,
            exec_gen: 0,
            _pad: [0; 3],
        }
    }
}

/// `Target::flags`.
pub mod flag {
    /// A uprobe on `net/http.(*Transport).dialConn` records, per goroutine, the Transport it
    /// dials for: the socket that goroutine makes next is tagged with it (`SocketRecord::owner`).
    pub const GO_HTTP: u8 = 1;
    /// libuv's TCP functions are probed (Node): a socket made inside `uv_tcp_connect` or
    /// `uv_tcp_bind` takes its handle's origin (`crate::origin`).
    pub const NODE_UV: u8 = 2;
    /// `(*wantConn).tryDeliver` is probed too: a dial lasts until its delivery on the dial
    /// goroutine, and every socket that goroutine makes meanwhile is the dial's (without it,
    /// only the first one, as a dual-stack dial's racers make theirs elsewhere).
    pub const GO_DELIVER: u8 = 4;
    /// A CPython process: its Python frames are walked (PY_PROCS has its layout).
    pub const PYTHON: u8 = 8;
    /// A HotSpot JVM: its interpreted frames are named (JVM_PROCS has its layout).
    pub const HOTSPOT: u8 = 16;
}

/// `Control` field value meaning "leave as is".
pub const UNCHANGED: u8 = 0xff;

/// Value of the CONTROL map (key: tgid): a change userspace asks the kernel to make to a
/// process's TARGETS entry. The kernel applies it on the process's next event and deletes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    pub state: u8,
    pub stack_mode: u8,
    /// New `Target::flags` (all of them), or UNCHANGED.
    pub flags: u8,
    pub _pad: [u8; 5],
}
crate::assert_layout!(Control, size = 8, fields = [u8, u8, u8, [u8; 5]]);

/// TRACED_BITS holds one bit per pid, set while the process is traced: an untraced process
/// pays one bit test instead of a hash lookup. PENDING_BITS, same shape, marks processes whose
/// inherited sockets userspace is still copying in (`state::FORK_PENDING`). Each array entry
/// covers FILTER_BITS pids.
pub const FILTER_BITS: u32 = 4096;
pub const FILTER_WORDS: usize = (FILTER_BITS / 64) as usize;

/// TRACED_BITS entries for pids below `pid_max`.
pub const fn filter_entries(pid_max: u32) -> u32 {
    pid_max.div_ceil(FILTER_BITS)
}

/// Names of the read-only globals userspace sets at load time.
pub mod global {
    /// Non-zero: trace every process (`--all`).
    pub const TRACE_ALL: &str = "TRACE_ALL";
    /// Non-zero: capture a user stack for each socket and failure.
    pub const CAPTURE_STACKS: &str = "CAPTURE_STACKS";
    /// Capture a user stack for 1 in this many socket creations (1: every one).
    pub const STACK_SAMPLE: &str = "STACK_SAMPLE";
    /// Bytes of user stack copied for processes in `stack_mode::STACK_COPY`.
    pub const STACK_COPY_BYTES: &str = "STACK_COPY_BYTES";
    /// Unread ring-buffer bytes past which a submit wakes the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// Number of entries used in the CGROUPS array.
    pub const N_CGROUPS: &str = "N_CGROUPS";
    /// sockleak's own pid, which `--all` leaves out.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// Offset of `group_dead` in sched_process_exit records; 0 when the kernel lacks it.
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
    /// Kernel struct offsets read from BTF (see [`crate::kernel::Offsets`]).
    pub const OFFSETS: &str = "OFFSETS";
    /// How to turn jiffies into CLOCK_MONOTONIC ns (see [`Clock`]).
    pub const CLOCK: &str = "CLOCK";
    /// Offset of the user fsbase (`task_struct.thread.fsbase`) from BTF; 0: unknown, no
    /// Python frames (x86_64 only).
    pub const TASK_FSBASE_OFFSET: &str = "TASK_FSBASE_OFFSET";
}

/// Timestamps of new sockets come from jiffies (almost free) instead of bpf_ktime_get_ns (a
/// clock read, most of a socket's remaining cost): ns = base_ns + (jiffies - base_jiffies) *
/// 1e9 / hz, which lags the true time by at most one tick plus calibration error. A socket's age
/// is reported in seconds, so that is plenty; where an order against an event matters (a
/// fork-pending child), the kernel uses the precise clock. `hz` 0: always the precise clock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    pub hz: u64,
    pub base_jiffies: u64,
    pub base_ns: u64,
}
crate::assert_layout!(Clock, size = 24, fields = [u64, u64, u64]);

/// What the calibration probe writes: jiffies and CLOCK_MONOTONIC ns read together.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    pub jiffies: u64,
    pub ns: u64,
}
crate::assert_layout!(ClockSample, size = 16, fields = [u64, u64]);

/// Map names, shared so the loader cannot drift from the object.
pub mod map {
    pub const TARGETS: &str = "TARGETS";
    pub const CONTROL: &str = "CONTROL";
    pub const TRACED_BITS: &str = "TRACED_BITS";
    pub const PENDING_BITS: &str = "PENDING_BITS";
    pub const OUTSIDE_BITS: &str = "OUTSIDE_BITS";
    pub const CLOCK_SAMPLE: &str = "CLOCK_SAMPLE";
    pub const LIVE: &str = "LIVE";
    pub const EVENTS: &str = "EVENTS";
    pub const STACKS: &str = "STACKS";
    pub const STACK_CACHE: &str = "STACK_CACHE";
    pub const LOSSES: &str = "LOSSES";
    pub const CGROUPS: &str = "CGROUPS";
    pub const DENIED_CGROUPS: &str = "DENIED_CGROUPS";
    pub const DESTS: &str = "DESTS";
    pub const URING_SITES: &str = "URING_SITES";
    pub const GO_DIALS: &str = "GO_DIALS";
    /// Origins (see `crate::origin`): per-process Go layouts, and libuv handles.
    pub const GO_LAYOUT: &str = "GO_LAYOUT";
    pub const NODE_HANDLES: &str = "NODE_HANDLES";
    /// Stack copies (see `crate::stack`), a ring buffer of their own.
    pub const STACK_COPIES: &str = "STACK_COPIES";
    /// One u32: bumped by userspace after each CONTROL write, so a process's next event
    /// looks for its change at once (cheaper than a CONTROL lookup on every event).
    pub const CONTROL_GEN: &str = "CONTROL_GEN";
    /// Compiled unwind rows of every file with a table (see `crate::unwind`).
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// tgid -> its executable mappings and where their rows are.
    pub const UNWIND_PROCS: &str = "UNWIND_PROCS";
    /// Per-CPU counters of table walks (`crate::unwind::counter`).
    pub const UNWIND_COUNTS: &str = "UNWIND_COUNTS";
    /// Runtime layouts per process (see `crate::runtime`).
    pub const PY_PROCS: &str = "PY_PROCS";
    pub const JVM_PROCS: &str = "JVM_PROCS";
    /// New stacks with runtime frames (`runtime::RtStack`), a ring of their own.
    pub const RT_STACKS: &str = "RT_STACKS";
}

/// Most cgroups `--cgroup`/`--container` can name at once.
pub const MAX_CGROUPS: u32 = 8;

/// A traced cgroup v2 subtree: a task is inside when its ancestor at `level` is `id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupTarget {
    /// cgroup id (the inode number of its cgroup2 directory).
    pub id: u64,
    /// Depth below the cgroup2 root (the root is level 0).
    pub level: u32,
    /// `cgroup_flag::*` bits.
    pub flags: u32,
}

/// `CgroupTarget::flags`.
pub mod cgroup_flag {
    /// The root of a container runtime's pods (`--namespace`, `--pod`, ...): a task below it
    /// is traced unless its own cgroup is in DENIED_CGROUPS, where userspace puts the cgroups
    /// of containers that match no filter. A container started later is traced from its first
    /// socket until userspace has looked it up.
    pub const FILTERED: u32 = 1;
}

/// Capacity of DENIED_CGROUPS (cgroups of containers that match no Kubernetes filter).
pub const MAX_DENIED_CGROUPS: u32 = 16384;
crate::assert_layout!(CgroupTarget, size = 16, fields = [u64, u32, u32]);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::CgroupTarget {}
    unsafe impl aya::Pod for super::Target {}
    unsafe impl aya::Pod for super::Control {}
    unsafe impl aya::Pod for super::Clock {}
    unsafe impl aya::Pod for super::ClockSample {}
}
