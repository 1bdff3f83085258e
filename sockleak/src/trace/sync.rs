//! Reading the kernel's maps every interval: the live sockets (one batched dump of LIVE), each
//! process's counters (TARGETS), processes the kernel started tracking by itself, and the
//! leftovers of exits and close_ranges it could not finish.

use hashbrown::{HashMap, HashSet};
use sockleak_common::{socket::SocketRecord, target::state};

use super::Session;
use crate::host::procfs;

/// Work the kernel left to userspace (kernels without the fd-table offsets).
#[derive(Debug, Default)]
pub struct Todo {
    /// (tgid, exit time): collect its LIVE entries as its final state.
    pub exits: Vec<(u32, u64)>,
    /// (tgid, first, last, time): remove its LIVE entries in the range.
    pub close_ranges: Vec<(u32, u32, u32, u64)>,
}

/// LIVE entries grouped by process.
pub type ByTgid = HashMap<u32, Vec<(u32, SocketRecord)>>;

impl Session {
    /// Brings the tracker up to the kernel's state.
    pub(super) fn sync(&mut self, now_ns: u64) {
        let me = std::process::id();
        for (tgid, t) in self.tracer.targets() {
            if tgid == me {
                continue;
            }
            if !self.tracker.procs.contains_key(&tgid) {
                // Started by the kernel: a first socket under --all/--cgroup, or a child whose
                // fork event was lost (still pending: seed it like one).
                self.tracker.process(tgid, now_ns);
                let setup = self.runtime_setup(tgid);
                if t.state == state::FORK_PENDING {
                    self.seed(tgid, None, now_ns);
                    self.activate_later(tgid, setup);
                } else {
                    self.tracer
                        .control_all(tgid, None, Some(setup.stack_mode), Some(setup.flags));
                }
                self.refresh_meta(tgid, now_ns);
            }
            self.tracker.set_counters(tgid, t);
        }
        // New processes (started by the kernel, or forked by one: a runtime's `runc init`
        // makes sockets before it becomes the container's process) in a container no
        // Kubernetes filter matches are dropped before their sockets are read.
        self.kube_admit_new();
        // Entries stream into the mirror as the dump reads them; only those of processes with
        // unfinished kernel work (rare) are held back for `finish_todo`.
        let todo: HashSet<u32> = self
            .sync_todo
            .exits
            .iter()
            .map(|e| e.0)
            .chain(self.sync_todo.close_ranges.iter().map(|c| c.0))
            .collect();
        let mut held: ByTgid = HashMap::new();
        self.tracker.sync_begin();
        let tracker = &mut self.tracker;
        self.tracer.live_each(|k, v| {
            if !todo.is_empty() && todo.contains(&k.tgid) {
                held.entry(k.tgid).or_default().push((k.fd, v));
            } else {
                tracker.sync_entry(k.tgid, k.fd, &v);
            }
        });
        self.finish_todo(&mut held);
        for (tgid, entries) in &held {
            for (fd, rec) in entries {
                self.tracker.sync_entry(*tgid, *fd, rec);
            }
        }
        self.tracker.sync_end();
    }

    fn finish_todo(&mut self, by_tgid: &mut ByTgid) {
        for (tgid, ts) in std::mem::take(&mut self.sync_todo.exits) {
            let Some(entries) = by_tgid.get_mut(&tgid) else {
                continue;
            };
            let (old, newer): (Vec<_>, Vec<_>) =
                entries.drain(..).partition(|(_, r)| r.created_ns <= ts);
            *entries = newer;
            for (fd, _) in &old {
                self.tracer.forget(tgid, *fd, ts);
            }
            self.tracker.exit_leftovers(tgid, &old);
        }
        for (tgid, first, last, ts) in std::mem::take(&mut self.sync_todo.close_ranges) {
            let Some(entries) = by_tgid.get_mut(&tgid) else {
                continue;
            };
            entries.retain(|(fd, r)| {
                let gone = (first..=last).contains(fd) && r.created_ns <= ts;
                if gone {
                    let forget = crate::tracker::Action::Forget {
                        tgid,
                        fd: *fd,
                        not_after_ns: ts,
                        kernel_removed: false,
                    };
                    let deleted = self.tracer.forget(tgid, *fd, ts);
                    self.tracker.forgot(forget, deleted);
                }
                !gone
            });
        }
    }

    /// Finalizes processes whose exit event was lost: gone from /proc, or the pid now names a
    /// newer process. `kill(pid, 0)` is one cheap syscall per process; start times are only
    /// compared when events were lost.
    pub(super) fn reap(&mut self, now_ns: u64, events_lost: bool) {
        let gone: Vec<u32> = self
            .tracker
            .procs
            .values()
            .filter(|p| {
                // SAFETY: signal 0 only checks that the process exists; nothing is sent.
                let exists = unsafe { libc::kill(p.tgid as i32, 0) } == 0
                    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
                if !exists {
                    return true;
                }
                events_lost
                    && p.meta.start_time.is_some()
                    && procfs::start_time(p.tgid) != p.meta.start_time
            })
            .map(|p| p.tgid)
            .collect();
        let mut actions = Vec::new();
        for pid in gone {
            self.tracker.exit(pid, now_ns, &mut actions);
        }
        for a in actions {
            if let crate::tracker::Action::Exited { tgid, ts_ns, .. } = a {
                self.tracer.remove_target(tgid);
                self.refresh.forget(tgid);
                self.sync_todo.exits.push((tgid, ts_ns));
            }
        }
    }
}
