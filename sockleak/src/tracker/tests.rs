//! Unit tests of the tracker, and a model-based property: random sequences of every way a socket
//! fd comes and goes, run through a model of the kernel programs' rules and the session's
//! handling of the tracker's actions, keep the mirror equal to a model fd table.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sockleak_common::{
    event::{Event, EventKind, Syscall},
    socket::{NO_STACK, Origin, SocketRecord},
    target::{Target, state},
};

use super::*;

fn ev(kind: EventKind, tgid: u32, ts: u64, fd: i32, arg: i64) -> Event {
    let mut e = Event::EMPTY;
    e.ts_ns = ts;
    e.tgid = tgid;
    e.tid = tgid;
    e.kind = kind as u8;
    e.fd = fd;
    e.arg = arg;
    e
}

fn rec(created: u64, origin: Origin) -> SocketRecord {
    let mut r = SocketRecord::EMPTY;
    r.created_ns = created;
    r.origin = origin as u8;
    r.stack_id = NO_STACK;
    r
}

fn apply(t: &mut Tracker, e: Event) -> Vec<Action> {
    let mut a = Vec::new();
    let kind = EventKind::from_u8(e.kind).unwrap();
    t.apply(&e, kind, &mut a);
    a
}

/// Closes are derived; what can be checked is that nothing went negative on the way.
fn invariant(p: &Process) {
    let c = p.counts;
    assert!(
        c.preexisting + p.opened() + c.unseen_opened >= c.unseen_closed + p.live(),
        "{c:?} live {}",
        p.live()
    );
}

#[test]
fn live_sync_and_counters() {
    let mut t = Tracker::default();
    t.process(10, 0);
    let mut by = HashMap::new();
    by.insert(
        10,
        vec![(3, rec(1, Origin::Socket)), (4, rec(2, Origin::Socket))],
    );
    t.sync_live(&by);
    let mut k = Target::new(state::ACTIVE, 0);
    k.opened = 5;
    t.set_counters(10, k);
    let p = &t.procs[&10];
    assert_eq!((p.live(), p.opened(), p.closed()), (2, 5, 3));
    invariant(p);
    // A later dump without fd 3: the mirror follows.
    by.insert(10, vec![(4, rec(2, Origin::Socket))]);
    t.sync_live(&by);
    assert_eq!(t.procs[&10].live(), 1);
    // An unchanged set keeps the known inode and takes what the kernel learned since.
    t.procs
        .get_mut(&10)
        .unwrap()
        .sockets
        .get_mut(&4)
        .unwrap()
        .inode = Some(77);
    let mut learned = rec(2, Origin::Socket);
    learned.protocol = 6;
    by.insert(10, vec![(4, learned)]);
    t.sync_live(&by);
    let s = &t.procs[&10].sockets[&4];
    assert_eq!((s.inode, s.record.protocol), (Some(77), 6));
    // fd 4 reused by a newer socket, same count: a different socket, its inode unknown.
    by.insert(10, vec![(4, rec(3, Origin::Socket))]);
    t.sync_live(&by);
    let s = &t.procs[&10].sockets[&4];
    assert_eq!((s.inode, s.record.created_ns), (None, 3));
}

#[test]
fn pending_close_of_a_seed_is_counted_by_userspace() {
    let mut t = Tracker::default();
    assert!(t.seed(10, 5, Socket::new(rec(1, Origin::Inherited), 9), 1));
    assert!(!t.seed(10, 5, Socket::new(rec(1, Origin::Inherited), 9), 1));
    let a = apply(&mut t, ev(EventKind::Close, 10, 9, 5, 0));
    assert_eq!(
        a,
        vec![Action::Forget {
            tgid: 10,
            fd: 5,
            not_after_ns: 9,
            kernel_removed: false
        }]
    );
    t.forgot(a[0], true);
    let p = &t.procs[&10];
    assert_eq!((p.live(), p.counts.preexisting, p.closed()), (0, 1, 1));
    invariant(p);
}

