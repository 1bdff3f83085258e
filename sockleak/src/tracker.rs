//! The userspace picture of every traced process: its sockets, counts, failures and history.
//!
//! The kernel keeps the live-socket map (LIVE) and per-process counters; a socket's open and
//! close are not events. This module mirrors LIVE from periodic dumps ([`Tracker::sync_begin`]),
//! takes the counters ([`Tracker::set_counters`]) and applies the rare events (fork, exec,
//! exit, failures, and the closes and dups of a forked child whose inherited fds userspace is
//! still copying in). Kernel-map and /proc work is returned as [`Action`]s so this module stays
//! pure.

use std::collections::VecDeque;

use hashbrown::HashMap;
use sockleak_common::{
    event::{Event, EventKind, Syscall},
    socket::{Origin, SocketRecord},
    target::Target,
};

/// Samples kept per process for growth estimates.
const MAX_SAMPLES: usize = 512;
/// Exited processes kept for the report; beyond this the least interesting go first.
pub const MAX_EXITED: usize = 1024;
/// Growth is estimated over this trailing window.
pub const GROWTH_WINDOW_NS: u64 = 60_000_000_000;

/// Kernel-map or /proc work an event requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delete LIVE[(tgid, fd)] unless that entry was created after `not_after_ns` (then the fd
    /// number was reused by a newer socket, which must stay), then report the outcome with
    /// [`Tracker::forgot`]. `kernel_removed`: the kernel had already removed (and counted) its
    /// own entry, so whatever is deleted now is a copy userspace seeded too late.
    Forget {
        tgid: u32,
        fd: u32,
        not_after_ns: u64,
        kernel_removed: bool,
    },
    /// Put a copy of a seeded socket into LIVE (a dup the kernel could not resolve); report with
    /// [`Tracker::inserted`].
    Insert {
        tgid: u32,
        fd: u32,
        record: SocketRecord,
    },
    /// A new process was forked from a traced one: seed its inherited sockets from /proc.
    SeedChild {
        parent: u32,
        child: u32,
        fork_ns: u64,
    },
    /// The kernel could not apply a close_range (no fd-table offsets): remove the process's LIVE
    /// entries in [first, last] made before `ts_ns`.
    CloseRange {
        tgid: u32,
        first: u32,
        last: u32,
        ts_ns: u64,
    },
    /// exec replaced the image: re-read its name; `reconcile` when the kernel could not drop
    /// close-on-exec sockets itself.
    Exec { tgid: u32, reconcile: bool },
    /// A failure was recorded: the loop notes the open-fd count while it is fresh.
    FailureSeen { tgid: u32, key: FailureKey },
    /// A call site not seen before: symbolize it while the process is alive.
    NewStack {
        tgid: u32,
        site: crate::symbols::stacks::Site,
    },
    /// The process exited; `collect`: the kernel could not hand over its sockets, so its LIVE
    /// entries made before `ts_ns` are to be collected (with [`Tracker::exit_leftovers`]).
    Exited {
        tgid: u32,
        collect: bool,
        ts_ns: u64,
    },
}

/// One live socket fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub record: SocketRecord,
    /// Socket inode, when known (seeded from /proc).
    pub inode: Option<u64>,
    /// Process whose address space `record.stack_id` belongs to (the parent, for inherited fds).
    pub stack_pid: u32,
    /// The LIVE pass that last saw it (see [`Tracker::sync_begin`]); fits the padding.
    pub seen_in_pass: u32,
}

impl Socket {
    pub fn new(record: SocketRecord, stack_pid: u32) -> Socket {
        Socket {
            record,
            inode: None,
            stack_pid,
            seen_in_pass: 0,
        }
    }
}

/// What /proc says about a process, refreshed every interval and kept after it exits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub comm: String,
    pub ns_pid: Option<u32>,
    pub fd_limit: Option<crate::host::procfs::FdLimit>,
    pub open_fds: Option<u64>,
    pub start_time: Option<u64>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
    /// Network namespace inode (read once: processes rarely move).
    pub netns: Option<u64>,
    /// A Go HTTP client: whether its Transports are probed (see `gohttp`).
    pub go_http: Option<crate::symbols::gohttp::Probe>,
    /// A Go HTTP client or a Node process: whether its sockets are joined to the code that
    /// asked for them (`symbols::callsite::Origins`).
    pub origins: Option<crate::symbols::callsite::Origins>,
    pub runtime: Option<crate::symbols::runtimes::Runtime>,
    /// `target::stack_mode` it was last given.
    pub stack_mode: u8,
}

