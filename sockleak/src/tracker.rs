//! The live-socket mirror: applies kernel events to per-process socket sets and counters.
//!
//! The kernel's LIVE map decides which closes matter (only socket fds cost an event); this
//! mirror is what reports are built from. Events the kernel cannot resolve alone (close_range
//! over arbitrary ranges, close-on-exec at exec, fds inherited at fork) are resolved here, and
//! the kernel-map or /proc work they need is returned as [`Action`]s so this module stays pure.

use std::collections::VecDeque;

use hashbrown::HashMap;
use sockleak_common::{
    event::{Event, EventKind, Syscall},
    socket::{Origin, SAMPLED_OUT, SocketRecord},
};

/// close_range(2) flag: mark close-on-exec instead of closing.
const CLOSE_RANGE_CLOEXEC: u16 = 4;
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
    /// number was reused by a newer socket, which must stay).
    ForgetKernel {
        tgid: u32,
        fd: u32,
        not_after_ns: u64,
    },
    /// Put a socket the kernel could not know (a dup of an inherited fd) into LIVE.
    InsertKernel {
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
    /// Close-on-exec fds vanished: reconcile with /proc.
    ReconcileExec { tgid: u32, exec_ns: u64 },
    /// A failure was recorded: the loop notes the open-fd count while it is fresh.
    FailureSeen { tgid: u32, key: FailureKey },
    /// The process exited; its kernel state is gone.
    Exited { tgid: u32 },
}

/// One live socket fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub record: SocketRecord,
    /// Socket inode, when known (seeded from /proc).
    pub inode: Option<u64>,
    /// Process whose address space `record.stack_id` belongs to (the parent, for inherited fds).
    pub stack_pid: u32,
}

/// What /proc says about a process, refreshed every interval and kept after it exits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub comm: String,
    pub ns_pid: Option<u32>,
    pub fd_limit: Option<crate::procfs::FdLimit>,
    pub open_fds: Option<u64>,
    pub start_time: Option<u64>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
}

/// Failures are aggregated per (syscall, errno, call site).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailureKey {
    pub syscall: Syscall,
    pub errno: i64,
    pub site: crate::stacks::Site,
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
}

/// A point of the live-count history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t_ns: u64,
    pub live: u64,
    pub open_fds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub tgid: u32,
    pub parent: Option<u32>,
    /// When tracing of this process began (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    pub exited_ns: Option<u64>,
    pub sockets: HashMap<u32, Socket>,
    pub opened: u64,
    pub closed: u64,
    pub preexisting: u64,
    pub failures: HashMap<FailureKey, FailureStats>,
    pub samples: VecDeque<Sample>,
    pub meta: Meta,
}

impl Process {
    pub fn new(tgid: u32, parent: Option<u32>, since_ns: u64) -> Process {
        Process {
            tgid,
            parent,
            since_ns,
            exited_ns: None,
            sockets: HashMap::new(),
            opened: 0,
            closed: 0,
            preexisting: 0,
            failures: HashMap::new(),
            samples: VecDeque::new(),
            meta: Meta::default(),
        }
    }

    pub fn live(&self) -> u64 {
        self.sockets.len() as u64
    }

    fn add(&mut self, fd: u32, record: SocketRecord, inode: Option<u64>, stack_pid: u32) {
        let s = Socket {
            record,
            inode,
            stack_pid,
        };
        if self.sockets.insert(fd, s).is_some() {
            // The fd number was reused without a close sockleak saw: the old socket is gone.
            self.closed += 1;
        }
    }

    fn remove(&mut self, fd: u32) -> Option<Socket> {
        let s = self.sockets.remove(&fd);
        if s.is_some() {
            self.closed += 1;
        }
        s
    }

