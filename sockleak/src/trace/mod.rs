//! `sockleak trace` and `sockleak serve`: attach, follow the kernel, print snapshots, report.
//!
//! The [`Session`] is a dispatcher: the event loop is here, and each job it dispatches lives in
//! its own module (`seed`: copying sockets from /proc into the kernel map; `events`: applying
//! the kernel's events; `sync`: reading the kernel's maps every interval; `refresh`: /proc
//! facts per process; `reconcile`: the /proc safety net; `facts`: what a report reads from the host;
//! `present`: snapshots, reports and answers to `serve`).

mod copies;
mod events;
mod facts;
mod kube;
mod own_cost;
mod present;
mod reconcile;
mod refresh;
mod rtstacks;
mod runtime;
mod seed;
mod sync;
mod tables;

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use hashbrown::HashMap;
use log::{info, warn};
use sockleak_common::target::state;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::Instant,
};

use crate::{
    config::Config, error::UserError, host::cgroup, host::procfs, host::tcp_ages::StateAges,
    kernel::bpf::Tracer, kernel::features, kernel::offsets, kernel::preflight, serve,
    symbols::stacks::Stacks, tracker::Tracker,
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

/// The few events (fork, exec, exit, failures, new call sites) are batched in the kernel (see
/// WAKEUP_BYTES); this bounds their delay.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

pub struct Session {
    cfg: Config,
    tracer: Tracer,
    tracker: Tracker,
    stacks: Stacks,
    start_ns: u64,
    /// TCP state ages from the polled socket tables.
    ages: StateAges,
    /// sock_diag sockets, one per network namespace (by inode) in use.
    diag: HashMap<u64, netlink_sys::Socket>,
    /// Per-process /proc bookkeeping (refresh and reconciliation cursors).
    refresh: refresh::Refresh,
    reconciler: reconcile::Reconciler,
    /// Exits and close_ranges the kernel could not finish: done at the next sync.
    sync_todo: sync::Todo,
    /// Lines of the last live summary, to redraw it in place on a terminal.
    drawn_lines: usize,
    /// stdout was closed (`| head`): stop quietly.
    closed: bool,
    /// Kernel events decoded so far.
    events_seen: u64,
    /// Uprobes on traced Go HTTP clients.
    go: crate::symbols::gohttp::GoProbes,
    /// Uprobes on traced node processes' libuv.
    node: crate::symbols::nodeuv::NodeProbes,
    /// Seeded processes to make ACTIVE once the ring is drained (see `activate_later`).
    seeded: Vec<(u32, runtime::Setup)>,
    /// DWARF unwinding of stack copies.
    unwinders: crate::symbols::unwind::Unwinders,
    /// Unwound copies held after the last prune.
    copies_at_prune: usize,
    /// Processes switched to DWARF unwinding so far (the first few are logged at info).
    dwarf_switches: usize,
    /// Kubernetes names and filters.
    kube: kube::Kube,
    /// Kernel unwind tables; None when off (`--unwind-table-mib 0`).
    tables: Option<crate::symbols::unwind_tables::UnwindTables>,
    /// Where kernel table walks stopped short, per process.
    unwind_stops: HashMap<u32, tables::Stops>,
    /// Lasting stopping places logged so far.
    lasting_stops: usize,
    /// sockleak's own cost (BPF time per socket).
    own: own_cost::OwnCostMeter,
    /// RUNTIME FRAMES: what names each process's interpreted frames.
    walks: runtime::FrameWalks,
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

/// Runs a trace to completion. Returns Ok also when stdout was closed under us.
pub fn run(mut cfg: Config) -> Result<()> {
    preflight::check_privileges()?;
    preflight::check_btf(Path::new(preflight::BTF))?;
    let tracefs = preflight::ensure_tracefs()?;
    preflight::raise_memlock();
    preflight::raise_nofile();
    if let Some(out) = &cfg.output {
        check_output_path(out)?;
    }
    // Before anything is loaded: a kernel that lacks what the programs need is one line.
    let left_out = features::check(crate::kernel::bpf::object())?;
    let mut degraded = load_offsets(&mut cfg);
    degraded.extend(left_out.values().cloned());
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
        let kube = kube::Kube::start(&cfg.kube).await?;
        cfg.load.cgroups.extend(kube.targets());
        if cfg.load.cgroups.len() > sockleak_common::target::MAX_CGROUPS as usize {
            return Err(UserError::TooManyCgroups(sockleak_common::target::MAX_CGROUPS).into());
        }
        let mut session = Session::start(cfg, &tracefs, degraded, left_out, kube)?;
        session.run(signals).await
    })
}

