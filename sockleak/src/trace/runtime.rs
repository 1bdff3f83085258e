//! What each process's runtime needs, decided when it becomes traced or execs and undone when
//! it exits: the uprobes of Go HTTP clients (kernel flags GO_HTTP, GO_DELIVER) and of Node's
//! libuv (NODE_UV), which join sockets to the code that asked for them, and how its stacks are
//! taken (frame pointers, or stack copies unwound with DWARF for code built without them). The
//! kernel learns both through CONTROL.

use log::{debug, info};
use sockleak_common::target::{flag, stack_mode};

use super::Session;
use crate::{
    cli::StackMode,
    symbols::callsite::Origins,
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
        let stacks = self.cfg.load.capture_stacks;
        let go = self.go.check(&mut self.tracer, pid, stacks);
        let mut flags = go.as_ref().map_or(0, |c| c.flags);
        let mut origins = go.as_ref().map(|c| Origins::from(c.origins.clone()));
        let runtime = runtimes::of(pid);
        if runtime == Runtime::Node {
            let node = self.node.check(&mut self.tracer, pid, stacks);
            if node.is_ok() {
                flags |= flag::NODE_UV;
            }
            origins = Some(Origins::from(node));
        } else {
            self.node.forget(pid);
        }
        let mode = initial_stack_mode(self.cfg.stack_mode, runtime);
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.go_http = go.map(|c| c.probe);
            p.meta.origins = origins;
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
        let s = self.runtime_setup(pid);
        self.tracer
            .control_all(pid, None, Some(s.stack_mode), Some(s.flags));
    }

    /// With `--stack-mode auto`: a process whose first frame-pointer stack stops short of its
    /// thread's start lacks frame pointers somewhere; its next stacks are copied and unwound
    /// with DWARF instead.
    pub(super) fn check_unwinding(&mut self, pid: u32, site: Site) {
        if self.cfg.stack_mode != StackMode::Auto {
            return;
        }
        let Some(p) = self.tracker.procs.get(&pid) else {
            return;
        };
        if p.meta.stack_mode == stack_mode::STACK_COPY {
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
        // With --all a host has dozens of such processes: name the first few, then go quiet.
        let line = format!(
            "pid {pid} ({}): its stack stops at {last}, frame pointers are missing there: unwinding copies of its stacks with DWARF from now on",
            p.meta.comm
        );
        self.dwarf_switches += 1;
        match self.dwarf_switches {
            ..=QUIET_AFTER => info!("{line}"),
            n if n == QUIET_AFTER + 1 => {
                info!("{line} (further switches are logged at debug level)")
            }
            _ => debug!("{line}"),
        }
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.stack_mode = stack_mode::STACK_COPY;
        }
        self.tracer
            .control_all(pid, None, Some(stack_mode::STACK_COPY), None);
    }

    pub(super) fn forget_runtime(&mut self, pid: u32) {
        self.go.forget(&mut self.tracer, pid);
        self.node.forget(pid);
        self.unwinders.forget(pid);
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
