//! Kernel-side DWARF unwinding (`target::stack_mode::TABLES`): userspace compiles each mapped
//! file's CFI (`.eh_frame`, `.debug_frame`) into sorted 8-byte rows, places them once in the
//! UNWIND_ROWS array however many processes map the file, and gives each process the list of
//! its executable mappings (UNWIND_PROCS). The kernel walks a socket's user stack with them;
//! what the rows cannot walk falls back to a stack copy (`crate::stack`), which says where the
//! walk stopped (`StackCopy::walk_status`) so userspace can build what was missing.

use crate::event::Event;

/// A socket's `stack_id` in [WALK_ID_BASE, RT_ID_BASE) names a stack the kernel walked with
/// the tables; its frames came to userspace in the `WalkedStack` that announced it. Below the
/// runtime stacks' ids (`crate::runtime::RT_ID_BASE`), above any stack-map id.
pub const WALK_ID_BASE: i32 = 1 << 28;

/// Whether a socket's `stack_id` names a stack walked with the tables.
pub const fn is_walk_id(id: i32) -> bool {
    id >= WALK_ID_BASE && id < crate::runtime::RT_ID_BASE
}

/// Rows of one file at most (the kernel's binary search takes 23 steps).
pub const MAX_FILE_ROWS: usize = 1 << 22;

/// Frames a table walk keeps; a deeper stack is named by its innermost frames (`TRUNCATED`).
pub const WALK_MAX_FRAMES: usize = 64;

/// One unwind row: from `pc` (relative to the file's table base, see `UnwindMapping::adj`) up
/// to the next row's `pc`, how to find the caller's frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct UnwindRow {
    pub pc: u32,
    /// CFA offset in 8-byte units (RSP, RBP and PLT kinds): every x86_64 CFA offset measured
    /// is a multiple of 8.
    pub cfa_off: u16,
    /// A `row_kind`.
    pub kind: u8,
    /// The caller's rbp is saved at CFA + 8 * rbp; 0: rbp is unchanged. PLT: the threshold.
    pub rbp: i8,
}
crate::assert_layout!(UnwindRow, size = 8, fields = [u32, u16, u8, i8]);

/// `UnwindRow::kind`.
pub mod row_kind {
    /// CFA = rsp + 8 * cfa_off.
    pub const RSP: u8 = 0;
    /// CFA = rbp + 8 * cfa_off.
    pub const RBP: u8 = 1;
    /// CFA = rsp + 8 * cfa_off + (((rip & 15) >= rbp) << 3): the `.plt` expression.
    pub const PLT: u8 = 2;
    /// The return address is undefined: the outermost frame of a thread or program.
    pub const STOP: u8 = 3;
    /// No CFI covers this code.
    pub const GAP: u8 = 4;
    /// CFI the rows cannot express (another CFA register, an expression, the return address
    /// elsewhere than CFA - 8).
    pub const UNSUPPORTED: u8 = 5;
    /// A signal trampoline (an FDE with the 'S' augmentation).
    pub const SIGNAL: u8 = 6;
    pub const COUNT: usize = 7;
}

/// One executable file mapping of a process: `pc - adj` is a row pc among rows
/// `first .. first + count` of UNWIND_ROWS. `count` 0: the file has no rows (yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    /// Load bias plus the table's base vaddr.
    pub adj: u64,
    pub first: u32,
    pub count: u32,
}
crate::assert_layout!(UnwindMapping, size = 32, fields = [u64, u64, u64, u32, u32]);

/// Executable file mappings kept per process (this host's largest had 25; a JVM or a large
/// application server has more: the rest fall back to stack copies).
pub const UNWIND_MAX_MAPPINGS: usize = 64;

/// Value of UNWIND_PROCS (key: tgid): the process's executable file mappings, sorted by start.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindProc {
    pub n: u32,
    /// Changes whenever userspace rewrites the entry (a new table, an eviction, an exec, a
    /// dlopen): it tags the kernel's row cache, so stale cached rows are never used.
    pub generation: u32,
    pub maps: [UnwindMapping; UNWIND_MAX_MAPPINGS],
}
crate::assert_layout!(
    UnwindProc,
    size = 8 + 32 * UNWIND_MAX_MAPPINGS,
    fields = [u32, u32, [UnwindMapping; UNWIND_MAX_MAPPINGS]]
);

impl UnwindProc {
    pub const EMPTY: UnwindProc = UnwindProc {
        n: 0,
        generation: 0,
        maps: [UnwindMapping {
            start: 0,
            end: 0,
            adj: 0,
            first: 0,
            count: 0,
        }; UNWIND_MAX_MAPPINGS],
    };
}

/// A per-CPU cache entry of rows by absolute pc (UNWIND_CACHE): `tag` is (tgid << 32) |
/// generation of the process's `UnwindProc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnwindCacheEntry {
    pub pc: u64,
    pub tag: u64,
    pub row: UnwindRow,
}
crate::assert_layout!(UnwindCacheEntry, size = 24, fields = [u64, u64, UnwindRow]);

/// Entries of the per-CPU row cache (a power of two).
pub const UNWIND_CACHE_SLOTS: u32 = 1024;