/// Kernel struct offsets from BTF; what cannot be found degrades with a warning.
fn load_offsets(cfg: &mut Config) -> Vec<String> {
    match offsets::load_btf(Path::new(preflight::BTF)) {
        Ok(btf) => {
            let (o, missing) = offsets::read(&btf);
            cfg.load.offsets = o;
            cfg.load.task_fsbase = offsets::task_fsbase(&btf).unwrap_or(0);
            missing
                .into_iter()
                .map(|m| format!("kernel BTF lacks {m}: sockets passed that way are found only by reconciliation"))
                .collect()
        }
        Err(e) => vec![format!(
            "cannot parse kernel BTF ({e:#}): received and io_uring sockets are found only by reconciliation"
        )],
    }
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
    fn start(
        cfg: Config,
        tracefs: &Path,
        degraded: Vec<String>,
        left_out: std::collections::BTreeMap<String, String>,
        kube: kube::Kube,
    ) -> Result<Session> {
        let mut tracer = Tracer::load(&cfg.load, tracefs)?;
        tracer.leave_out(left_out);
        for id in kube.denied() {
            if !tracer.deny_cgroup(id) {
                warn!(
                    "the kernel's deny list is full: some containers no filter matches are traced"
                );
                break;
            }
        }
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
        initial.extend(kube.initial.iter().copied());
        initial.retain(|p| *p != std::process::id());
        initial.sort_unstable();
        initial.dedup();
        for pid in &initial {
            tracer.add_target(*pid, state::FORK_PENDING)?;
        }
        tracer.attach()?;
        for d in degraded.iter().chain(&tracer.degraded) {
            warn!("{d}");
        }
        let start_ns = mono_ns();
        let uprobes = cfg.uprobes;
        let java_perfmap = cfg.java_perfmap;
        let tables = tracer
            .unwind
            .take()
            .map(crate::symbols::unwind_tables::UnwindTables::new);
        let own = own_cost::OwnCostMeter::new(
            start_ns,
            own_cost::Reading {
                bpf_ns: tracer.run_time().0,
                sockets: 0,
            },
        );
        let mut s = Session {
            cfg,
            tracer,
            tracker: Tracker::default(),
            stacks: Stacks::new(java_perfmap),
            start_ns,
            ages: StateAges::default(),
            diag: HashMap::new(),
            refresh: refresh::Refresh::default(),
            reconciler: reconcile::Reconciler::default(),
            sync_todo: sync::Todo::default(),
            drawn_lines: 0,
            closed: false,
            events_seen: 0,
            go: crate::symbols::gohttp::GoProbes::new(uprobes),
            node: crate::symbols::nodeuv::NodeProbes::new(uprobes),
            seeded: Vec::new(),
            unwinders: crate::symbols::unwind::Unwinders::default(),
            copies_at_prune: 0,
            dwarf_switches: 0,
            kube,
            tables,
            unwind_stops: HashMap::new(),
            lasting_stops: 0,
            own,
            walks: runtime::FrameWalks::default(),
        };
        let mut alive = 0;
        for pid in initial {
            s.tracker.process(pid, start_ns);
            if s.seed(pid, None, start_ns) {
                alive += 1;
                // With the state change: applied before the process's next socket.
                let setup = s.runtime_setup(pid);
                s.activate_later(pid, setup);
            } else {
                s.tracker.procs.remove(&pid);
                s.tracer.remove_target(pid);
            }
        }
        if alive == 0 && s.cfg.pids_only() {
            return Err(UserError::NoSuchPid(s.cfg.pids[0]).into());
        }
        // Closes made during seeding first, then the kernel takes over.
        if let Some(mut ring) = s.tracer.events.take() {
            s.drain(&mut ring);
            s.tracer.events = Some(ring);
        }
        let pids = s.tracker.procs.keys().copied().collect::<Vec<_>>();
        for pid in pids {
            s.refresh_meta(pid, start_ns);
        }
        s.poll_states(start_ns);
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
            if let Some(f) = &s.cfg.kube.filter {
                let roots: Vec<&str> = s.kube.roots.iter().map(|c| c.path.as_str()).collect();
                w += &format!(
                    ", {} container(s) matching {} (and those started later, under cgroup {})",
                    s.kube.matched,
                    f.describe(),
                    roots.join(", ")
                );
            }
            w
        };
        let names = s
            .kube
            .runtime
            .as_ref()
            .map_or(String::new(), |r| format!("; Kubernetes names from {r}"));
        info!("attached: tracing {what}{names}; Ctrl-C for the report");
        Ok(s)
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
        let mut requests = self.start_server().await?;
        let mut kube_answers = self.kube.spawn();
        let mut kube_tick = tokio::time::interval(Duration::from_millis(500));
        kube_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = drain.tick() => {
                    self.drain(events.get_mut());
                    self.tables_work();
                    self.own_cost_poll();
                }
                _ = kube_tick.tick() => self.kube_tick(),
                Some(a) = kube::next_answer(&mut kube_answers) => self.kube_listed(a),
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

    /// `serve`: the HTTP server runs as its own task and asks this loop for answers.
    async fn start_server(&mut self) -> Result<tokio::sync::mpsc::Receiver<serve::Request>> {
        let (req_tx, requests) = tokio::sync::mpsc::channel::<serve::Request>(16);
        if let Some(opts) = self.cfg.serve.clone() {
            serve::spawn(opts, req_tx).await?;
        }
        Ok(requests)
    }

    /// Requested targets always; others once they have had a socket or a failure.
    fn reportable(&self, p: &crate::tracker::Process) -> bool {
        (self.cfg.pids.contains(&p.tgid)
            || ((!self.cfg.cgroups.is_empty() || self.kube.filtering()) && p.parent.is_none()))
            || p.opened() + p.counts.preexisting + p.counts.unseen_opened > 0
            || p.live() > 0
            || !p.failures.is_empty()
    }
}
