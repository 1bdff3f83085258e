//! The safety net: every interval a few traced processes' socket fds in /proc are compared with
//! the kernel's live map. Sockets that appeared through a path sockleak does not hook are
//! adopted (origin `unseen`); entries whose fd is gone without a close it saw are dropped. Both
//! are counted per process and said in the report: a non-zero count is a bug to report.
//!
//! The cost is bounded: at most MAX_PROCS processes and MAX_FDS fds per interval, in turn;
//! processes holding more than BIG_FDS fds are only reconciled every BIG_EVERY intervals.

use hashbrown::HashSet;
use log::{info, warn};
use sockleak_common::socket::{Origin, SocketRecord};

use super::{Session, mono_ns};
use crate::{
    host::procfs,
    kernel::bpf::Insert,
    tracker::{self, Socket},
};

const MAX_PROCS: usize = 64;
const MAX_FDS: usize = 8192;
const BIG_FDS: u64 = 20_000;
const BIG_EVERY: u64 = 30;

#[derive(Debug, Default)]
pub struct Reconciler {
    cursor: usize,
    ticks: u64,
    /// Processes to reconcile at the next pass whatever the budget (exec without fd-table
    /// offsets).
    urgent: Vec<u32>,
    /// Big processes already named in the log.
    told_big: HashSet<u32>,
}

impl Reconciler {
    pub fn urgent(&mut self, tgid: u32) {
        if !self.urgent.contains(&tgid) {
            self.urgent.push(tgid);
        }
    }
}

struct Candidate {
    pid: u32,
    found: tracker::Reconcile,
    mirror: Vec<(u32, SocketRecord)>,
}

impl Session {
    /// One bounded reconciliation pass. Call right after a LIVE sync.
    pub(super) fn reconcile(&mut self) {
        self.reconciler.ticks += 1;
        let mut pids: Vec<u32> = self.tracker.procs.keys().copied().collect();
        pids.sort_unstable();
        if pids.is_empty() {
            return;
        }
        let urgent = std::mem::take(&mut self.reconciler.urgent);
        let start = self.reconciler.cursor % pids.len();
        let order: Vec<u32> = urgent
            .iter()
            .copied()
            .chain(pids.iter().cycle().skip(start).take(pids.len()).copied())
            .collect();
        let mut candidates = Vec::new();
        let (mut procs, mut fds, mut visited) = (0usize, 0usize, 0usize);
        for (i, pid) in order.iter().enumerate() {
            let is_urgent = i < urgent.len();
            if !is_urgent {
                visited += 1;
            }
            if procs >= MAX_PROCS || fds >= MAX_FDS {
                break;
            }
            let Some(p) = self.tracker.procs.get(pid) else {
                continue;
            };
            let open = p.meta.open_fds.unwrap_or(0);
            if !is_urgent && open > BIG_FDS && !self.reconciler.ticks.is_multiple_of(BIG_EVERY) {
                if self.reconciler.told_big.insert(*pid) {
                    info!(
                        "pid {pid} holds {open} fds: it is compared with /proc every {BIG_EVERY} intervals only"
                    );
                }
                continue;
            }
            let Ok(proc_fds) = procfs::socket_fds(*pid) else {
                continue;
            };
            procs += 1;
            fds += proc_fds.len();
            let found = tracker::reconcile(&p.sockets, &proc_fds);
            if !found.unseen.is_empty() || !found.vanished.is_empty() {
                let mirror = found
                    .vanished
                    .iter()
                    .filter_map(|fd| Some((*fd, p.sockets.get(fd)?.record)))
                    .collect();
                candidates.push(Candidate {
                    pid: *pid,
                    found,
                    mirror,
                });
            }
        }
        self.reconciler.cursor = start + visited;
        for c in candidates {
            self.confirm(c);
        }
    }

    /// Second look at what one pass found, a moment later: a socket's fd shows in /proc just
    /// before the syscall-exit program records it, and a closed fd leaves LIVE just before
    /// /proc. Only what is still inconsistent is acted on.
    fn confirm(&mut self, c: Candidate) {
        let pid = c.pid;
        for (fd, inode) in c.found.unseen {
            if self.tracer.lookup(pid, fd).is_some() || procfs::socket_inode(pid, fd) != Some(inode)
            {
                continue;
            }
            let mut rec = SocketRecord::EMPTY;
            rec.origin = Origin::Unseen as u8;
            rec.created_ns = mono_ns();
            if self.tracer.insert_if_absent(pid, fd, &rec) != Insert::Inserted {
                continue;
            }
            let kind = procfs::socket_kind(pid, fd).unwrap_or("unknown");
            warn!(
                "pid {pid}: {kind} socket fd {fd} (inode {inode}) appeared without sockleak seeing it made; adopted (origin unseen)"
            );
            self.tracker.adopt(
                pid,
                fd,
                Socket {
                    inode: Some(inode),
                    ..Socket::new(rec, pid)
                },
            );
        }
        for (fd, known) in c.mirror {
            let same = self
                .tracer
                .lookup(pid, fd)
                .is_some_and(|r| r.created_ns == known.created_ns);
            if !same || procfs::socket_inode(pid, fd).is_some() {
                continue;
            }
            if self.tracer.forget(pid, fd, known.created_ns) {
                warn!(
                    "pid {pid}: socket fd {fd} ({}) went away without sockleak seeing it closed; dropped",
                    crate::model::names::kind_of(&known)
                );
                self.tracker.vanished(pid, fd);
            }
        }
    }
}
