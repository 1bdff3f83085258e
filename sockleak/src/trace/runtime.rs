//! What each process's runtime needs, decided when it becomes traced or execs and undone when
//! it exits: the Go HTTP uprobe (kernel flag GO_HTTP), and how its stacks are taken (frame
//! pointers; for code built without them, a walk in the kernel with its compiled DWARF CFI, or
//! stack copies unwound in userspace when the tables are off). The kernel learns both through
//! CONTROL.

use log::{debug, info};
use sockleak_common::target::{flag, stack_mode};

use super::Session;
use crate::{
    cli::StackMode,
    symbols::gohttp::Probe,
    symbols::runtimes::{self, Runtime},
    symbols::stacks::{self, Site},
};

/// DWARF switches logged at info level before the rest go to debug.
const QUIET_AFTER: usize = 4;

/// What the kernel is told about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub flags: u8,
    pub stack_mode: u8,
}

/// The stack mode a process starts in.
pub fn initial_stack_mode(mode: StackMode, runtime: Runtime) -> u8 {
    match mode {
        StackMode::Dwarf => stack_mode::STACK_COPY,
        StackMode::Auto if runtime.lacks_frame_pointers() => stack_mode::STACK_COPY,
        _ => stack_mode::FRAME_POINTERS,
    }
}

impl Session {
    /// Checks `pid`'s binary: probes it, picks its stack mode, and records both.
    pub(super) fn runtime_setup(&mut self, pid: u32) -> Setup {
        let probe = self.go.check(&mut self.tracer, pid);
        let flags = match probe {
            Some(Probe::Attached) => flag::GO_HTTP,
            _ => 0,
        };
        let runtime = runtimes::of(pid);
        let mut mode = initial_stack_mode(self.cfg.stack_mode, runtime);
        if mode == stack_mode::STACK_COPY {
            mode = self.dwarf_mode(pid, &[]);
        }
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.go_http = probe;
            p.meta.runtime = Some(runtime);
            p.meta.stack_mode = mode;
        }
        Setup {
            flags,
            stack_mode: mode,
        }
    }

    /// A running process's binary changed or was found late: re-check and tell the kernel.
    pub(super) fn recheck_runtime(&mut self, pid: u32) {
        // A new image: its mappings and frame pointers are decided again.
        if let Some(t) = self.tables.as_mut() {
            t.forget(pid);
        }
        let s = self.runtime_setup(pid);
        self.tracer
            .control_all(pid, None, Some(s.stack_mode), Some(s.flags));
    }

    /// With `--stack-mode auto`: a process whose first frame-pointer stack stops short of its
    /// thread's start lacks frame pointers somewhere; its next stacks are unwound with DWARF
    /// instead (in the kernel with its tables, else from copies).
    pub(super) fn check_unwinding(&mut self, pid: u32, site: Site) {
        if self.cfg.stack_mode != StackMode::Auto {
            return;
        }
        let Some(p) = self.tracker.procs.get(&pid) else {
            return;
        };
        if p.meta.stack_mode != stack_mode::FRAME_POINTERS {
            return;
        }
        let frames = self.stacks.frames(pid, site);
        if !stacks::truncated(&frames) {
            return;
        }
        let last = frames
            .last()
            .map(|f| f.symbol.clone().unwrap_or_else(|| format!("{:#x}", f.addr)))
            .unwrap_or_default();
        // A process seen first through this stack has no name yet in the tracker.
        let comm = if p.meta.comm.is_empty() {
            crate::host::procfs::comm(pid).unwrap_or_default()
        } else {
            p.meta.comm.clone()
        };
        // Switched before it is said: a socket made after the line is unwound with DWARF.
        // The ip and the leaf caller are right; what a frame-pointer walk finds past them in
        // code without frame pointers is not (and may name big libraries never on the stack).
        let hints: Vec<u64> = frames.iter().take(2).map(|f| f.addr).collect();
        let mode = self.dwarf_mode(pid, &hints);
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.stack_mode = mode;
        }
        self.tracer.control_all(pid, None, Some(mode), None);
        let how = if mode == stack_mode::TABLES {
            "in the kernel, with its binaries' unwind tables"
        } else {
            "from stack copies"
        };
        // With --all a host has dozens of such processes: name the first few, then go quiet.
        let line = format!(
            "pid {pid} ({comm}): its stack stops at {last}, frame pointers are missing there: unwinding its stacks with DWARF from now on ({how})"
        );
        self.dwarf_switches += 1;
        match self.dwarf_switches {
            ..=QUIET_AFTER => info!("{line}"),
            n if n == QUIET_AFTER + 1 => {
                info!("{line} (further switches are logged at debug level)")
            }
            _ => debug!("{line}"),
        }
    }

    pub(super) fn forget_runtime(&mut self, pid: u32) {
        self.go.forget(pid);
        self.unwinders.forget(pid);
        if let Some(t) = self.tables.as_mut() {
            t.forget(pid);
        }
        self.stacks.forget_runtime(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpython_starts_with_copies_under_auto() {
        assert_eq!(
            initial_stack_mode(StackMode::Auto, Runtime::CPython),
            stack_mode::STACK_COPY
        );
        assert_eq!(
            initial_stack_mode(StackMode::Auto, Runtime::Node),
            stack_mode::FRAME_POINTERS
        );
        assert_eq!(
            initial_stack_mode(StackMode::Fp, Runtime::CPython),
            stack_mode::FRAME_POINTERS
        );
        assert_eq!(
            initial_stack_mode(StackMode::Dwarf, Runtime::Other),
            stack_mode::STACK_COPY
        );
    }
}
