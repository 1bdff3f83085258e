//! Runtime probes per process (the Go HTTP uprobe): looked for when a process becomes traced
//! or execs, detached when it exits. The kernel learns through the process's flags.

use sockleak_common::target::flag;

use super::Session;
use crate::gohttp::Probe;

impl Session {
    /// Checks `pid`'s binary and returns the kernel flags it needs, recording what was found.
    pub(super) fn runtime_flags(&mut self, pid: u32) -> u8 {
        let probe = self.go.check(&mut self.tracer, pid);
        let flags = match probe {
            Some(Probe::Attached) => flag::GO_HTTP,
            _ => 0,
        };
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.go_http = probe;
        }
        flags
    }

    /// A running process's binary changed or was found late: re-check and tell the kernel.
    pub(super) fn recheck_runtime(&mut self, pid: u32) {
        let flags = self.runtime_flags(pid);
        self.tracer.control_all(pid, None, None, Some(flags));
    }

    pub(super) fn forget_runtime(&mut self, pid: u32) {
        self.go.forget(pid);
    }
}