#[test]
fn a_seed_that_arrives_after_the_kernel_closed_it_never_counts() {
    let mut t = Tracker::default();
    t.seed(10, 7, Socket::new(rec(1, Origin::Inherited), 10), 1);
    let a = apply(&mut t, ev(EventKind::Close, 10, 9, 7, 1));
    t.forgot(a[0], true);
    let p = &t.procs[&10];
    assert_eq!((p.counts.preexisting, p.closed(), p.live()), (0, 0, 0));
    invariant(p);
}

#[test]
fn pending_dup_copies_a_seed_or_drops_the_target() {
    let mut t = Tracker::default();
    t.seed(10, 3, Socket::new(rec(1, Origin::Inherited), 9), 1);
    t.seed(10, 9, Socket::new(rec(1, Origin::Inherited), 9), 1);
    // dup2(3, 20): a copy of a seed.
    let a = apply(&mut t, ev(EventKind::Dup, 10, 5, 3, 20));
    assert!(matches!(a[..], [Action::Insert { fd: 20, .. }]));
    t.inserted(10, true);
    assert_eq!(t.procs[&10].sockets[&20].record.origin, Origin::Dup as u8);
    // dup2(0, 9): a non-socket over a seed.
    let a = apply(&mut t, ev(EventKind::Dup, 10, 6, 0, 9));
    assert!(matches!(a[..], [Action::Forget { fd: 9, .. }]));
    t.forgot(a[0], true);
    let p = &t.procs[&10];
    assert_eq!(p.live(), 2);
    invariant(p);
}

#[test]
fn close_range_the_kernel_could_not_apply_goes_to_userspace() {
    let mut t = Tracker::default();
    for fd in 3..8 {
        t.seed(10, fd, Socket::new(rec(1, Origin::Preexisting), 10), 1);
    }
    let mut e = ev(EventKind::CloseRange, 10, 5, 4, 5);
    e.arg2 = 0;
    let a = apply(&mut t, e);
    assert_eq!(a.len(), 3, "{a:?}");
    assert!(a.contains(&Action::CloseRange {
        tgid: 10,
        first: 4,
        last: 5,
        ts_ns: 5
    }));
    let left: BTreeSet<u32> = t.procs[&10].sockets.keys().copied().collect();
    assert_eq!(left, BTreeSet::from([3, 6, 7]));
}

#[test]
fn fork_exec_exit() {
    let mut t = Tracker::default();
    t.process(10, 0);
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
    let a = apply(&mut t, ev(EventKind::Exec, 10, 3, -1, 2));
    assert_eq!(
        a,
        vec![Action::Exec {
            tgid: 10,
            reconcile: false
        }]
    );
    let a = apply(&mut t, ev(EventKind::Exec, 10, 3, -1, -1));
    assert_eq!(
        a,
        vec![Action::Exec {
            tgid: 10,
            reconcile: true
        }]
    );
    // The kernel hands over two sockets, then the exit with its counts.
    let mut s = ev(EventKind::ExitSocket, 10, 8, 4, 0);
    s.record = rec(1, Origin::Socket);
    apply(&mut t, s);
    s.fd = 6;
    apply(&mut t, s);
    let mut x = ev(EventKind::Exit, 10, 9, -1, 7);
    x.flags = 1;
    let a = apply(&mut t, x);
    assert_eq!(
        a,
        vec![Action::Exited {
            tgid: 10,
            collect: false,
            ts_ns: 9
        }]
    );
    assert!(!t.procs.contains_key(&10));
    let p = t.exited.last().unwrap();
    assert_eq!((p.live(), p.opened(), p.closed()), (2, 7, 5));
    assert_eq!(p.exited_ns, Some(9));
}

#[test]
fn exited_processes_are_bounded() {
    let mut t = Tracker::default();
    let mut a = Vec::new();
    // One process that left a socket open, then many that left nothing.
    t.seed(1, 3, Socket::new(rec(1, Origin::Preexisting), 1), 1);
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
    t.seed(11, 3, Socket::new(rec(1, Origin::Preexisting), 11), 1);
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
        (
            k.syscall,
            k.errno,
            f.count,
            f.first_ns,
            f.last_ns,
            f.recent.len()
        ),
        (Syscall::Accept4, 24, 3, 5, 7, 3)
    );
}

