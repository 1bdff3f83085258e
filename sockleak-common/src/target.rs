//! Which processes the kernel programs trace.

/// Value in the TARGETS map (key: tgid).
pub mod state {
    /// Traced; the live-socket map is authoritative for its fds.
    pub const ACTIVE: u8 = 1;
    /// Forked from a traced process; userspace has not yet copied the inherited fds into the
    /// live-socket map, so closes and dups of fds the map does not know must still be reported.
    pub const FORK_PENDING: u8 = 2;
}

/// Names of the read-only globals userspace sets at load time.
pub mod global {
    /// Non-zero: trace every process (`--all`).
    pub const TRACE_ALL: &str = "TRACE_ALL";
    /// Non-zero: capture a user stack for each socket and failure.
    pub const CAPTURE_STACKS: &str = "CAPTURE_STACKS";
    /// Capture a user stack for 1 in this many socket creations (1: every one).
    pub const STACK_SAMPLE: &str = "STACK_SAMPLE";
    /// Unread ring-buffer bytes past which a submit wakes the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// Number of entries used in the CGROUPS array.
    pub const N_CGROUPS: &str = "N_CGROUPS";
    /// Offset of `group_dead` in sched_process_exit records; 0 when the kernel lacks it.
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
}

/// Map names, shared so the loader cannot drift from the object.
pub mod map {
    pub const TARGETS: &str = "TARGETS";
    pub const LIVE: &str = "LIVE";
    pub const EVENTS: &str = "EVENTS";
    pub const STACKS: &str = "STACKS";
    pub const LOSSES: &str = "LOSSES";
    pub const TCP_STATES: &str = "TCP_STATES";
    pub const CGROUPS: &str = "CGROUPS";
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
    pub _pad: u32,
}
crate::assert_layout!(CgroupTarget, size = 16, fields = [u64, u32, u32]);

#[cfg(feature = "user")]
// SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
unsafe impl aya::Pod for CgroupTarget {}