/// Failures are aggregated per (syscall, errno, call site).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailureKey {
    pub syscall: Syscall,
    pub errno: i64,
    pub site: crate::symbols::stacks::Site,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailureStats {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub tid: u32,
    /// The socket (connect) or listener (accept) fd of the last failure; -1 for socket().
    pub fd: i32,
    /// When this call site was last streamed (`--format json`), and failures since.
    pub last_streamed_ns: u64,
    pub unstreamed: u64,
    /// Open fds of the process when the failure was last seen (read from /proc).
    pub open_fds: Option<u64>,
    /// Destination of a failed connect.
    pub remote: sockleak_common::socket::Endpoint,
    /// Failure times in the last few seconds (for the spin-rate judgement).
    pub recent: VecDeque<u64>,
}

/// A point of the live-count history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t_ns: u64,
    pub live: u64,
    pub open_fds: Option<u64>,
}

/// Socket counts over a process's life, with what the kernel counted and what userspace did
/// kept apart. Closes are not counted anywhere: everything that was open minus what still is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// The kernel's own counts (its TARGETS entry; at exit, the Exit event).
    pub kernel: Target,
    /// Seeded from /proc: open at start, or inherited at fork.
    pub preexisting: u64,
    /// Userspace inserts (dups of seeded sockets the kernel could not resolve).
    pub user_opened: u64,
    /// Found in /proc without sockleak seeing them made, and gone without a close it saw.
    pub unseen_opened: u64,
    pub unseen_closed: u64,
}

impl Counts {
    pub fn opened(&self) -> u64 {
        self.kernel.opened + self.user_opened
    }

    /// Closes seen, given how many sockets are open now.
    pub fn closed(&self, live: u64) -> u64 {
        (self.preexisting + self.opened() + self.unseen_opened)
            .saturating_sub(self.unseen_closed + live)
    }

    /// A seeded copy was removed again. When the kernel had already removed its own entry for
    /// that fd, the copy arrived too late and never was open in the process: it is uncounted.
    /// Otherwise it was a socket the process closed, which the derived count includes.
    fn forgot_seed(&mut self, kernel_removed: bool) {
        if kernel_removed {
            self.preexisting = self.preexisting.saturating_sub(1);
        }
    }

    /// io_uring fixed-file sockets open now (not fds).
    pub fn direct_live(&self) -> u64 {
        u64::from(
            self.kernel
                .direct_opened
                .saturating_sub(self.kernel.direct_closed),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Process {
    pub tgid: u32,
    pub parent: Option<u32>,
    /// When tracing of this process began (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    pub exited_ns: Option<u64>,
    pub sockets: HashMap<u32, Socket>,
    pub counts: Counts,
    pub failures: HashMap<FailureKey, FailureStats>,
    pub samples: VecDeque<Sample>,
    pub meta: Meta,
    /// Sockets the kernel handed over at exit, until the Exit event closes the list.
    exiting: Vec<(u32, SocketRecord)>,
    /// Closes userspace could not apply to LIVE (fd, close time, kernel_removed): the seeded
    /// copy may be on its way back in an ExitSocket event.
    tombstones: Vec<(u32, u64, bool)>,
    /// When its fds were last listed from /proc for seeding: fd events from before then are
    /// already in what was seeded.
    listed_ns: u64,
}

impl Process {
    pub fn new(tgid: u32, parent: Option<u32>, since_ns: u64) -> Process {
        Process {
            tgid,
            parent,
            since_ns,
            exited_ns: None,
            sockets: HashMap::new(),
            counts: Counts::default(),
            failures: HashMap::new(),
            samples: VecDeque::new(),
            meta: Meta::default(),
            exiting: Vec::new(),
            tombstones: Vec::new(),
            listed_ns: 0,
        }
    }

    pub fn live(&self) -> u64 {
        self.sockets.len() as u64
    }

    pub fn opened(&self) -> u64 {
        self.counts.opened()
    }

    pub fn closed(&self) -> u64 {
        self.counts.closed(self.live())
    }

    pub fn sample(&mut self, t_ns: u64, open_fds: Option<u64>) {
        // Only the growth window is used: older samples go (memory per process stays small).
        while self.samples.len() >= MAX_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|s| t_ns.saturating_sub(s.t_ns) > GROWTH_WINDOW_NS)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            t_ns,
            live: self.live(),
            open_fds,
        });
    }