#[test]
fn reconcile_finds_both_directions() {
    let mut live = HashMap::new();
    live.insert(3, Socket::new(rec(1, Origin::Socket), 1));
    live.insert(4, Socket::new(rec(1, Origin::Socket), 1));
    let r = reconcile(&live, &[(3, 100), (9, 900)]);
    assert_eq!(r.unseen, vec![(9, 900)]);
    assert_eq!(r.vanished, vec![4]);
    assert_eq!(reconcile(&live, &[(3, 1), (4, 2)]), Reconcile::default());
}

#[test]
fn growth_slope() {
    let mut p = Process::new(1, None, 0);
    for i in 0..10u64 {
        for fd in 0..(i * 3) as u32 {
            p.sockets
                .entry(fd)
                .or_insert(Socket::new(SocketRecord::EMPTY, 1));
        }
        p.sample(i * 1_000_000_000, Some(i * 3 + 10));
    }
    assert!((p.growth_per_s() - 3.0).abs() < 1e-9);
    assert!((p.fd_growth_per_s() - 3.0).abs() < 1e-9);
    assert_eq!(slope(std::iter::once((0, 1.0))), 0.0);
    // Days of uptime in ns, a noisy line: the one-pass sums keep the textbook answer.
    let base = 86_400 * 30 * 1_000_000_000u64;
    let pts: Vec<(u64, f64)> = (0..30u64)
        .map(|i| {
            let noise = if i % 2 == 0 { 0.5 } else { -0.5 };
            (
                base + i * 2_000_000_000,
                1000.0 + 0.25 * (i * 2) as f64 + noise,
            )
        })
        .collect();
    let n = pts.len() as f64;
    let xs: Vec<f64> = pts.iter().map(|p| (p.0 - base) as f64 / 1e9).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = xs
        .iter()
        .zip(&pts)
        .map(|(x, p)| (x - mx) * (p.1 - my))
        .sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    assert!((slope(pts.iter().copied()) - sxy / sxx).abs() < 1e-9);
    assert_eq!(
        slope([(base, 1.0), (base, 5.0)].into_iter()),
        0.0,
        "no time passed"
    );
}

// ---- The model -------------------------------------------------------------------------------

/// What an fd refers to in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fd {
    Socket { id: u64, cloexec: bool },
    File,
}

#[derive(Clone, Debug, Default)]
struct ModelProc {
    fds: BTreeMap<u32, Fd>,
    /// Kernel state.
    pending: bool,
    /// userspace asked for ACTIVE (CONTROL); applied on the process's next event.
    control_active: bool,
    counters: Target,
    /// An unseen open or close happened since the last reconciliation.
    dirty: bool,
    /// Socket fds that went away (closed, replaced, dropped on exec), truly.
    closed_truth: u64,
    /// Everything about the process was observable: traced from the start, nothing unseen.
    /// (A forked child may close an inherited socket before userspace ever sees it.)
    exact: bool,
}

impl ModelProc {
    /// Removes fd from the table, counting a socket that goes.
    fn drop_fd(&mut self, fd: u32) -> Option<Fd> {
        let f = self.fds.remove(&fd);
        if matches!(f, Some(Fd::Socket { .. })) {
            self.closed_truth += 1;
        }
        f
    }

    fn lowest_free(&self) -> u32 {
        (3..).find(|fd| !self.fds.contains_key(fd)).unwrap_or(3)
    }

    fn sockets(&self) -> BTreeSet<u32> {
        self.fds
            .iter()
            .filter(|(_, f)| matches!(f, Fd::Socket { .. }))
            .map(|(fd, _)| *fd)
            .collect()
    }
}