/// Why a table walk ended.
pub mod walk_status {
    /// The outermost frame was reached (a STOP row, or a zero return address).
    pub const COMPLETE: u32 = 1;
    /// `WALK_MAX_FRAMES` frames walked: the stack is named by them.
    pub const TRUNCATED: u32 = 2;
    /// The pc is in no executable file mapping the kernel knows of (JIT code, the vDSO, a
    /// library loaded since userspace last looked).
    pub const NO_MAPPING: u32 = 3;
    /// The pc's file has no rows yet.
    pub const NO_TABLE: u32 = 4;
    /// The file has no CFI for the pc.
    pub const NO_CFI: u32 = 5;
    /// The file's CFI for the pc is beyond what the rows express.
    pub const UNSUPPORTED: u32 = 6;
    /// A signal frame.
    pub const SIGNAL: u32 = 7;
    /// The stack could not be read where the rows said the caller's frame is.
    pub const READ_FAILED: u32 = 8;
    /// The caller's frame would not be above this one: the rows do not describe this code.
    pub const BAD_FRAME: u32 = 9;

    /// Whether the walk gives a stack (anything else falls back to a copy).
    pub const fn walked(status: u32) -> bool {
        status == COMPLETE || status == TRUNCATED
    }

    pub fn as_str(status: u32) -> &'static str {
        match status {
            COMPLETE => "complete",
            TRUNCATED => "truncated",
            NO_MAPPING => "no executable file mapping",
            NO_TABLE => "no table loaded",
            NO_CFI => "no CFI",
            UNSUPPORTED => "CFI beyond the kernel tables",
            SIGNAL => "signal frame",
            READ_FAILED => "stack unreadable",
            BAD_FRAME => "CFI does not describe the code",
            _ => "unknown",
        }
    }
}

/// A `NewStack` event of a stack walked with the tables, with its frames: a ring record of its
/// own size (`Event::decode` takes only plain events).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkedStack {
    pub event: Event,
    /// The hash the kernel keys STACK_CACHE with (userspace deletes the entry to forget it).
    pub hash: u64,
    pub n: u32,
    /// A `walk_status` (COMPLETE or TRUNCATED).
    pub status: u32,
    /// Innermost first: the syscall's ip, then return addresses.
    pub ips: [u64; WALK_MAX_FRAMES],
}
crate::assert_layout!(
    WalkedStack,
    size = core::mem::size_of::<Event>() + 16 + 8 * WALK_MAX_FRAMES,
    fields = [Event, u64, u32, u32, [u64; WALK_MAX_FRAMES]]
);

/// Indexes of the UNWIND_COUNTS per-CPU array.
pub mod counter {
    /// Stacks walked with the tables (every walked socket, cached or not).
    pub const WALKED: u32 = 0;
    /// Walks that fell back to a stack copy.
    pub const FALLBACK: u32 = 1;
    /// Frames walked (the table walk's work).
    pub const FRAMES: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod user {
    use super::WalkedStack;

    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::UnwindRow {}
    unsafe impl aya::Pod for super::UnwindMapping {}
    unsafe impl aya::Pod for super::UnwindProc {}
    unsafe impl aya::Pod for super::UnwindCacheEntry {}

    impl WalkedStack {
        /// Decodes a ring record of exactly this type's size (copied: records are only 8-byte
        /// aligned). None for any other record.
        pub fn decode(bytes: &[u8]) -> Option<WalkedStack> {
            if bytes.len() != core::mem::size_of::<WalkedStack>() {
                return None;
            }
            // SAFETY: length checked; plain data, every bit pattern valid.
            Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) })
        }

        /// The frames, innermost first (at most WALK_MAX_FRAMES, whatever `n` says).
        pub fn frames(&self) -> &[u64] {
            &self.ips[..(self.n as usize).min(self.ips.len())]
        }
    }
}

#[cfg(all(test, feature = "user"))]
mod tests {
    use super::*;

    #[test]
    fn walk_ids_sit_below_copy_ids() {
        assert!(is_walk_id(WALK_ID_BASE));
        assert!(!is_walk_id(WALK_ID_BASE - 1));
        assert!(!is_walk_id(crate::stack::COPY_ID_BASE));
        assert!(!is_walk_id(crate::runtime::RT_ID_BASE));
        assert!(!crate::runtime::is_runtime_id(
            WALK_ID_BASE | (0xff << 20) | 0xf_ffff
        ));
        // The kernel makes ids as WALK_ID_BASE | cpu << 20 | seq (20 bits): all walk ids.
        assert!(is_walk_id(WALK_ID_BASE | (0xff << 20) | 0xf_ffff));
    }

    #[test]
    fn walked_stack_decodes_only_its_own_size() {
        let mut w = WalkedStack {
            event: Event::EMPTY,
            hash: 7,
            n: 3,
            status: walk_status::COMPLETE,
            ips: [0; WALK_MAX_FRAMES],
        };
        w.ips[..3].copy_from_slice(&[1, 2, 3]);
        // SAFETY: plain data without padding.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&w as *const WalkedStack).cast::<u8>(),
                core::mem::size_of::<WalkedStack>(),
            )
        };
        let back = WalkedStack::decode(bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.frames(), &[1, 2, 3]);
        assert!(WalkedStack::decode(&bytes[1..]).is_none());
        let mut huge = back;
        huge.n = 1000;
        assert_eq!(huge.frames().len(), WALK_MAX_FRAMES);
    }
}