    /// Live sockets gained per second over the trailing window (least squares).
    pub fn growth_per_s(&self) -> f64 {
        slope(self.window().map(|s| (s.t_ns, s.live as f64)))
    }

    /// Open fds gained per second over the trailing window.
    pub fn fd_growth_per_s(&self) -> f64 {
        slope(
            self.window()
                .filter_map(|s| Some((s.t_ns, s.open_fds? as f64))),
        )
    }

    fn window(&self) -> impl Iterator<Item = &Sample> {
        let end = self.samples.back().map_or(0, |s| s.t_ns);
        self.samples
            .iter()
            .filter(move |s| end.saturating_sub(s.t_ns) <= GROWTH_WINDOW_NS)
    }

    /// One LIVE entry of this process, seen in pass `pass`: the same socket (same creation
    /// time) keeps what is known of it (its inode) and takes the kernel's record, which may
    /// have learned more (connect's peer); anything else at that fd is a new socket.
    fn sync_one(&mut self, fd: u32, rec: &SocketRecord, pass: u32) {
        match self.sockets.get_mut(&fd) {
            Some(s) if s.record.created_ns == rec.created_ns => {
                s.record = *rec;
                s.seen_in_pass = pass;
            }
            _ => {
                let mut s = Socket::new(*rec, self.tgid);
                s.seen_in_pass = pass;
                self.sockets.insert(fd, s);
            }
        }
    }
}

/// Least-squares slope of (ns, value) points, per second. 0 with fewer than two points.
/// One pass, no allocation: it runs for every process at every interval. Times are taken
/// relative to the first point so the sums keep their precision.
pub fn slope(points: impl Iterator<Item = (u64, f64)>) -> f64 {
    let (mut n, mut t0) = (0.0f64, None);
    let (mut st, mut sv, mut stt, mut stv) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (t_ns, v) in points {
        let base = *t0.get_or_insert(t_ns);
        let t = t_ns.wrapping_sub(base) as i64 as f64 / 1e9;
        n += 1.0;
        st += t;
        sv += v;
        stt += t * t;
        stv += t * v;
    }
    if n < 2.0 {
        return 0.0;
    }
    let sxx = stt - st * st / n;
    if sxx <= f64::EPSILON {
        return 0.0;
    }
    (stv - st * sv / n) / sxx
}

/// How long a failure stays in `FailureStats::recent`.
const RECENT_FAILURES_NS: u64 = 5_000_000_000;
const MAX_RECENT_FAILURES: usize = 256;

#[derive(Debug, Default)]
pub struct Tracker {
    pub procs: HashMap<u32, Process>,
    /// Processes that exited while traced, in exit order.
    pub exited: Vec<Process>,
    /// Events with an unknown kind or size (a loader/object mismatch).
    pub bad_events: u64,
    /// Losses found in userspace (seeding into a full map), indexed by LossCause.
    pub user_losses: [u64; sockleak_common::counters::LOSS_CAUSES as usize],
    /// Exited processes dropped to bound memory (pids, for the caller to clean up after).
    pub dropped_exited: Vec<u32>,
    /// The current LIVE pass (never 0 once one began).
    pass: u32,
    /// Sockets the kernel counted as opened, over every process ever traced (exited and
    /// dropped ones included), as of the latest counters and exits.
    pub opened_total: u64,
}

impl Tracker {
    pub fn process(&mut self, tgid: u32, now_ns: u64) -> &mut Process {
        self.procs
            .entry(tgid)
            .or_insert_with(|| Process::new(tgid, None, now_ns))
    }

    /// Adds a socket found in /proc (at start, or inherited at fork) that userspace put into
    /// LIVE itself. Returns false when the fd is already known (a socket made after tracing
    /// began wins).
    pub fn seed(&mut self, tgid: u32, fd: u32, seeded: Socket, now_ns: u64) -> bool {
        let p = self.process(tgid, now_ns);
        if p.sockets.contains_key(&fd) {
            return false;
        }
        p.sockets.insert(fd, seeded);
        p.counts.preexisting += 1;
        true
    }