/// The kernel programs' rules, the ring of events, and the session's execution of actions.
#[derive(Default)]
struct Sim {
    procs: BTreeMap<u32, ModelProc>,
    live: BTreeMap<(u32, u32), SocketRecord>,
    ring: Vec<Event>,
    now: u64,
    next_id: u64,
    next_pid: u32,
    tracker: Tracker,
    /// Children seeded in the current drain, made ACTIVE when it ends.
    seeded: Vec<u32>,
    /// Final socket sets of exited processes that were consistent when they exited (and their
    /// true close count when it was observable).
    finals: Vec<(u32, BTreeSet<u32>, Option<u64>)>,
}

#[derive(Clone, Debug)]
enum Op {
    Socket(usize),
    Close(usize, u32),
    Dup2(usize, u32, u32),
    OpenFile(usize),
    CloseRange(usize, u32, u32),
    Fork(usize),
    /// Fork, and the child closes its first inherited socket while userspace seeds it.
    ForkRace(usize),
    Exec(usize),
    Exit(usize),
    Receive(usize, u8),
    Uring(usize),
    UnseenOpen(usize),
    UnseenClose(usize, u32),
    Drain,
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0usize..4;
    let fd = 0u32..12;
    prop_oneof![
        4 => p.clone().prop_map(Op::Socket),
        3 => (p.clone(), fd.clone()).prop_map(|(p, f)| Op::Close(p, f)),
        2 => (p.clone(), fd.clone(), fd.clone()).prop_map(|(p, a, b)| Op::Dup2(p, a, b)),
        1 => p.clone().prop_map(Op::OpenFile),
        1 => (p.clone(), fd.clone(), fd.clone()).prop_map(|(p, a, b)| Op::CloseRange(p, a.min(b), a.max(b))),
        1 => p.clone().prop_map(Op::Fork),
        1 => p.clone().prop_map(Op::ForkRace),
        1 => p.clone().prop_map(Op::Exec),
        1 => p.clone().prop_map(Op::Exit),
        1 => (p.clone(), 1u8..4).prop_map(|(p, n)| Op::Receive(p, n)),
        1 => p.clone().prop_map(Op::Uring),
        1 => p.clone().prop_map(Op::UnseenOpen),
        1 => (p.clone(), fd).prop_map(|(p, f)| Op::UnseenClose(p, f)),
        2 => Just(Op::Drain),
        2 => Just(Op::Tick),
    ]
}

impl Sim {
    fn new() -> Sim {
        let mut s = Sim {
            next_pid: 100,
            ..Sim::default()
        };
        // Two processes traced from the start, one holding preexisting sockets.
        for pid in [100, 101] {
            let mut m = ModelProc {
                exact: true,
                ..ModelProc::default()
            };
            if pid == 100 {
                for fd in 3..5 {
                    m.fds.insert(
                        fd,
                        Fd::Socket {
                            id: fd as u64,
                            cloexec: false,
                        },
                    );
                }
            }
            s.procs.insert(pid, m);
            s.tracker.process(pid, 0);
            for fd in s.procs[&pid].sockets() {
                s.live.insert((pid, fd), rec(0, Origin::Preexisting));
                s.tracker
                    .seed(pid, fd, Socket::new(rec(0, Origin::Preexisting), pid), 0);
            }
        }
        s.next_pid = 102;
        s.next_id = 1000;
        s
    }

    fn pick(&self, i: usize) -> Option<u32> {
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        (!pids.is_empty()).then(|| pids[i % pids.len()])
    }

    fn tick(&mut self) -> u64 {
        self.now += 10;
        self.now
    }

    fn event(&mut self, kind: EventKind, tgid: u32, fd: i32, arg: i64) -> Event {
        ev(kind, tgid, self.now, fd, arg)
    }

    /// The kernel's per-event CONTROL check (apply_control): a pending process flips here.
    fn kernel_touch(&mut self, pid: u32) {
        let m = self.procs.get_mut(&pid).unwrap();
        if m.pending && m.control_active {
            m.pending = false;
            m.control_active = false;
        }
    }

