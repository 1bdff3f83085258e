//! Syscall arguments and results at syscall exit.
//!
//! `sys_exit_*` tracepoints carry only the return value. Instead of stashing arguments in a map
//! at `sys_enter_*` (a second program and two map operations per call), read them back from the
//! user registers the kernel saved at syscall entry. `bpf_task_pt_regs` returns a BTF pointer,
//! so fields are plain loads (no helper call); `struct pt_regs` is user-visible ABI (ptrace), so
//! these offsets are fixed per architecture rather than kernel-build specific.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
};

/// Offset of `ret` in every `syscalls:sys_exit_*` record (after the 8-byte common header and
/// the padded `__syscall_nr`), and of the first argument in `sys_enter_*` records (checked
/// against the kernel's format files before attaching).
const SYSCALL_RET: usize = sockleak_common::tracepoint::sys_exit::RET;
const SYSCALL_ARG0: usize = sockleak_common::tracepoint::sys_enter_close::FD;

/// A field of the tracepoint record, loaded directly (tracepoint contexts are readable memory).
#[inline(always)]
pub fn ctx_u64<C: EbpfContext>(ctx: &C, offset: usize) -> u64 {
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset) as *const u64) }
}

#[inline(always)]
pub fn ctx_u32<C: EbpfContext>(ctx: &C, offset: usize) -> u32 {
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset) as *const u32) }
}

#[inline(always)]
pub fn ctx_u8<C: EbpfContext>(ctx: &C, offset: usize) -> u8 {
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset)) }
}

/// A byte of the tracepoint record at an offset only known at load time: the verifier only
/// allows constant offsets for direct loads, so this goes through a helper.
#[inline(always)]
pub fn ctx_u8_at<C: EbpfContext>(ctx: &C, offset: usize) -> Option<u8> {
    unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel((ctx.as_ptr() as *const u8).add(offset)).ok()
    }
}

/// The return value of a `sys_exit_*` record.
#[inline(always)]
pub fn syscall_ret<C: EbpfContext>(ctx: &C) -> i64 {
    ctx_u64(ctx, SYSCALL_RET) as i64
}

/// The first argument of a `sys_enter_*` record.
#[inline(always)]
pub fn syscall_arg0<C: EbpfContext>(ctx: &C) -> u64 {
    ctx_u64(ctx, SYSCALL_ARG0)
}

#[cfg(bpf_target_arch = "x86_64")]
mod arch {
    /// x86_64 `struct pt_regs`, in u64 slots: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si
    /// di orig_ax ip cs flags sp ss. Syscall arguments are di, si, dx, r10.
    pub const ARGS: [usize; 4] = [14, 13, 12, 7];
    pub const IP: usize = 16;
    pub const SP: usize = 19;
    pub const FP: usize = 4;
    /// Go's register ABI: the current goroutine in r14, integer arguments in rax, rbx, rcx,
    /// rdi.
    pub const GO_G: usize = 1;
    pub const GO_ARGS: [usize; 4] = [10, 5, 11, 14];
    /// The C calling convention (a uprobe at a function's entry): rdi, rsi, rdx.
    pub const C_ARGS: [usize; 3] = [14, 13, 12];
    /// The return address of a frameless wrapper sits at the top of the user stack.
    pub const RETURN_IN_REGISTER: bool = false;
    pub const RETURN_SLOT: usize = SP;
}

#[cfg(bpf_target_arch = "aarch64")]
mod arch {
    /// arm64 `struct pt_regs`: regs[0..31], sp, pc, pstate, then orig_x0. x0 holds the return
    /// value at exit, so the first argument comes from orig_x0.
    pub const ARGS: [usize; 4] = [34, 1, 2, 3];
    pub const IP: usize = 32;
    pub const SP: usize = 31;
    pub const FP: usize = 29;
    /// Go's register ABI: the current goroutine in x28, integer arguments in x0, x1, ...
    pub const GO_G: usize = 28;
    pub const GO_ARGS: [usize; 4] = [0, 1, 2, 3];
    /// The C calling convention: x0, x1, x2 (not orig_x0: this is no syscall).
    pub const C_ARGS: [usize; 3] = [0, 1, 2];
    /// `regs[30]` (lr): a leaf wrapper's return address stays in the link register.
    pub const RETURN_IN_REGISTER: bool = true;
    pub const RETURN_SLOT: usize = 30;
}

