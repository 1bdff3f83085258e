//! `sockleak trace`: attach, follow events, print snapshots, and report at the end.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use hashbrown::HashMap;
use log::{info, warn};
use sockleak_common::{
    counters::LossCause,
    event::Event,
    socket::{Origin, SocketRecord},
    target::state,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::Instant,
};

use crate::{
    bpf::{Insert, Tracer},
    cgroup,
    cli::Format,
    config::Config,
    error::UserError,
    metrics::{self, SelfStats},
    netns,
    output::{self, Closed},
    preflight, procfs,
    report::{
        build::{self, BuildCtx},
        model::{FailureLine, Report, Snapshot},
        names, text,
    },
    serve,
    sockdiag::NetView,
    stacks::{Site, Stacks},
    tracker::{Action, FailureKey, Process, Socket, Tracker},
};

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How often one process's open-fd count is read while it keeps failing.
const FAILURE_FD_READ_NS: u64 = 100_000_000;
/// Events are batched in the kernel (see WAKEUP_BYTES); this bounds their delay.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// At most one streamed `failure` line per call site per second.
const FAILURE_STREAM_NS: u64 = 1_000_000_000;
/// Processes shown in text mode's live summary and report with `--all`.
const TOP_PROCESSES: usize = 20;

pub struct Session {
    cfg: Config,
    tracer: Tracer,
    tracker: Tracker,
    stacks: Stacks,
    start_ns: u64,
    /// Last /proc open-fd read per process for failures (rate limit).
    failure_fd_read: HashMap<u32, u64>,
    /// Lines of the last live summary, to redraw it in place on a terminal.
    drawn_lines: usize,
    /// stdout was closed (`| head`): stop quietly.
    closed: bool,
    /// Ring-buffer loss count at the last resync.
    resynced_at_loss: u64,
    /// Kernel events decoded so far.
    events_seen: u64,
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

/// Runs a trace to completion. Returns Ok also when stdout was closed under us.
pub fn run(cfg: Config) -> Result<()> {
    preflight::check_privileges()?;
    preflight::check_btf(Path::new(preflight::BTF))?;
    let tracefs = preflight::ensure_tracefs()?;
    preflight::raise_memlock();
    if let Some(out) = &cfg.output {
        check_output_path(out)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        // Before attaching: a Ctrl-C right after "attached" must give a report, not kill us.
        let signals = Signals {
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
        };
        let mut session = Session::start(cfg, &tracefs)?;
        session.run(signals).await
    })
}

fn check_output_path(p: &Path) -> Result<(), UserError> {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(UserError::Output {
            path: p.to_path_buf(),
            reason: format!("directory {} does not exist", dir.display()),
        });
    }
    if p.is_dir() {
        return Err(UserError::Output {
            path: p.to_path_buf(),
            reason: "is a directory; give a file name".into(),
        });
    }
    Ok(())
}

impl Session {
    fn start(cfg: Config, tracefs: &Path) -> Result<Session> {
        let mut tracer = Tracer::load(&cfg.load)?;
        // Targets start fork-pending: until their /proc fds are seeded, the kernel reports
        // every close, so a socket closed mid-seed is not kept as live.
        let mut initial: Vec<u32> = if cfg.all {
            procfs::all_pids()
        } else {
            cfg.pids.clone()
        };
        for c in &cfg.cgroups {
            initial.extend(cgroup::pids_in(&c.dir));
        }
        initial.sort_unstable();
        initial.dedup();
        for pid in &initial {
            tracer.set_target(*pid, state::FORK_PENDING)?;
        }
        tracer.attach(tracefs)?;
        for d in &tracer.degraded {
            warn!("{d}");
        }
        let start_ns = mono_ns();
        let mut s = Session {
            cfg,
            tracer,
            tracker: Tracker::default(),
            stacks: Stacks::default(),
            start_ns,
            failure_fd_read: HashMap::new(),
            drawn_lines: 0,
            closed: false,
            resynced_at_loss: 0,
            events_seen: 0,
        };
        let mut alive = 0;
        for pid in initial {
            s.tracker.process(pid, start_ns);
            if s.seed(pid, None, start_ns) {
                alive += 1;
            } else {
                s.tracker.procs.remove(&pid);
            }
            s.activate(pid)?;
        }
        if alive == 0 && s.cfg.pids_only() {
            return Err(UserError::NoSuchPid(s.cfg.pids[0]).into());
        }
        let pids = s.tracker.procs.keys().copied().collect::<Vec<_>>();
        for pid in pids {
            s.refresh(pid, start_ns);
        }
        let what = if s.cfg.all {
            format!("all {alive} processes")
        } else {
            let mut w = format!("{alive} process(es)");
            if !s.cfg.pids.is_empty() {
                w += &format!(", pids {:?}", s.cfg.pids);
            }
            for c in &s.cfg.cgroups {
                w += &format!(", cgroup {}", c.path);
            }
            w
        };
        info!("attached: tracing {what}; Ctrl-C for the report");
        Ok(s)
    }

