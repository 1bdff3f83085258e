//! What a session shows: the live summary every interval, the final report, and the answers to
//! `serve`'s scrapes. Each one first brings the tracker up to the kernel's state.

use anyhow::Result;
use hashbrown::HashMap;
use log::warn;
use sockleak_common::counters::LossCause;

use super::{Session, mono_ns};
use crate::{
    cli::Format,
    error::UserError,
    host::netns,
    host::procfs,
    host::sockdiag,
    model::{Report, Snapshot},
    output::{self, Closed},
    report::{
        build::{self, BuildCtx},
        text,
    },
    serve,
    serve::metrics::{self, SelfStats},
    symbols::stacks::{Site, Stacks},
    tracker::Process,
};

/// The network namespaces (by inode) in use.
pub(super) struct Namespaces {
    /// sockleak's own.
    pub own: Option<u64>,
    pub of_pid: HashMap<u32, u64>,
    /// Each namespace with a pid inside it (sockleak's own first).
    pub with_pid: Vec<(u64, u32)>,
}

/// Processes shown in text mode's live summary and report with `--all`.
const TOP_PROCESSES: usize = 20;

pub fn json_line<T: serde::Serialize>(v: &T) -> String {
    // Serializing plain structs of numbers and strings cannot fail.
    let mut s = serde_json::to_string(v).unwrap_or_default();
    s.push('\n');
    s
}

/// (address-space pid, call site) of every stack a process's report may show: sockets',
/// their origins' (see `report::walk::OriginKey`) and failures'.
fn stack_sites<'a>(p: &'a Process, stacks: &'a Stacks) -> impl Iterator<Item = (u32, Site)> + 'a {
    let site = |stack_id: i32, caller: u64| Site {
        stack_id: stacks.canonical(stack_id),
        caller,
    };
    p.sockets
        .values()
        .flat_map(move |s| {
            let c = &s.record.conn;
            [
                (s.stack_pid, stacks.site(&s.record)),
                (s.stack_pid, site(c.stack_id, c.caller)),
                (s.stack_pid, site(c.alt_stack_id, 0)),
                (s.stack_pid, site(c.alt2_stack_id, 0)),
            ]
        })
        .chain(p.failures.keys().map(move |k| (p.tgid, k.site)))
        .filter(|(_, s)| s.stack_id >= 0)
}

