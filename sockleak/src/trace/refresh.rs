//! What /proc says about each process (name, limits, open fds), read where it can have changed:
//! processes whose kernel counters moved, that failed, or that were asked for by pid, plus a
//! few others per interval in turn. The cost per interval follows what changed, not how many
//! processes are traced.

use hashbrown::HashMap;

use super::Session;
use crate::{host::cgroup, host::netns, host::procfs};

/// Processes refreshed per interval beyond those that changed.
const ROTATE_PER_TICK: usize = 16;

#[derive(Debug, Default)]
pub struct Refresh {
    /// (opened, closed, failures) at the last refresh.
    seen: HashMap<u32, (u64, u64, u64)>,
    /// Last /proc open-fd read per process for failures (rate limit).
    failure_fd_read: HashMap<u32, u64>,
    cursor: usize,
}

impl Refresh {
    pub fn forget(&mut self, tgid: u32) {
        self.seen.remove(&tgid);
        self.failure_fd_read.remove(&tgid);
    }

    /// Whether a failing process's fd count may be read again (at most every `every_ns`).
    pub fn failure_fd_read_due(&mut self, tgid: u32, now_ns: u64, every_ns: u64) -> bool {
        let last = self.failure_fd_read.get(&tgid).copied().unwrap_or(0);
        if now_ns.saturating_sub(last) < every_ns {
            return false;
        }
        self.failure_fd_read.insert(tgid, now_ns);
        true
    }
}

impl Session {
    /// Re-reads what /proc says about a live process.
    pub(super) fn refresh_meta(&mut self, pid: u32, _now_ns: u64) {
        let Some(p) = self.tracker.procs.get_mut(&pid) else {
            return;
        };
        if p.meta.comm.is_empty() {
            p.meta.comm = procfs::comm(pid).unwrap_or_default();
            p.meta.start_time = procfs::start_time(pid);
            p.meta.ns_pid = procfs::status(pid).and_then(|s| s.ns_pid);
            p.meta.cgroup = cgroup::cgroup_of(pid);
            p.meta.netns = netns::netns_of(pid);
        }
        if let Some(l) = procfs::fd_limit(pid) {
            p.meta.fd_limit = Some(l);
        }
        if let Some(n) = procfs::open_fd_count(pid) {
            p.meta.open_fds = Some(n);
        }
    }

    /// Refreshes the processes that changed (and a few others in turn), then records a growth
    /// sample for every process.
    pub(super) fn refresh_changed(&mut self, now_ns: u64) {
        let mut pids: Vec<u32> = self.tracker.procs.keys().copied().collect();
        pids.sort_unstable();
        let mut due = Vec::new();
        let mut rest = Vec::new();
        for pid in &pids {
            let p = &self.tracker.procs[pid];
            let fails: u64 = p.failures.values().map(|f| f.count).sum();
            let now = (p.opened(), p.closed(), fails);
            let changed = self.refresh.seen.get(pid) != Some(&now);
            if changed || self.cfg.pids.contains(pid) {
                self.refresh.seen.insert(*pid, now);
                due.push(*pid);
            } else {
                rest.push(*pid);
            }
        }
        if !rest.is_empty() {
            let n = ROTATE_PER_TICK.min(rest.len());
            let start = self.refresh.cursor % rest.len();
            due.extend(rest.iter().cycle().skip(start).take(n));
            self.refresh.cursor = start + n;
        }
        for pid in due {
            self.refresh_meta(pid, now_ns);
        }
        for p in self.tracker.procs.values_mut() {
            let open = p.meta.open_fds;
            p.sample(now_ns, open);
        }
    }
}