    /// Marks a seeded process as fully tracked.
    fn activate(&mut self, pid: u32) -> Result<()> {
        if self.cfg.all || self.in_traced_cgroup(pid) {
            // With --all every process is traced; the entry only marked the seeding window.
            self.tracer.remove_target(pid);
            Ok(())
        } else if self.tracker.procs.contains_key(&pid) {
            self.tracer.set_target(pid, state::ACTIVE)
        } else {
            self.tracer.remove_target(pid);
            Ok(())
        }
    }

    /// Whether the kernel traces `pid` by its cgroup (then it needs no TARGETS entry).
    fn in_traced_cgroup(&self, pid: u32) -> bool {
        let Some(path) = cgroup::cgroup_of(pid) else {
            return false;
        };
        self.cfg.cgroups.iter().any(|c| {
            path == c.path || path.starts_with(&format!("{}/", c.path.trim_end_matches('/')))
        })
    }

    /// Seeds a process's socket fds from /proc into LIVE and the mirror. `parent` is the
    /// forking process and the fork time for children. False when the process is gone.
    fn seed(&mut self, pid: u32, parent: Option<(u32, u64)>, now_ns: u64) -> bool {
        let Ok(fds) = procfs::socket_fds(pid) else {
            return false;
        };
        for (fd, inode) in fds {
            let inherited = parent.and_then(|(ppid, fork_ns)| {
                self.tracker
                    .procs
                    .get(&ppid)?
                    .sockets
                    .get(&fd)
                    .filter(|s| s.record.created_ns <= fork_ns)
                    .copied()
            });
            let (record, stack_pid) = match (inherited, parent) {
                (Some(s), _) => {
                    let mut r = s.record;
                    r.origin = Origin::Inherited as u8;
                    (r, s.stack_pid)
                }
                (None, Some((_, fork_ns))) => (unknown_record(Origin::Inherited, fork_ns), pid),
                (None, None) => (unknown_record(Origin::Preexisting, now_ns), pid),
            };
            match self.tracer.insert_if_absent(pid, fd, &record) {
                // A socket made after tracing began already owns this fd; its event follows.
                Insert::Exists => continue,
                Insert::Inserted => {}
                Insert::Full => self.tracker.user_losses[LossCause::LiveMapFull as usize] += 1,
            }
            self.tracker.seed(
                pid,
                fd,
                Socket {
                    record,
                    inode: Some(inode),
                    stack_pid,
                },
                now_ns,
            );
        }
        true
    }