impl Session {
    /// One interval: sync with the kernel, refresh, reconcile, date TCP states, show.
    pub(super) fn tick(&mut self) -> Result<(), Closed> {
        let now = mono_ns();
        let lost = self.lost_events() > 0;
        self.sync(now);
        if !self.cfg.cgroups.is_empty() {
            self.tracer.clear_outside();
        }
        self.reap(now, lost);
        self.refresh_changed(now);
        self.reconcile();
        self.poll_states(now);
        self.watch_runtimes();
        self.resolve_stacks();
        self.prune_copies();
        self.tracer.flush_logs();
        if self.cfg.serve.is_some() {
            return Ok(());
        }
        // Growth computed once per process, not once per comparison.
        let mut ranked: Vec<(f64, &Process)> = self
            .tracker
            .procs
            .values()
            .filter(|p| self.reportable(p))
            .map(|p| (p.growth_per_s(), p))
            .collect();
        ranked.sort_by(|(ga, a), (gb, b)| {
            gb.total_cmp(ga)
                .then(b.live().cmp(&a.live()))
                .then(a.tgid.cmp(&b.tgid))
        });
        let procs: Vec<&Process> = ranked.into_iter().map(|(_, p)| p).collect();
        let snap = Snapshot {
            kind: "snapshot",
            t_s: (now - self.start_ns) as f64 / 1e9,
            lost_events: self.lost_events(),
            processes: procs.iter().map(|p| build::snapshot_process(p)).collect(),
        };
        match self.cfg.format {
            Format::Json => output::print(&json_line(&snap)),
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

    /// Network namespaces of the traced processes (sockleak's own first), with a pid in each.
    pub(super) fn namespaces(&self) -> Namespaces {
        let own_ns = netns::netns_of(std::process::id());
        let mut pid_ns: HashMap<u32, u64> = HashMap::new();
        let mut view_pids: Vec<(u64, u32)> = own_ns
            .map(|ns| (ns, std::process::id()))
            .into_iter()
            .collect();
        for p in self.tracker.procs.values() {
            let pid = &p.tgid;
            if let Some(ns) = p.meta.netns.or_else(|| netns::netns_of(*pid)) {
                pid_ns.insert(*pid, ns);
                if !view_pids.iter().any(|(n, _)| *n == ns) {
                    view_pids.push((ns, *pid));
                }
            }
        }
        Namespaces {
            own: own_ns,
            of_pid: pid_ns,
            with_pid: view_pids,
        }
    }

    /// Dates TCP states: one small dump per traced network namespace of the sockets in the
    /// states a report dates.
    pub(super) fn poll_states(&mut self, now_ns: u64) {
        let view_pids = self.namespaces().with_pid;
        let mut observed = Vec::new();
        for (ns, pid) in view_pids {
            if !self.diag.contains_key(&ns) {
                match netns::in_netns_of(pid, sockdiag::open) {
                    Ok(Ok(s)) => {
                        self.diag.insert(ns, s);
                    }
                    Ok(Err(e)) | Err(e) => {
                        warn!("TCP states unavailable for pid {pid}'s network namespace: {e:#}");
                        continue;
                    }
                }
            }
            let Some(sock) = self.diag.get(&ns) else {
                continue;
            };
            match sockdiag::tcp_in_states(sock, sockdiag::dated_states()) {
                Ok(rows) => observed.extend(rows),
                Err(e) => {
                    warn!("polling TCP states in pid {pid}'s network namespace: {e:#}");
                    self.diag.remove(&ns);
                }
            }
        }
        self.ages.observe(now_ns, observed);
    }

    /// Symbolizes, once each, the stacks of live processes.
    pub(super) fn resolve_stacks(&mut self) {
        let mut todo: HashMap<u32, Vec<Site>> = HashMap::new();
        for p in self.tracker.procs.values() {
            for (pid, site) in stack_sites(p, &self.stacks) {
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

    pub(super) fn lost(&self) -> [u64; sockleak_common::counters::LOSS_CAUSES as usize] {
        let mut l = self.tracer.losses();
        for (i, v) in self.tracker.user_losses.iter().enumerate() {
            l[i] += v;
        }
        l
    }

    /// Losses that make counts lower bounds (a lost stack or a lost late event does not).
    pub(super) fn lost_events(&self) -> u64 {
        let l = self.lost();
        l[LossCause::RingBufFull as usize]
            + l[LossCause::LiveMapFull as usize]
            + l[LossCause::ReceivedOverflow as usize]
    }

    /// The report as of now: syncs with the kernel, symbolizes what is new, gathers the facts
    /// (socket tables of every traced network namespace, /proc) and builds.
    fn build_report(&mut self) -> Report {
        let now = mono_ns();
        self.sync(now);
        let pids: Vec<u32> = self.tracker.procs.keys().copied().collect();
        for pid in pids {
            self.refresh_meta(pid, now);
        }
        self.poll_states(now);
        self.resolve_stacks();
        let procs: Vec<&Process> = self
            .tracker
            .procs
            .values()
            .chain(self.tracker.exited.iter())
            .filter(|p| self.reportable(p))
            .collect();
        let facts = self.gather_facts(&procs);
        let ctx = BuildCtx {
            stacks: &self.stacks,
            ages: &self.ages,
            now_ns: now,
            start_ns: self.start_ns,
            min_age_ns: self.cfg.min_age_ns,
            min_count: self.cfg.min_count,
            max_remotes: 10,
        };
        let processes = procs
            .iter()
            .map(|p| {
                let (r, mut ev) = build::process(p, &facts, &ctx);
                self.read_wanted(p, &r, &mut ev);
                build::diagnosed(r, &ev)
            })
            .collect();
        let lost = self.lost();
        let totals = build::Totals {
            duration_s: (now - self.start_ns) as f64 / 1e9,
            lost: LossCause::ALL
                .iter()
                .map(|c| (c.as_str(), lost[*c as usize]))
                .collect(),
            lost_events: self.lost_events(),
            all: self.cfg.all,
            own_cost: self.own_cost(),
        };
        build::report(processes, &facts, totals)
    }

    pub(super) fn finish(&mut self) -> Result<()> {
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
    pub(super) fn answer(&mut self, req: serve::Request) {
        match req {
            serve::Request::Metrics(tx) => {
                let report = self.build_report();
                let me = std::process::id();
                let own = SelfStats {
                    cpu_seconds: procfs::cpu_seconds(me).unwrap_or(0.0),
                    rss_bytes: procfs::rss_bytes(me).unwrap_or(0),
                    events: self.events_seen,
                    cost: report.own_cost.clone(),
                };
                let (top, sel) = self
                    .cfg
                    .serve
                    .as_ref()
                    .map_or((20, &[][..]), |s| (s.top, &s.metrics_labels[..]));
                let _ = tx.send(metrics::render(&report, top, sel, own));
            }
            serve::Request::Report(tx) => {
                let report = self.build_report();
                let _ = tx.send(json_line(&report));
            }
        }
    }
}