    pub fn sample(&mut self, t_ns: u64, open_fds: Option<u64>) {
        if self.samples.len() == MAX_SAMPLES {
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

    /// Re-aligns the mirror with the kernel's LIVE entries after lost events: sockets the
    /// kernel no longer has were closed unseen; sockets only the kernel has were opened unseen.
    /// Entries newer than `cutoff_ns` are left alone (their events may still be queued).
    pub fn resync(&mut self, kernel: &HashMap<u32, SocketRecord>, cutoff_ns: u64) {
        let gone: Vec<u32> = self
            .sockets
            .iter()
            .filter(|(fd, s)| s.record.created_ns <= cutoff_ns && !kernel.contains_key(*fd))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in gone {
            self.remove(fd);
        }
        for (fd, rec) in kernel {
            let known = self.sockets.get(fd).map(|s| s.record.created_ns);
            if rec.created_ns <= cutoff_ns && known != Some(rec.created_ns) {
                self.add(*fd, *rec, None, self.tgid);
                self.opened += 1;
            }
        }
    }

    /// Removes sockets that /proc no longer shows after exec. `present` holds the socket fds
    /// /proc lists now; sockets made after the exec are left to their own events.
    pub fn reconcile_exec(&mut self, present: &[u32], exec_ns: u64, actions: &mut Vec<Action>) {
        let gone: Vec<u32> = self
            .sockets
            .iter()
            .filter(|(fd, s)| s.record.created_ns <= exec_ns && !present.contains(fd))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in gone {
            self.remove(fd);
            actions.push(Action::ForgetKernel {
                tgid: self.tgid,
                fd,
                not_after_ns: exec_ns,
            });
        }
    }
}

/// Least-squares slope of (ns, value) points, per second. 0 with fewer than two points.
pub fn slope(points: impl Iterator<Item = (u64, f64)>) -> f64 {
    let pts: Vec<(f64, f64)> = points.map(|(t, v)| (t as f64 / 1e9, v)).collect();
    if pts.len() < 2 {
        return 0.0;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx <= f64::EPSILON {
        return 0.0;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    sxy / sxx
}

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
    /// With stack sampling: the latest sampled stack per (process, leaf caller).
    sampled: HashMap<(u32, u64), i32>,
}

impl Tracker {
    pub fn process(&mut self, tgid: u32, now_ns: u64) -> &mut Process {
        self.procs
            .entry(tgid)
            .or_insert_with(|| Process::new(tgid, None, now_ns))
    }

    /// Adds a socket found in /proc (at start, or inherited at fork). Returns false when the
    /// fd is already known (a socket made after tracing began wins).
    pub fn seed(&mut self, tgid: u32, fd: u32, seeded: Socket, now_ns: u64) -> bool {
        let p = self.process(tgid, now_ns);
        if p.sockets.contains_key(&fd) {
            return false;
        }
        p.sockets.insert(fd, seeded);
        p.preexisting += 1;
        true
    }

    /// Stack sampling (`--stack-sample`): a socket whose stack walk was skipped takes the
    /// latest sampled stack with the same leaf caller in the same process, so a large leak keeps
    /// its call site; a sampled one updates that.
    fn attribute(&mut self, tgid: u32, rec: &mut SocketRecord) {
        if rec.stack_id == SAMPLED_OUT {
            // Unknown yet: stays SAMPLED_OUT and is resolved at report time.
            if let Some(id) = self.sampled.get(&(tgid, rec.caller)) {
                rec.stack_id = *id;
            }
        } else if rec.stack_id >= 0 && rec.caller != 0 {
            self.sampled.insert((tgid, rec.caller), rec.stack_id);
        }
    }

    /// The latest sampled stack of a (process, leaf caller), for sockets still SAMPLED_OUT.
    pub fn sampled_stack(&self, tgid: u32, caller: u64) -> Option<i32> {
        self.sampled.get(&(tgid, caller)).copied()
    }

    /// Sampled stacks of a process (they must be symbolized even when their socket closed).
    pub fn sampled_stacks(&self, tgid: u32) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.sampled
            .iter()
            .filter(move |((p, _), _)| *p == tgid)
            .map(|((_, c), id)| (*c, *id))
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, ev: &Event, kind: EventKind, actions: &mut Vec<Action>) {
        let tgid = ev.tgid;
        let mut ev = *ev;
        if matches!(kind, EventKind::Open | EventKind::Dup | EventKind::Failure) {
            self.attribute(tgid, &mut ev.record);
        }
        let ev = &ev;
        match kind {
            EventKind::Open => {
                let p = self.process(tgid, ev.ts_ns);
                p.add(ev.fd as u32, ev.record, None, tgid);
                p.opened += 1;
            }
            EventKind::Close => {
                let Some(p) = self.procs.get_mut(&tgid) else {
                    return;
                };
                // arg 0: the kernel had no entry (fork-pending child); if userspace seeded
                // one meanwhile, it must go too.
                if p.remove(ev.fd as u32).is_some() && ev.arg == 0 {
                    actions.push(Action::ForgetKernel {
                        tgid,
                        fd: ev.fd as u32,
                        not_after_ns: ev.ts_ns,
                    });
                }
            }
            EventKind::Connect => {
                if let Some(s) = self
                    .procs
                    .get_mut(&tgid)
                    .and_then(|p| p.sockets.get_mut(&(ev.fd as u32)))
                {
                    s.record.remote = ev.record.remote;
                }
            }
            EventKind::Dup => self.apply_dup(ev, actions),
            EventKind::CloseRange => {
                if ev.flags & CLOSE_RANGE_CLOEXEC != 0 {
                    return; // nothing closes now; exec reconciliation handles it
                }
                let Some(p) = self.procs.get_mut(&tgid) else {
                    return;
                };
                let (first, last) = (ev.fd as u32, ev.arg as u32);
                let gone: Vec<u32> = p
                    .sockets
                    .keys()
                    .copied()
                    .filter(|fd| (first..=last).contains(fd))
                    .collect();
                for fd in gone {
                    p.remove(fd);
                    actions.push(Action::ForgetKernel {
                        tgid,
                        fd,
                        not_after_ns: ev.ts_ns,
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
                    actions.push(Action::ReconcileExec {
                        tgid,
                        exec_ns: ev.ts_ns,
                    });
                }
            }
            EventKind::Exit => {
                let Some(mut p) = self.procs.remove(&tgid) else {
                    return;
                };
                p.exited_ns = Some(ev.ts_ns);
                for fd in p.sockets.keys() {
                    actions.push(Action::ForgetKernel {
                        tgid,
                        fd: *fd,
                        not_after_ns: ev.ts_ns,
                    });
                }
                actions.push(Action::Exited { tgid });
                self.exited.push(p);
            }
            EventKind::Failure => {
                let syscall = Syscall::from_u8(ev.syscall).unwrap_or(Syscall::None);
                let key = FailureKey {
                    syscall,
                    errno: ev.arg,
                    site: crate::stacks::Site::of(&ev.record),
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
                });
                f.count += 1;
                f.unstreamed += 1;
                f.fd = ev.fd;
                f.last_ns = ev.ts_ns;
                f.tid = ev.tid;
                f.remote = ev.record.remote;
                actions.push(Action::FailureSeen { tgid, key });
            }
        }
    }

    /// Finalizes a process that exited: it keeps the sockets it held as its final state.
    pub fn exit(&mut self, tgid: u32, ts_ns: u64, actions: &mut Vec<Action>) {
        let Some(mut p) = self.procs.remove(&tgid) else {
            return;
        };
        p.exited_ns = Some(ts_ns);
        for fd in p.sockets.keys() {
            actions.push(Action::ForgetKernel {
                tgid,
                fd: *fd,
                not_after_ns: ts_ns,
            });
        }
        actions.push(Action::Exited { tgid });
        self.exited.push(p);
        self.bound_exited();
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

    fn apply_dup(&mut self, ev: &Event, actions: &mut Vec<Action>) {
        let tgid = ev.tgid;
        let (oldfd, newfd) = (ev.fd as u32, ev.arg as u32);
        let p = self.process(tgid, ev.ts_ns);
        if ev.record.origin != 0 {
            // The kernel knew the source socket and already updated LIVE.
            p.add(newfd, ev.record, None, tgid);
            p.opened += 1;
            return;
        }
        match p.sockets.get(&oldfd).copied() {
            Some(src) => {
                // A dup of a socket the kernel did not know yet (inherited, being seeded).
                let mut record = src.record;
                record.origin = Origin::Dup as u8;
                record.created_ns = ev.ts_ns;
                record.tid = ev.tid;
                record.stack_id = ev.record.stack_id;
                record.caller = ev.record.caller;
                p.add(newfd, record, src.inode, tgid);
                p.opened += 1;
                actions.push(Action::InsertKernel {
                    tgid,
                    fd: newfd,
                    record,
                });
            }
            None => {
                // The new fd is not a socket: whatever socket it replaced is closed.
                if p.remove(newfd).is_some() {
                    actions.push(Action::ForgetKernel {
                        tgid,
                        fd: newfd,
                        not_after_ns: ev.ts_ns,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sockleak_common::socket::NO_STACK;

    use super::*;

    fn ev(kind: EventKind, tgid: u32, ts: u64, fd: i32, arg: i64) -> Event {
        Event {
            ts_ns: ts,
            tgid,
            tid: tgid,
            kind: kind as u8,
            syscall: 0,
            flags: 0,
            fd,
            arg,
            record: SocketRecord::EMPTY,
        }
    }

    fn open(tgid: u32, ts: u64, fd: i32, stack: i32) -> Event {
        let mut e = ev(EventKind::Open, tgid, ts, fd, 0);
        e.record.origin = Origin::Socket as u8;
        e.record.created_ns = ts;
        e.record.stack_id = stack;
        e
    }

    fn apply(t: &mut Tracker, e: Event) -> Vec<Action> {
        let mut a = Vec::new();
        let kind = EventKind::from_u8(e.kind).unwrap();
        t.apply(&e, kind, &mut a);
        a
    }

    fn invariant(p: &Process) {
        assert_eq!(p.live(), p.preexisting + p.opened - p.closed);
    }

    #[test]
    fn open_close_counts() {
        let mut t = Tracker::default();
        for fd in 3..8 {
            apply(&mut t, open(10, fd as u64, fd, 1));
        }
        apply(&mut t, ev(EventKind::Close, 10, 20, 4, 1));
        apply(&mut t, ev(EventKind::Close, 10, 21, 99, 1)); // unknown fd: ignored
        let p = &t.procs[&10];
        assert_eq!((p.live(), p.opened, p.closed), (4, 5, 1));
        invariant(p);
    }

    #[test]
    fn close_of_seeded_fd_while_pending_forgets_kernel_entry() {
        let mut t = Tracker::default();
        let s = Socket {
            record: SocketRecord::EMPTY,
            inode: Some(77),
            stack_pid: 10,
        };
        assert!(t.seed(10, 5, s, 1));
        assert!(!t.seed(10, 5, s, 1), "a known fd is not seeded twice");
        let a = apply(&mut t, ev(EventKind::Close, 10, 9, 5, 0));
        assert_eq!(
            a,
            vec![Action::ForgetKernel {
                tgid: 10,
                fd: 5,
                not_after_ns: 9
            }]
        );
        invariant(&t.procs[&10]);
    }

    #[test]
    fn dup_known_and_unknown() {
        let mut t = Tracker::default();
        apply(&mut t, open(10, 1, 3, 7));
        // Kernel-resolved dup: record carried in the event.
        let mut d = ev(EventKind::Dup, 10, 2, 3, 9);
        d.record = t.procs[&10].sockets[&3].record;
        d.record.origin = Origin::Dup as u8;
        apply(&mut t, d);
        assert_eq!(t.procs[&10].live(), 2);
        // dup2 of a non-socket over fd 9: 9 is closed.
        let a = apply(&mut t, ev(EventKind::Dup, 10, 3, 0, 9));
        assert_eq!(t.procs[&10].live(), 1);
        assert_eq!(a.len(), 1);
        // Unresolved dup (origin 0) of a known socket: userspace copies and tells the kernel.
        let a = apply(&mut t, ev(EventKind::Dup, 10, 4, 3, 11));
        assert!(matches!(a[0], Action::InsertKernel { fd: 11, .. }));
        let p = &t.procs[&10];
        assert_eq!(p.sockets[&11].record.origin, Origin::Dup as u8);
        assert_eq!(p.live(), 2);
        invariant(p);
    }

    #[test]
    fn close_range_respects_bounds_and_cloexec_flag() {
        let mut t = Tracker::default();
        for fd in 3..10 {
            apply(&mut t, open(10, 1, fd, NO_STACK));
        }
        let mut cloexec = ev(EventKind::CloseRange, 10, 5, 3, u32::MAX as i64);
        cloexec.flags = CLOSE_RANGE_CLOEXEC;
        assert!(apply(&mut t, cloexec).is_empty());
        assert_eq!(t.procs[&10].live(), 7);
        let a = apply(&mut t, ev(EventKind::CloseRange, 10, 6, 5, 7));
        assert_eq!(a.len(), 3);
        let mut left: Vec<u32> = t.procs[&10].sockets.keys().copied().collect();
        left.sort();
        assert_eq!(left, vec![3, 4, 8, 9]);
        invariant(&t.procs[&10]);
    }

    #[test]
    fn fork_exec_exit() {
        let mut t = Tracker::default();
        apply(&mut t, open(10, 1, 3, 1));
        let a = apply(&mut t, ev(EventKind::Fork, 10, 2, -1, 11));
        assert_eq!(
            a,
            vec![Action::SeedChild {
                parent: 10,
                child: 11,
                fork_ns: 2
            }]
        );
        assert_eq!(t.procs[&11].parent, Some(10));
        let a = apply(&mut t, ev(EventKind::Exec, 10, 3, -1, 0));
        assert_eq!(
            a,
            vec![Action::ReconcileExec {
                tgid: 10,
                exec_ns: 3
            }]
        );
        // /proc shows fd 3 gone after exec; a socket made after exec stays.
        apply(&mut t, open(10, 4, 4, 1));
        let mut acts = Vec::new();
        t.procs
            .get_mut(&10)
            .unwrap()
            .reconcile_exec(&[4], 3, &mut acts);
        assert_eq!(acts.len(), 1);
        assert_eq!(t.procs[&10].live(), 1);
        let a = apply(&mut t, ev(EventKind::Exit, 10, 9, -1, 0));
        assert!(a.contains(&Action::Exited { tgid: 10 }));
        assert!(!t.procs.contains_key(&10));
        assert_eq!(t.exited[0].exited_ns, Some(9));
        assert_eq!(
            t.exited[0].live(),
            1,
            "final state keeps what it held at exit"
        );
    }

    #[test]
    fn resync_after_lost_events() {
        let mut t = Tracker::default();
        for fd in 3..6 {
            apply(&mut t, open(10, 1, fd, 1));
        }
        // The kernel says: fd 4 was closed, fd 9 was opened (both events lost), fd 7 is too new.
        let mut kernel = HashMap::new();
        for (fd, created) in [(3u32, 1u64), (5, 1), (9, 2), (7, 50)] {
            let mut r = SocketRecord::EMPTY;
            r.created_ns = created;
            r.origin = Origin::Socket as u8;
            kernel.insert(fd, r);
        }
        let p = t.procs.get_mut(&10).unwrap();
        p.resync(&kernel, 10);
        let mut fds: Vec<u32> = p.sockets.keys().copied().collect();
        fds.sort();
        assert_eq!(fds, vec![3, 5, 9]);
        invariant(p);
        // Idempotent.
        p.resync(&kernel, 10);
        assert_eq!(p.live(), 3);
        invariant(p);
    }

    #[test]
    fn sampled_out_sockets_take_the_latest_stack_of_their_caller() {
        let mut t = Tracker::default();
        let mut a = open(10, 1, 3, 7);
        a.record.caller = 0x100;
        apply(&mut t, a);
        let mut b = open(10, 2, 4, SAMPLED_OUT);
        b.record.caller = 0x100;
        apply(&mut t, b);
        let mut c = open(10, 3, 5, SAMPLED_OUT);
        c.record.caller = 0x200; // no sample yet for this caller
        apply(&mut t, c);
        let p = &t.procs[&10];
        assert_eq!(p.sockets[&4].record.stack_id, 7);
        assert_eq!(
            p.sockets[&5].record.stack_id, SAMPLED_OUT,
            "resolved at report time"
        );
        assert_eq!(t.sampled_stack(10, 0x100), Some(7));
        assert_eq!(t.sampled_stack(10, 0x200), None);
    }

    #[test]
    fn exited_processes_are_bounded() {
        let mut t = Tracker::default();
        let mut a = Vec::new();
        // One process that left a socket open, then many that left nothing.
        apply(&mut t, open(1, 1, 3, 1));
        t.exit(1, 2, &mut a);
        for pid in 2..(MAX_EXITED as u32 + 10) {
            t.process(pid, 3);
            t.exit(pid, 4, &mut a);
        }
        assert_eq!(t.exited.len(), MAX_EXITED);
        assert!(t.exited.iter().any(|p| p.tgid == 1), "the leaker is kept");
        assert_eq!(t.dropped_exited.len(), 9);
    }

    #[test]
    fn pid_reuse_does_not_merge() {
        let mut t = Tracker::default();
        apply(&mut t, open(11, 1, 3, 1));
        apply(&mut t, ev(EventKind::Fork, 10, 5, -1, 11));
        assert_eq!(t.procs[&11].live(), 0);
        assert_eq!(t.exited.len(), 1);
    }

    #[test]
    fn failures_aggregate_per_site() {
        let mut t = Tracker::default();
        for ts in [5, 6, 7] {
            let mut e = ev(EventKind::Failure, 10, ts, 3, 24);
            e.syscall = Syscall::Accept4 as u8;
            e.record.stack_id = 4;
            apply(&mut t, e);
        }
        let p = &t.procs[&10];
        assert_eq!(p.failures.len(), 1);
        let (k, f) = p.failures.iter().next().unwrap();
        assert_eq!(
            (k.syscall, k.errno, f.count, f.first_ns, f.last_ns),
            (Syscall::Accept4, 24, 3, 5, 7)
        );
    }

    #[test]
    fn growth_slope() {
        let mut p = Process::new(1, None, 0);
        for i in 0..10u64 {
            for fd in 0..(i * 3) as u32 {
                p.sockets.entry(fd).or_insert(Socket {
                    record: SocketRecord::EMPTY,
                    inode: None,
                    stack_pid: 1,
                });
            }
            p.sample(i * 1_000_000_000, Some(i * 3 + 10));
        }
        assert!((p.growth_per_s() - 3.0).abs() < 1e-9);
        assert!((p.fd_growth_per_s() - 3.0).abs() < 1e-9);
        assert_eq!(slope(std::iter::once((0, 1.0))), 0.0);
    }
}
