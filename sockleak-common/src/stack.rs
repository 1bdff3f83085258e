//! Copies of the top of a user stack, for processes whose code has no frame pointers
//! (`target::stack_mode::STACK_COPY`): the kernel copies the registers an unwinder needs and
//! the stack above the stack pointer; userspace unwinds them with the binaries' DWARF CFI.

/// Largest copy, in bytes (a ring record holds this much; `global::STACK_COPY_BYTES` may ask
/// for less).
pub const STACK_COPY_MAX: usize = 16384;

/// A socket's `stack_id` at or above this names a stack copy (`id - COPY_ID_BASE` is the
/// copy's sequence number), not an entry of the kernel's stack map.
pub const COPY_ID_BASE: i32 = 1 << 30;

/// Whether a socket's `stack_id` names a stack copy.
pub const fn is_copy_id(id: i32) -> bool {
    id >= COPY_ID_BASE
}

/// One record of the STACK_COPIES ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackCopy {
    pub tgid: u32,
    pub tid: u32,
    /// The `stack_id` the socket (or failure) carries.
    pub id: i32,
    /// Valid bytes of `data`, read from `sp` upwards.
    pub len: u32,
    pub ip: u64,
    pub sp: u64,
    /// Frame pointer register (rbp, x29).
    pub fp: u64,
    /// Link register (x30 on arm64; 0 on x86_64).
    pub lr: u64,
    /// When a kernel table walk stopped short and this copy stands in for it
    /// (`target::stack_mode::TABLES`): why (`unwind::walk_status`), after how many frames,
    /// and at which pc. 0: an ordinary copy.
    pub walk_status: u32,
    pub walk_frames: u32,
    pub walk_stop: u64,
    pub data: [u8; STACK_COPY_MAX],
}
crate::assert_layout!(
    StackCopy,
    size = 64 + STACK_COPY_MAX,
    fields = [
        u32,
        u32,
        i32,
        u32,
        u64,
        u64,
        u64,
        u64,
        u32,
        u32,
        u64,
        [u8; STACK_COPY_MAX]
    ]
);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::StackCopy {}
}