    async fn run(&mut self, mut sig: Signals) -> Result<()> {
        let ring = self
            .tracer
            .events
            .take()
            .context("event ring buffer already taken")?;
        // SAFETY: the ring buffer's fd is owned by `ring`, which the AsyncFd owns: it stays
        // open and the same for as long as it is registered.
        let mut events = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {e}"))?;
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick fires at once
        let deadline = self.cfg.duration.map(|d| Instant::now() + d);
        let far = Duration::from_secs(86400 * 365);
        let stop = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + far));
        tokio::pin!(stop);
        // `serve`: the HTTP server runs as its own task and asks this loop for answers.
        let (req_tx, mut requests) = tokio::sync::mpsc::channel::<serve::Request>(16);
        if let Some(opts) = self.cfg.serve.clone() {
            let listener = tokio::net::TcpListener::bind(opts.listen)
                .await
                .map_err(|e| UserError::Listen {
                    addr: opts.listen,
                    reason: e.to_string(),
                })?;
            let bound = listener.local_addr().unwrap_or(opts.listen);
            if !opts.listen.ip().is_loopback() {
                warn!(
                    "serving on non-loopback {}: anyone who can reach it sees process names and endpoints",
                    opts.listen
                );
            }
            let app = serve::router(req_tx.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    warn!("HTTP server stopped: {e}");
                }
            });
            info!("serving /metrics, /report and /healthz on http://{bound}");
        }
        drop(req_tx);
        loop {
            tokio::select! {
                guard = events.readable_mut() => {
                    let mut g = guard.context("waiting for events")?;
                    self.drain(g.get_inner_mut());
                    g.clear_ready();
                }
                _ = tick.tick() => {
                    // Events are batched in the kernel: apply them before looking.
                    self.drain(events.get_mut());
                    if self.tick().is_err() {
                        self.closed = true;
                    }
                }
                _ = drain.tick() => self.drain(events.get_mut()),
                Some(req) = requests.recv() => {
                    self.drain(events.get_mut());
                    self.answer(req);
                }
                _ = &mut stop => break,
                _ = sig.int.recv() => break,
                _ = sig.term.recv() => break,
            }
            if self.closed {
                break;
            }
            if self.cfg.serve.is_none() && self.cfg.pids_only() && self.tracker.procs.is_empty() {
                info!("every traced process has exited");
                break;
            }
        }
        // Events already in the ring belong to the report.
        self.drain(events.get_mut());
        self.tracer.flush_logs();
        if self.closed {
            return Ok(());
        }
        self.finish()
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let mut actions = Vec::new();
        while let Some(item) = ring.next() {
            match Event::decode(&item) {
                Ok((ev, kind)) => {
                    self.events_seen += 1;
                    self.tracker.apply(&ev, kind, &mut actions);
                }
                Err(e) => {
                    self.tracker.bad_events += 1;
                    if self.tracker.bad_events == 1 {
                        warn!("undecodable event ({e}): is the eBPF object from this build?");
                    }
                }
            }
            drop(item);
            for a in actions.drain(..) {
                self.act(a);
            }
            for pid in std::mem::take(&mut self.tracker.dropped_exited) {
                self.stacks.forget_pid(pid);
            }
        }
        self.tracer.flush_logs();
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::ForgetKernel {
                tgid,
                fd,
                not_after_ns,
            } => self.tracer.forget(tgid, fd, not_after_ns),
            Action::InsertKernel { tgid, fd, record } => {
                let _ = self.tracer.insert_if_absent(tgid, fd, &record);
            }
            Action::SeedChild {
                parent,
                child,
                fork_ns,
            } => {
                if !self.seed(child, Some((parent, fork_ns)), fork_ns) {
                    // Gone already; its exit event (which follows) finalizes it.
                }
                self.refresh(child, mono_ns());
                if let Err(e) = self.activate(child) {
                    warn!("{e:#}");
                }
            }
            Action::ReconcileExec { tgid, exec_ns } => {
                let present: Vec<u32> = procfs::socket_fds(tgid)
                    .map(|v| v.into_iter().map(|(fd, _)| fd).collect())
                    .unwrap_or_default();
                let mut more = Vec::new();
                if let Some(p) = self.tracker.procs.get_mut(&tgid) {
                    p.reconcile_exec(&present, exec_ns, &mut more);
                    if let Some(c) = procfs::comm(tgid) {
                        p.meta.comm = c;
                    }
                }
                for a in more {
                    self.act(a);
                }
            }
            Action::FailureSeen { tgid, key } => {
                let now = mono_ns();
                let last = self.failure_fd_read.get(&tgid).copied().unwrap_or(0);
                if now.saturating_sub(last) >= FAILURE_FD_READ_NS {
                    self.failure_fd_read.insert(tgid, now);
                    let n = procfs::open_fd_count(tgid);
                    if let Some(f) = self
                        .tracker
                        .procs
                        .get_mut(&tgid)
                        .and_then(|p| p.failures.get_mut(&key))
                    {
                        f.open_fds = n.or(f.open_fds);
                    }
                }
                if self.cfg.format == Format::Json {
                    self.stream_failure(tgid, key, now);
                }
            }
            Action::Exited { tgid } => {
                self.tracer.remove_target(tgid);
                self.failure_fd_read.remove(&tgid);
                // Its address space is gone: keep what the kernel recorded, as addresses.
                if let Some(p) = self.tracker.exited.last() {
                    let sites: Vec<Site> = stack_sites(p).map(|(_, s)| s).collect();
                    for s in sites {
                        self.stacks.fetch_raw(&self.tracer, s.stack_id);
                    }
                }
            }
        }
    }

    /// Streams a `failure` line, at most once per `FAILURE_STREAM_NS` per call site; the
    /// failures in between are counted in the next line's `suppressed`.
    fn stream_failure(&mut self, tgid: u32, key: FailureKey, now: u64) {
        let Some(f) = self
            .tracker
            .procs
            .get(&tgid)
            .and_then(|p| p.failures.get(&key))
        else {
            return;
        };
        if f.last_streamed_ns != 0 && now.saturating_sub(f.last_streamed_ns) < FAILURE_STREAM_NS {
            return;
        }
        self.stacks.resolve(&self.tracer, tgid, [key.site]);
        let p = &self.tracker.procs[&tgid];
        let f = &p.failures[&key];
        let line = FailureLine {
            kind: "failure",
            t_s: now.saturating_sub(self.start_ns) as f64 / 1e9,
            pid: tgid,
            comm: p.meta.comm.clone(),
            tid: f.tid,
            syscall: key.syscall.as_str().to_string(),
            errno: names::errno_name(key.errno),
            count: f.count,
            suppressed: f.unstreamed.saturating_sub(1),
            open_fds: f.open_fds,
            remote: names::endpoint(&f.remote),
            stack: self.stacks.frames(tgid, key.site),
        };
        if output::print(&json_line(&line)).is_err() {
            self.closed = true;
        }
        if let Some(f) = self
            .tracker
            .procs
            .get_mut(&tgid)
            .and_then(|p| p.failures.get_mut(&key))
        {
            f.last_streamed_ns = now;
            f.unstreamed = 0;
        }
    }

    /// Re-reads what /proc says about a live process and records a growth sample.
    fn refresh(&mut self, pid: u32, now_ns: u64) {
        let Some(p) = self.tracker.procs.get_mut(&pid) else {
            return;
        };
        if p.meta.comm.is_empty() {
            p.meta.comm = procfs::comm(pid).unwrap_or_default();
            p.meta.start_time = procfs::start_time(pid);
            p.meta.ns_pid = procfs::status(pid).and_then(|s| s.ns_pid);
            p.meta.cgroup = cgroup::cgroup_of(pid);
        }
        if let Some(l) = procfs::fd_limit(pid) {
            p.meta.fd_limit = Some(l);
        }
        if let Some(n) = procfs::open_fd_count(pid) {
            p.meta.open_fds = Some(n);
        }
        let open = p.meta.open_fds;
        p.sample(now_ns, open);
    }

    /// Symbolizes, once each, the stacks of live processes.
    fn resolve_stacks(&mut self) {
        let mut todo: HashMap<u32, Vec<Site>> = HashMap::new();
        for p in self.tracker.procs.values() {
            let sampled = self
                .tracker
                .sampled_stacks(p.tgid)
                .map(|(caller, stack_id)| (p.tgid, Site { stack_id, caller }));
            for (pid, site) in stack_sites(p).chain(sampled) {
                if !self.stacks.is_resolved(pid, site) {
                    todo.entry(pid).or_default().push(site);
                }
            }
        }
        for (pid, sites) in todo {
            if self.tracker.procs.contains_key(&pid) {
                self.stacks.resolve(&self.tracer, pid, sites);
            } else {
                for s in sites {
                    self.stacks.fetch_raw(&self.tracer, s.stack_id);
                }
            }
        }
    }

    fn lost(&self) -> [u64; 3] {
        let mut l = self.tracer.losses();
        for (i, v) in self.tracker.user_losses.iter().enumerate() {
            l[i] += v;
        }
        l
    }

    fn lost_events(&self) -> u64 {
        let l = self.lost();
        l[LossCause::RingBufFull as usize] + l[LossCause::LiveMapFull as usize]
    }

    /// Processes whose exit event was lost (or whose pid now names another process) are
    /// finalized here.
    fn reap(&mut self, now: u64) {
        let gone: Vec<u32> = self
            .tracker
            .procs
            .values()
            .filter(|p| {
                let st = procfs::start_time(p.tgid);
                st.is_none() || (p.meta.start_time.is_some() && st != p.meta.start_time)
            })
            .map(|p| p.tgid)
            .collect();
        let mut actions = Vec::new();
        for pid in gone {
            self.tracker.exit(pid, now, &mut actions);
        }
        for a in actions {
            self.act(a);
        }
    }

    /// After ring-buffer loss, the kernel's LIVE map is the truth: re-align the mirror with it.
    fn resync_if_lost(&mut self) {
        let lost = self.tracer.losses()[LossCause::RingBufFull as usize];
        if lost == self.resynced_at_loss {
            return;
        }
        self.resynced_at_loss = lost;
        let cutoff = mono_ns();
        let mut kernel: HashMap<u32, HashMap<u32, SocketRecord>> = HashMap::new();
        for item in self.tracer.live.iter() {
            let Ok((k, v)) = item else { continue };
            kernel.entry(k.tgid).or_default().insert(k.fd, v);
        }
        let empty = HashMap::new();
        for p in self.tracker.procs.values_mut() {
            p.resync(kernel.get(&p.tgid).unwrap_or(&empty), cutoff);
        }
        warn!(
            "ring buffer overflowed ({lost} events lost so far): re-synchronized with the kernel's live-socket map; counts are lower bounds"
        );
    }

    fn tick(&mut self) -> Result<(), Closed> {
        let now = mono_ns();
        self.resync_if_lost();
        self.reap(now);
        let pids: Vec<u32> = self.tracker.procs.keys().copied().collect();
        for pid in pids {
            self.refresh(pid, now);
        }
        self.resolve_stacks();
        self.tracer.flush_logs();
        let mut procs: Vec<&Process> = self
            .tracker
            .procs
            .values()
            .filter(|p| self.reportable(p))
            .collect();
        procs.sort_by(|a, b| {
            b.growth_per_s()
                .total_cmp(&a.growth_per_s())
                .then(b.live().cmp(&a.live()))
                .then(a.tgid.cmp(&b.tgid))
        });
        if self.cfg.serve.is_some() {
            return Ok(());
        }
        // The host view of TIME_WAIT, live, when the whole host is traced.
        let time_wait = if self.cfg.all {
            let mut views = HashMap::new();
            if let (Some(ns), Ok(v)) = (
                netns::netns_of(std::process::id()),
                NetView::of(std::process::id()),
            ) {
                views.insert(ns, v);
            }
            build::time_wait(&views, 3)
        } else {
            Vec::new()
        };
        let snap = Snapshot {
            kind: "snapshot",
            t_s: (now - self.start_ns) as f64 / 1e9,
            lost_events: self.lost_events(),
            time_wait,
            processes: procs.iter().map(|p| build::snapshot_process(p)).collect(),
        };
        match self.cfg.format {
            Format::Json => output::print(&(json_line(&snap))),
            Format::Text => {
                let mut shown = snap.clone();
                shown.processes.truncate(TOP_PROCESSES);
                let mut body = text::snapshot(&shown);
                if snap.processes.len() > TOP_PROCESSES {
                    body.push_str(&format!(
                        "... {} more processes (--format json lists all)\n",
                        snap.processes.len() - TOP_PROCESSES
                    ));
                }
                let lines = body.lines().count();
                let mut out = String::new();
                if output::stdout_is_tty() && self.drawn_lines > 0 {
                    // Move up over the previous summary and clear it: redraw in place.
                    out.push_str(&format!("\x1b[{}A\x1b[J", self.drawn_lines));
                } else if self.drawn_lines > 0 {
                    out.push('\n');
                }
                out.push_str(&body);
                self.drawn_lines = lines;
                output::print(&out)
            }
        }
    }

    /// Requested targets always; others once they have had a socket or a failure.
    fn reportable(&self, p: &Process) -> bool {
        (self.cfg.pids.contains(&p.tgid) || (!self.cfg.cgroups.is_empty() && p.parent.is_none()))
            || p.opened + p.preexisting > 0
            || !p.failures.is_empty()
    }

    /// The report as of now: symbolizes what is new and dumps the socket tables of every traced
    /// network namespace.
    fn build_report(&mut self) -> Report {
        self.resync_if_lost();
        let now = mono_ns();
        let pids: Vec<u32> = self.tracker.procs.keys().copied().collect();
        for pid in pids {
            self.refresh(pid, now);
        }
        self.resolve_stacks();
        // One socket-table dump per network namespace among the traced processes.
        let own_ns = netns::netns_of(std::process::id());
        let mut pid_ns: HashMap<u32, u64> = HashMap::new();
        let mut views: HashMap<u64, NetView> = HashMap::new();
        let mut view_pids: Vec<(u64, u32)> = own_ns
            .map(|ns| (ns, std::process::id()))
            .into_iter()
            .collect();
        for pid in self.tracker.procs.keys() {
            if let Some(ns) = netns::netns_of(*pid) {
                pid_ns.insert(*pid, ns);
                if !view_pids.iter().any(|(n, _)| *n == ns) {
                    view_pids.push((ns, *pid));
                }
            }
        }
        for (ns, pid) in view_pids {
            match NetView::of(pid) {
                Ok(v) => {
                    views.insert(ns, v);
                }
                Err(e) => warn!("TCP states unavailable for pid {pid}'s network namespace: {e:#}"),
            }
        }
        let tracer = &self.tracer;
        let state_since = |cookie: u64| tracer.tcp_state_since(cookie);
        let tracker = &self.tracker;
        let sampled = |pid: u32, caller: u64| tracker.sampled_stack(pid, caller);
        let ctx = BuildCtx {
            stacks: &self.stacks,
            views: &views,
            netns: &pid_ns,
            default_netns: own_ns,
            state_since: &state_since,
            sampled: &sampled,
            now_ns: now,
            start_ns: self.start_ns,
            min_age_ns: self.cfg.min_age_ns,
            min_count: self.cfg.min_count,
            max_remotes: 10,
        };
        let mut processes: Vec<_> = self
            .tracker
            .procs
            .values()
            .chain(self.tracker.exited.iter())
            .filter(|p| self.reportable(p))
            .map(|p| build::process_report(p, &ctx))
            .collect();
        build::rank(&mut processes);
        let lost = self.lost();
        let lost_events = self.lost_events();
        Report {
            kind: "report",
            duration_s: (now - self.start_ns) as f64 / 1e9,
            lost_events,
            lost: LossCause::ALL
                .iter()
                .map(|c| (c.as_str(), lost[*c as usize]))
                .collect(),
            counts_are_lower_bounds: lost_events > 0,
            time_wait: build::time_wait(&views, 10),
            processes,
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.cfg.serve.is_some() {
            return Ok(());
        }
        let report = self.build_report();
        let body = match self.cfg.format {
            Format::Json => json_line(&report),
            Format::Text => {
                let mut shown = report.clone();
                if self.cfg.all {
                    shown.processes.truncate(TOP_PROCESSES);
                }
                format!(
                    "\n{}",
                    text::report(&shown, self.cfg.min_age_ns as f64 / 1e9)
                )
            }
        };
        match &self.cfg.output {
            Some(path) => output::write_atomic(path, &body).map_err(|e| UserError::Output {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            None => {
                let _ = output::print(&body);
            }
        }
        Ok(())
    }

    /// Answers one HTTP request (`sockleak serve`).
    fn answer(&mut self, req: serve::Request) {
        match req {
            serve::Request::Metrics(tx) => {
                let report = self.build_report();
                let me = std::process::id();
                let own = SelfStats {
                    cpu_seconds: procfs::cpu_seconds(me).unwrap_or(0.0),
                    rss_bytes: procfs::rss_bytes(me).unwrap_or(0),
                    events: self.events_seen,
                };
                let top = self.cfg.serve.as_ref().map_or(20, |s| s.top);
                let _ = tx.send(metrics::render(&report, top, own));
            }
            serve::Request::Report(tx) => {
                let report = self.build_report();
                let _ = tx.send(json_line(&report));
            }
        }
    }
}

fn unknown_record(origin: Origin, created_ns: u64) -> SocketRecord {
    let mut r = SocketRecord::EMPTY;
    r.origin = origin as u8;
    r.created_ns = created_ns;
    r
}

/// (address-space pid, call site) of every stack a process's report may show.
fn stack_sites(p: &Process) -> impl Iterator<Item = (u32, Site)> + '_ {
    p.sockets
        .values()
        .map(|s| (s.stack_pid, Site::of(&s.record)))
        .chain(p.failures.keys().map(move |k| (p.tgid, k.site)))
        .filter(|(_, s)| s.stack_id >= 0)
}

fn json_line<T: serde::Serialize>(v: &T) -> String {
    // Serializing plain structs of numbers and strings cannot fail.
    let mut s = serde_json::to_string(v).unwrap_or_default();
    s.push('\n');
    s
}
