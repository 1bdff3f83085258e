//! Syscall arguments at syscall exit.
//!
//! `sys_exit_*` tracepoints carry only the return value. Instead of stashing arguments in a map
//! at `sys_enter_*` (a second program and two map operations per call), read them back from the
//! user registers the kernel saved at syscall entry (`bpf_task_pt_regs`). Syscalls do not modify
//! the argument registers, and `struct pt_regs` is user-visible ABI (ptrace), so these offsets
//! are fixed per architecture rather than kernel-build specific.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_user,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};

/// Offset of `ret` in every `syscalls:sys_exit_*` record (after the 8-byte common header and
/// the padded `__syscall_nr`), and of the first argument in `sys_enter_*` records.
pub const SYSCALL_RET: usize = 16;
pub const SYSCALL_ARG0: usize = 16;

#[cfg(bpf_target_arch = "x86_64")]
mod arch {
    /// x86_64 `struct pt_regs` from r10 (offset 56) to sp (152): r10, r9, r8, ax, cx, dx, si,
    /// di, orig_ax, ip, cs, flags, sp. Syscall arguments are di, si, dx, r10 (then r8, r9).
    pub const BLOCK_START: usize = 56;
    pub type Block = [u64; 13];
    #[inline(always)]
    pub fn args(b: &Block) -> [u64; 4] {
        [b[7], b[6], b[5], b[0]]
    }
    /// `sp`: the return address of a frameless wrapper sits at the top of the user stack.
    #[inline(always)]
    pub fn return_slot(b: &Block) -> u64 {
        b[12]
    }
    pub const RETURN_IN_REGISTER: bool = false;
}

#[cfg(bpf_target_arch = "aarch64")]
mod arch {
    /// arm64 `struct pt_regs`: regs[0..31], sp, pc, pstate, then orig_x0 at 272. x0 holds the
    /// return value at exit, so the first argument comes from orig_x0.
    pub const BLOCK_START: usize = 0;
    pub type Block = [u64; 35];
    #[inline(always)]
    pub fn args(b: &Block) -> [u64; 4] {
        [b[34], b[1], b[2], b[3]]
    }
    /// `regs[30]` (lr): a leaf wrapper's return address stays in the link register.
    #[inline(always)]
    pub fn return_slot(b: &Block) -> u64 {
        b[30]
    }
    pub const RETURN_IN_REGISTER: bool = true;
}

/// The current task's saved user registers at syscall entry, in one read.
#[inline(always)]
fn user_regs() -> Option<arch::Block> {
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as usize;
        if regs == 0 {
            return None;
        }
        bpf_probe_read_kernel((regs + arch::BLOCK_START) as *const arch::Block).ok()
    }
}

/// Syscall arguments and the registers a call-site capture needs.
pub struct Regs(arch::Block);

impl Regs {
    #[inline(always)]
    pub fn read() -> Option<Regs> {
        user_regs().map(Regs)
    }

    /// First four arguments.
    #[inline(always)]
    pub fn args(&self) -> [u64; 4] {
        arch::args(&self.0)
    }

    /// The return address of the function that made the syscall (see `SocketRecord::caller`).
    #[inline(always)]
    pub fn caller(&self) -> u64 {
        let slot = arch::return_slot(&self.0);
        if arch::RETURN_IN_REGISTER {
            return slot;
        }
        unsafe { bpf_probe_read_user(slot as *const u64) }.unwrap_or(0)
    }
}

/// First four arguments of the current task's syscall.
#[inline(always)]
pub fn syscall_args() -> Option<[u64; 4]> {
    Regs::read().map(|r| r.args())
}