/// The current task's saved user registers (a BTF pointer into the kernel stack).
#[derive(Clone, Copy)]
pub struct Regs(*const u64);

impl Regs {
    #[inline(always)]
    pub fn current() -> Option<Regs> {
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64;
        (!regs.is_null()).then_some(Regs(regs))
    }

    #[inline(always)]
    fn slot(&self, i: usize) -> u64 {
        unsafe { core::ptr::read_volatile(self.0.add(i)) }
    }

    /// First four syscall arguments.
    #[inline(always)]
    pub fn args(&self) -> [u64; 4] {
        [
            self.slot(arch::ARGS[0]),
            self.slot(arch::ARGS[1]),
            self.slot(arch::ARGS[2]),
            self.slot(arch::ARGS[3]),
        ]
    }

    #[inline(always)]
    pub fn arg(&self, i: usize) -> u64 {
        match i {
            0 => self.slot(arch::ARGS[0]),
            1 => self.slot(arch::ARGS[1]),
            2 => self.slot(arch::ARGS[2]),
            _ => self.slot(arch::ARGS[3]),
        }
    }

    #[inline(always)]
    pub fn ip(&self) -> u64 {
        self.slot(arch::IP)
    }

    #[inline(always)]
    pub fn sp(&self) -> u64 {
        self.slot(arch::SP)
    }

    #[inline(always)]
    pub fn fp(&self) -> u64 {
        self.slot(arch::FP)
    }

    /// The current goroutine (`g`), in Go code.
    #[inline(always)]
    pub fn go_g(&self) -> u64 {
        self.slot(arch::GO_G)
    }

    /// Integer argument `i` (0..4) at a Go function's entry (register ABI).
    #[inline(always)]
    pub fn go_arg(&self, i: usize) -> u64 {
        match i {
            0 => self.slot(arch::GO_ARGS[0]),
            1 => self.slot(arch::GO_ARGS[1]),
            2 => self.slot(arch::GO_ARGS[2]),
            _ => self.slot(arch::GO_ARGS[3]),
        }
    }

    /// Integer argument `i` (0..3) at a C function's entry.
    #[inline(always)]
    pub fn c_arg(&self, i: usize) -> u64 {
        match i {
            0 => self.slot(arch::C_ARGS[0]),
            1 => self.slot(arch::C_ARGS[1]),
            _ => self.slot(arch::C_ARGS[2]),
        }
    }

    /// The return address of the function that made the syscall (see `SocketRecord::caller`).
    #[inline(always)]
    pub fn caller(&self) -> u64 {
        match self.caller_in_register() {
            Some(c) => c,
            None => unsafe { bpf_probe_read_user(self.sp() as *const u64) }.unwrap_or(0),
        }
    }

    /// The caller when a register holds it (arm64's link register); on x86_64 it is the word at
    /// the stack pointer, which a stack read starting at `sp` already has.
    #[inline(always)]
    pub fn caller_in_register(&self) -> Option<u64> {
        arch::RETURN_IN_REGISTER.then(|| self.slot(arch::RETURN_SLOT))
    }

    /// The registers a stack walk starts from, as plain values (for global BPF functions,
    /// which take scalars): ip, sp, fp, and the link register (0 on x86_64).
    #[inline(always)]
    pub fn walk_start(&self) -> WalkStart {
        WalkStart {
            ip: self.ip(),
            sp: self.sp(),
            fp: self.fp(),
            lr: self.caller_in_register().unwrap_or(0),
        }
    }
}

/// See `Regs::walk_start`.
#[derive(Clone, Copy)]
pub struct WalkStart {
    pub ip: u64,
    pub sp: u64,
    pub fp: u64,
    pub lr: u64,
}

impl WalkStart {
    /// The syscall's caller: the link register (arm64; 0 elsewhere) or the word at the stack
    /// pointer.
    #[inline(always)]
    pub fn caller(&self) -> u64 {
        if self.lr != 0 {
            self.lr
        } else {
            unsafe { bpf_probe_read_user(self.sp as *const u64) }.unwrap_or(0)
        }
    }
}