    /// Its fds are about to be listed for seeding (call before reading /proc).
    pub fn listing(&mut self, tgid: u32, now_ns: u64) {
        let p = self.process(tgid, now_ns);
        p.listed_ns = now_ns;
    }

    /// A socket found in /proc that no hooked path made, adopted into LIVE.
    pub fn adopt(&mut self, tgid: u32, fd: u32, s: Socket) {
        if let Some(p) = self.procs.get_mut(&tgid)
            && p.sockets.insert(fd, s).is_none()
        {
            p.counts.unseen_opened += 1;
        }
    }

    /// A LIVE entry whose fd vanished without a close sockleak saw, removed.
    pub fn vanished(&mut self, tgid: u32, fd: u32) {
        if let Some(p) = self.procs.get_mut(&tgid)
            && p.sockets.remove(&fd).is_some()
        {
            p.counts.unseen_closed += 1;
        }
    }

    /// The outcome of an [`Action::Forget`]: `deleted` when a LIVE entry went.
    pub fn forgot(&mut self, forget: Action, deleted: bool) {
        let Action::Forget {
            tgid,
            fd,
            not_after_ns,
            kernel_removed,
        } = forget
        else {
            return;
        };
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        if deleted {
            p.counts.forgot_seed(kernel_removed);
        } else {
            p.tombstones.push((fd, not_after_ns, kernel_removed));
        }
    }

    /// The outcome of an [`Action::Insert`].
    pub fn inserted(&mut self, tgid: u32, ok: bool) {
        if let Some(p) = self.procs.get_mut(&tgid) {
            if ok {
                p.counts.user_opened += 1;
            } else {
                self.user_losses[sockleak_common::counters::LossCause::LiveMapFull as usize] += 1;
            }
        }
    }

    /// The kernel's counters for a live process.
    pub fn set_counters(&mut self, tgid: u32, t: Target) {
        if let Some(p) = self.procs.get_mut(&tgid) {
            self.opened_total += t.opened.saturating_sub(p.counts.kernel.opened);
            p.counts.kernel = t;
        }
    }

    /// Starts a pass that makes every live process's mirror what LIVE holds: each entry of
    /// the dump goes to [`Tracker::sync_entry`] as it is read (no copy of a map that may hold
    /// 100k sockets), then [`Tracker::sync_end`] drops what the pass did not see.
    pub fn sync_begin(&mut self) {
        self.pass = self.pass.wrapping_add(1).max(1);
    }