    fn new_socket(&mut self, pid: u32, origin: Origin, kernel_sees: bool) {
        let now = self.tick();
        let id = self.next_id;
        self.next_id += 1;
        let m = self.procs.get_mut(&pid).unwrap();
        let fd = m.lowest_free();
        m.fds.insert(
            fd,
            Fd::Socket {
                id,
                cloexec: id.is_multiple_of(3),
            },
        );
        if kernel_sees {
            self.kernel_touch(pid);
            // The kernel replaces an entry still at that fd.
            self.live.insert((pid, fd), rec(now, origin));
            self.procs.get_mut(&pid).unwrap().counters.opened += 1;
        } else {
            let m = self.procs.get_mut(&pid).unwrap();
            m.dirty = true;
            m.exact = false;
        }
    }

    fn close(&mut self, pid: u32, fd: u32) {
        self.tick();
        self.kernel_touch(pid);
        let m = self.procs.get_mut(&pid).unwrap();
        if m.drop_fd(fd).is_none() {
            return;
        }
        let removed = self.live.remove(&(pid, fd)).is_some();
        if m.pending {
            let e = self.event(EventKind::Close, pid, fd as i32, removed as i64);
            self.ring.push(e);
        }
    }

    fn dup2(&mut self, pid: u32, old: u32, new: u32) {
        let now = self.tick();
        self.kernel_touch(pid);
        let m = self.procs.get_mut(&pid).unwrap();
        let Some(src) = m.fds.get(&old).copied() else {
            return;
        };
        if old == new {
            return;
        }
        m.drop_fd(new);
        m.fds.insert(new, src);
        self.live.remove(&(pid, new));
        match self.live.get(&(pid, old)).copied() {
            Some(r) => {
                let mut r = r;
                r.created_ns = now;
                r.origin = Origin::Dup as u8;
                self.live.insert((pid, new), r);
                self.procs.get_mut(&pid).unwrap().counters.opened += 1;
                // (dup2 removed any entry at `new` first, so nothing is replaced here.)
            }
            None if m.pending => {
                let e = self.event(EventKind::Dup, pid, old as i32, new as i64);
                self.ring.push(e);
            }
            None => {
                if matches!(src, Fd::Socket { .. }) {
                    // A copy of a socket the kernel never knew: unseen until reconciled.
                    let m = self.procs.get_mut(&pid).unwrap();
                    m.dirty = true;
                    m.exact = false;
                }
            }
        }
    }

    fn close_range(&mut self, pid: u32, first: u32, last: u32) {
        self.tick();
        self.kernel_touch(pid);
        let m = self.procs.get_mut(&pid).unwrap();
        let gone: Vec<u32> = m.fds.range(first..=last).map(|(fd, _)| *fd).collect();
        for fd in gone {
            m.drop_fd(fd);
        }
        self.live
            .retain(|(p, fd), _| !(*p == pid && (first..=last).contains(fd)));
        if m.pending {
            let mut e = self.event(EventKind::CloseRange, pid, first as i32, last as i64);
            e.arg2 = 1;
            self.ring.push(e);
        }
    }

    fn fork(&mut self, pid: u32, race: bool) {
        self.tick();
        self.kernel_touch(pid);
        let child = self.next_pid;
        self.next_pid += 1;
        let mut m = self.procs[&pid].clone();
        m.pending = true;
        m.control_active = false;
        m.counters = Target::default();
        m.dirty = false;
        m.closed_truth = 0;
        m.exact = false;
        self.procs.insert(child, m);
        let mut e = self.event(EventKind::Fork, pid, -1, child as i64);
        if race {
            // Marked for the session: close the first inherited socket mid-seed.
            e.arg2 = 1;
        }
        self.ring.push(e);
    }

    fn exec(&mut self, pid: u32) {
        self.tick();
        self.kernel_touch(pid);
        let m = self.procs.get_mut(&pid).unwrap();
        let gone: Vec<u32> = m
            .fds
            .iter()
            .filter(|(_, f)| matches!(f, Fd::Socket { cloexec: true, .. }))
            .map(|(fd, _)| *fd)
            .collect();
        for fd in gone {
            m.drop_fd(fd);
        }
        let open: BTreeSet<u32> = m.fds.keys().copied().collect();
        self.live
            .retain(|(p, fd), _| *p != pid || open.contains(fd));
        let e = self.event(EventKind::Exec, pid, -1, 0);
        self.ring.push(e);
    }