    /// One LIVE entry. Entries of processes the tracker does not follow are ignored.
    pub fn sync_entry(&mut self, tgid: u32, fd: u32, rec: &SocketRecord) {
        let pass = self.pass;
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.sync_one(fd, rec, pass);
        }
    }

    pub fn sync_end(&mut self) {
        let pass = self.pass;
        for p in self.procs.values_mut() {
            p.sockets.retain(|_, s| s.seen_in_pass == pass);
            // LIVE is read after every queued close was applied: nothing is on its way back.
            p.tombstones.clear();
        }
    }

    /// A whole pass over entries grouped by process.
    pub fn sync_live(&mut self, by_tgid: &HashMap<u32, Vec<(u32, SocketRecord)>>) {
        self.sync_begin();
        for (tgid, entries) in by_tgid {
            for (fd, rec) in entries {
                self.sync_entry(*tgid, *fd, rec);
            }
        }
        self.sync_end();
    }

    /// LIVE entries of an exited process the kernel could not hand over, collected late.
    pub fn exit_leftovers(&mut self, tgid: u32, entries: &[(u32, SocketRecord)]) {
        if let Some(p) = self.exited.iter_mut().rev().find(|p| p.tgid == tgid) {
            for (fd, rec) in entries {
                p.sockets.insert(*fd, Socket::new(*rec, tgid));
            }
        }
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, ev: &Event, kind: EventKind, actions: &mut Vec<Action>) {
        let tgid = ev.tgid;
        // A fork-pending process's fd change from before its fds were listed: the seeds
        // already show its outcome (applying it again would undo a seed made after it).
        if (matches!(kind, EventKind::Close | EventKind::Dup)
            || (kind == EventKind::CloseRange && ev.arg2 != 0))
            && self
                .procs
                .get(&tgid)
                .is_some_and(|p| ev.ts_ns < p.listed_ns)
        {
            return;
        }
        match kind {
            EventKind::Close => {
                let Some(p) = self.procs.get_mut(&tgid) else {
                    return;
                };
                let fd = ev.fd as u32;
                p.sockets.remove(&fd);
                actions.push(Action::Forget {
                    tgid,
                    fd,
                    not_after_ns: ev.ts_ns,
                    kernel_removed: ev.arg != 0,
                });
            }
            EventKind::Dup => self.apply_dup(ev, actions),
            EventKind::CloseRange => {
                let (first, last) = (ev.fd as u32, ev.arg as u32);
                let handled = ev.arg2 != 0;
                let Some(p) = self.procs.get_mut(&tgid) else {
                    return;
                };
                let gone: Vec<u32> = p
                    .sockets
                    .keys()
                    .copied()
                    .filter(|fd| (first..=last).contains(fd))
                    .collect();
                for fd in gone {
                    p.sockets.remove(&fd);
                    // The kernel does not say which entries it removed itself: a copy still
                    // in LIVE counts as a socket the range closed.
                    actions.push(Action::Forget {
                        tgid,
                        fd,
                        not_after_ns: ev.ts_ns,
                        kernel_removed: false,
                    });
                }
                if !handled {
                    actions.push(Action::CloseRange {
                        tgid,
                        first,
                        last,
                        ts_ns: ev.ts_ns,
                    });
                }
            }
            EventKind::Fork => {
                let child = ev.arg as u32;
                // A reused pid never merges with a predecessor still listed.
                if let Some(old) = self.procs.remove(&child) {
                    self.exited.push(old);
                    self.bound_exited();
                }
                self.procs
                    .insert(child, Process::new(child, Some(tgid), ev.ts_ns));
                actions.push(Action::SeedChild {
                    parent: tgid,
                    child,
                    fork_ns: ev.ts_ns,
                });
            }
            EventKind::Exec => {
                if self.procs.contains_key(&tgid) {
                    actions.push(Action::Exec {
                        tgid,
                        reconcile: ev.arg < 0,
                    });
                }
            }
            EventKind::ExitSocket => {
                let p = self.process(tgid, ev.ts_ns);
                p.exiting.push((ev.fd as u32, ev.record));
            }
            EventKind::Exit => {
                let mut p = self
                    .procs
                    .remove(&tgid)
                    .unwrap_or_else(|| Process::new(tgid, None, ev.ts_ns));
                p.exited_ns = Some(ev.ts_ns);
                let exiting = std::mem::take(&mut p.exiting);
                let old = std::mem::take(&mut p.sockets);
                for (fd, rec) in exiting {
                    // A seeded copy of a socket the process had already closed.
                    if let Some(i) = p
                        .tombstones
                        .iter()
                        .position(|(f, ts, _)| *f == fd && rec.created_ns <= *ts)
                    {
                        let (_, _, kernel_removed) = p.tombstones.swap_remove(i);
                        p.counts.forgot_seed(kernel_removed);
                        continue;
                    }
                    let stack_pid = old
                        .get(&fd)
                        .filter(|s| s.record.created_ns == rec.created_ns)
                        .map_or(tgid, |s| s.stack_pid);
                    p.sockets.insert(fd, Socket::new(rec, stack_pid));
                }
                self.opened_total += (ev.arg as u64).saturating_sub(p.counts.kernel.opened);
                p.counts.kernel.opened = ev.arg as u64;
                p.counts.kernel.direct_opened = (ev.arg3 >> 32) as u32;
                p.counts.kernel.direct_closed = ev.arg3 as u32;
                let collect = ev.flags == 0;
                self.exited.push(p);
                self.bound_exited();
                actions.push(Action::Exited {
                    tgid,
                    collect,
                    ts_ns: ev.ts_ns,
                });
            }
            EventKind::Failure => {
                let syscall = Syscall::from_u8(ev.syscall).unwrap_or(Syscall::None);
                let key = FailureKey {
                    syscall,
                    errno: ev.arg,
                    site: crate::symbols::stacks::Site::of(&ev.record),
                };
                let p = self.process(tgid, ev.ts_ns);
                let f = p.failures.entry(key).or_insert(FailureStats {
                    count: 0,
                    first_ns: ev.ts_ns,
                    last_ns: ev.ts_ns,
                    tid: ev.tid,
                    fd: ev.fd,
                    last_streamed_ns: 0,
                    unstreamed: 0,
                    open_fds: None,
                    remote: ev.record.remote,
                    recent: VecDeque::new(),
                });
                f.count += 1;
                f.unstreamed += 1;
                f.fd = ev.fd;
                f.last_ns = ev.ts_ns;
                f.tid = ev.tid;
                f.remote = ev.record.remote;
                while f
                    .recent
                    .front()
                    .is_some_and(|t| ev.ts_ns.saturating_sub(*t) > RECENT_FAILURES_NS)
                    || f.recent.len() >= MAX_RECENT_FAILURES
                {
                    f.recent.pop_front();
                }
                f.recent.push_back(ev.ts_ns);
                actions.push(Action::FailureSeen { tgid, key });
            }
            EventKind::NewStack => {
                if ev.record.stack_id >= 0 {
                    actions.push(Action::NewStack {
                        tgid,
                        site: crate::symbols::stacks::Site::of(&ev.record),
                    });
                }
            }
        }
    }

    /// Finalizes a process that exited without an exit event (lost, or the pid now names
    /// another process): it keeps the sockets it held as its final state.
    pub fn exit(&mut self, tgid: u32, ts_ns: u64, actions: &mut Vec<Action>) {
        let Some(mut p) = self.procs.remove(&tgid) else {
            return;
        };
        p.exited_ns = Some(ts_ns);
        self.exited.push(p);
        self.bound_exited();
        actions.push(Action::Exited {
            tgid,
            collect: true,
            ts_ns,
        });
    }

    /// Keeps at most MAX_EXITED exited processes: first drops those that left nothing behind
    /// (no socket open at exit, no failure), oldest first, then the oldest.
    fn bound_exited(&mut self) {
        while self.exited.len() > MAX_EXITED {
            let i = self
                .exited
                .iter()
                .position(|p| p.live() == 0 && p.failures.is_empty())
                .unwrap_or(0);
            let p = self.exited.remove(i);
            self.dropped_exited.push(p.tgid);
        }
    }

    /// A fork-pending child duplicated an fd the kernel did not know: a seeded socket (copy
    /// it) or not a socket (the target fd, if it was a seeded socket, is gone).
    fn apply_dup(&mut self, ev: &Event, actions: &mut Vec<Action>) {
        let tgid = ev.tgid;
        let (oldfd, newfd) = (ev.fd as u32, ev.arg as u32);
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        if p.sockets.remove(&newfd).is_some() {
            actions.push(Action::Forget {
                tgid,
                fd: newfd,
                not_after_ns: ev.ts_ns,
                kernel_removed: false,
            });
        }
        if let Some(src) = p.sockets.get(&oldfd).copied() {
            let mut record = src.record;
            record.origin = Origin::Dup as u8;
            record.created_ns = ev.ts_ns;
            record.tid = ev.tid;
            record.stack_id = ev.record.stack_id;
            record.caller = ev.record.caller;
            p.sockets.insert(
                newfd,
                Socket {
                    inode: src.inode,
                    ..Socket::new(record, tgid)
                },
            );
            actions.push(Action::Insert {
                tgid,
                fd: newfd,
                record,
            });
        }
    }
}

/// What reconciling one process with /proc found. `unseen`: socket fds /proc lists that LIVE
/// lacks (with their inode); `vanished`: LIVE fds /proc does not list. Both are candidates:
/// the caller re-checks them a moment later, since a socket's fd is visible in /proc just
/// before the syscall-exit program records it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconcile {
    pub unseen: Vec<(u32, u64)>,
    pub vanished: Vec<u32>,
}

/// Compares a process's LIVE entries (as of a dump taken before the /proc read) with the socket
/// fds /proc lists.
pub fn reconcile(live: &HashMap<u32, Socket>, proc_fds: &[(u32, u64)]) -> Reconcile {
    let mut r = Reconcile::default();
    for (fd, inode) in proc_fds {
        if !live.contains_key(fd) {
            r.unseen.push((*fd, *inode));
        }
    }
    for fd in live.keys() {
        if !proc_fds.iter().any(|(f, _)| f == fd) {
            r.vanished.push(*fd);
        }
    }
    r.vanished.sort_unstable();
    r
}

#[cfg(test)]
mod tests;