    fn exit(&mut self, pid: u32) {
        self.tick();
        let m = self.procs.remove(&pid).unwrap();
        let held: Vec<u32> = self
            .live
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, fd)| *fd)
            .collect();
        for fd in held {
            let r = self.live.remove(&(pid, fd)).unwrap();
            let mut e = self.event(EventKind::ExitSocket, pid, fd as i32, 0);
            e.record = r;
            self.ring.push(e);
        }
        let mut e = self.event(EventKind::Exit, pid, -1, m.counters.opened as i64);
        e.flags = 1;
        self.ring.push(e);
        if !m.dirty && !m.pending {
            self.finals
                .push((pid, m.sockets(), m.exact.then_some(m.closed_truth)));
        }
    }

    /// The session: apply the ring until it is empty (events the actions cause included),
    /// carry out actions against LIVE and /proc (the model), then make seeded children ACTIVE.
    fn drain(&mut self) {
        loop {
            let ring = std::mem::take(&mut self.ring);
            if ring.is_empty() {
                break;
            }
            for e in ring {
                let kind = EventKind::from_u8(e.kind).unwrap();
                let race = kind == EventKind::Fork && e.arg2 == 1;
                let mut actions = Vec::new();
                self.tracker.apply(&e, kind, &mut actions);
                for a in actions {
                    self.act(a, race);
                }
            }
        }
        for child in std::mem::take(&mut self.seeded) {
            if let Some(m) = self.procs.get_mut(&child) {
                m.control_active = true;
            }
        }
    }

    fn act(&mut self, a: Action, race: bool) {
        match a {
            Action::Forget {
                tgid,
                fd,
                not_after_ns,
                ..
            } => {
                let deleted = match self.live.get(&(tgid, fd)) {
                    Some(r) if r.created_ns <= not_after_ns => {
                        self.live.remove(&(tgid, fd));
                        true
                    }
                    _ => false,
                };
                self.tracker.forgot(a, deleted);
            }
            Action::Insert { tgid, fd, record } => {
                let ok = !self.live.contains_key(&(tgid, fd));
                if ok {
                    self.live.insert((tgid, fd), record);
                }
                self.tracker.inserted(tgid, ok);
            }
            Action::SeedChild { child, fork_ns, .. } => {
                let Some(m) = self.procs.get(&child) else {
                    return;
                };
                // /proc is read...
                let listed = m.sockets();
                let listed_at = self.tick();
                self.tracker.listing(child, listed_at);
                if race && let Some(first) = listed.iter().next().copied() {
                    // ... the child closes one of them meanwhile ...
                    self.close(child, first);
                }
                // ... then what was listed is inserted.
                for fd in listed {
                    let r = rec(fork_ns, Origin::Inherited);
                    if let std::collections::btree_map::Entry::Vacant(e) =
                        self.live.entry((child, fd))
                    {
                        e.insert(r);
                        self.tracker.seed(child, fd, Socket::new(r, child), fork_ns);
                    }
                }
                self.seeded.push(child);
            }
            Action::CloseRange { .. } => unreachable!("the model kernel applies close_range"),
            Action::Exited { collect, .. } => assert!(!collect),
            Action::Exec { .. } | Action::FailureSeen { .. } | Action::NewStack { .. } => {}
        }
    }

    /// An interval: drain, dump LIVE and the counters into the tracker, then reconcile every
    /// process with /proc (the model) and check the mirror against the model.
    fn interval(&mut self) {
        self.drain();
        let mut by: HashMap<u32, Vec<(u32, SocketRecord)>> = HashMap::new();
        for ((p, fd), r) in &self.live {
            by.entry(*p).or_default().push((*fd, *r));
        }
        for (pid, m) in &self.procs {
            self.tracker.set_counters(*pid, m.counters);
        }
        self.tracker.sync_live(&by);
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let proc_fds: Vec<(u32, u64)> = self.procs[&pid]
                .fds
                .iter()
                .filter_map(|(fd, f)| match f {
                    Fd::Socket { id, .. } => Some((*fd, *id)),
                    Fd::File => None,
                })
                .collect();
            let found = reconcile(&self.tracker.procs[&pid].sockets, &proc_fds);
            for (fd, _) in found.unseen {
                let r = rec(self.now, Origin::Unseen);
                self.live.insert((pid, fd), r);
                self.tracker.adopt(pid, fd, Socket::new(r, pid));
            }
            for fd in found.vanished {
                self.live.remove(&(pid, fd));
                self.tracker.vanished(pid, fd);
            }
            self.procs.get_mut(&pid).unwrap().dirty = false;
            let p = &self.tracker.procs[&pid];
            let m = &self.procs[&pid];
            let mirror: BTreeSet<u32> = p.sockets.keys().copied().collect();
            assert_eq!(mirror, m.sockets(), "pid {pid}");
            invariant(p);
            if m.exact {
                assert_eq!(p.closed(), m.closed_truth, "closes of {pid}");
                assert_eq!(p.opened(), m.counters.opened, "opens of {pid}");
            }
        }
        for (pid, fds, closed) in std::mem::take(&mut self.finals) {
            let p = self
                .tracker
                .exited
                .iter()
                .rev()
                .find(|p| p.tgid == pid)
                .expect("exited process kept");
            let held: BTreeSet<u32> = p.sockets.keys().copied().collect();
            assert_eq!(held, fds, "final state of {pid}");
            invariant(p);
            if let Some(c) = closed {
                assert_eq!(p.closed(), c, "closes of exited {pid}");
            }
        }
    }

    fn run(&mut self, op: Op) {
        let Some(pid) = (match &op {
            Op::Socket(i)
            | Op::Close(i, _)
            | Op::Dup2(i, _, _)
            | Op::OpenFile(i)
            | Op::CloseRange(i, _, _)
            | Op::Fork(i)
            | Op::ForkRace(i)
            | Op::Exec(i)
            | Op::Exit(i)
            | Op::Receive(i, _)
            | Op::Uring(i)
            | Op::UnseenOpen(i)
            | Op::UnseenClose(i, _) => self.pick(*i),
            Op::Drain | Op::Tick => Some(0),
        }) else {
            return;
        };
        match op {
            Op::Socket(_) => self.new_socket(pid, Origin::Socket, true),
            Op::Close(_, fd) => self.close(pid, fd),
            Op::Dup2(_, a, b) => self.dup2(pid, a, b),
            Op::OpenFile(_) => {
                let m = self.procs.get_mut(&pid).unwrap();
                let fd = m.lowest_free();
                m.fds.insert(fd, Fd::File);
            }
            Op::CloseRange(_, a, b) => self.close_range(pid, a, b),
            Op::Fork(_) => self.fork(pid, false),
            Op::ForkRace(_) => self.fork(pid, true),
            Op::Exec(_) => self.exec(pid),
            Op::Exit(_) => self.exit(pid),
            Op::Receive(_, n) => {
                for _ in 0..n {
                    self.new_socket(pid, Origin::Received, true);
                }
            }
            Op::Uring(_) => self.new_socket(pid, Origin::IoUring, true),
            Op::UnseenOpen(_) => self.new_socket(pid, Origin::Unseen, false),
            Op::UnseenClose(_, fd) => {
                let m = self.procs.get_mut(&pid).unwrap();
                if matches!(m.fds.get(&fd), Some(Fd::Socket { .. })) {
                    m.drop_fd(fd);
                    m.dirty = true;
                    m.exact = false;
                }
            }
            Op::Drain => self.drain(),
            Op::Tick => self.interval(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After every interval (drain, dump, reconcile) the mirror of each process equals the
    /// model's socket fds, and live = preexisting + opened + unseen_opened - closed -
    /// unseen_closed holds for live and exited processes alike.
    #[test]
    fn mirror_follows_the_model_fd_table(ops in proptest::collection::vec(op(), 0..120)) {
        let mut s = Sim::new();
        for op in ops {
            s.run(op);
        }
        s.run(Op::Tick);
    }
}
