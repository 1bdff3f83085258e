//! Building reports: a pure function of the tracker's state and the gathered [`Facts`]. A
//! process's report is built in steps (the socket walk, suspects, failures, limits), then its
//! diagnoses are added from the evidence the walk left and whatever the patterns asked the
//! edge to read (`diagnose::wants`).

use crate::{
    diagnose::{self, Evidence},
    host::cgroup,
    model::{OwnCost, ProcessReport, Report, SnapshotProcess},
    tracker::Process,
};

pub use super::facts::{BuildCtx, Facts};
use super::{failures, limits, suspects, time_wait, unwinding, walk};

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn snapshot_process(p: &Process) -> SnapshotProcess {
    SnapshotProcess {
        pid: p.tgid,
        comm: p.meta.comm.clone(),
        live_sockets: p.live(),
        opened: p.opened(),
        closed: p.closed(),
        open_fds: p.meta.open_fds,
        fd_limit: limits::fd_limit_json(p),
        growth_per_s: p.growth_per_s(),
        seconds_to_fd_limit: limits::seconds_to_fd_limit(p),
        failures: p.failures.values().map(|f| f.count).sum(),
    }
}

/// A process's report without its diagnoses, and the evidence the patterns will read. The
/// evidence lacks what only the edge can read and only some patterns want (the environment,
/// how the process was started): see `diagnose::wants`.
pub fn process(p: &Process, facts: &Facts, ctx: &BuildCtx<'_>) -> (ProcessReport, Evidence) {
    let alive = p.exited_ns.is_none();
    let walked = walk::sockets(p, facts, ctx);
    let (suspects, suspect_facts) =
        suspects::suspects(walked.groups, p.meta.origins.as_ref(), facts, ctx);
    let failures = failures::failures(p, facts, ctx);
    let mut warnings = limits::warnings(p, &failures);
    let stack_fallbacks = facts
        .stack_fallbacks
        .get(&p.tgid)
        .cloned()
        .unwrap_or_default();
    warnings.extend(unwinding::warning(&stack_fallbacks));
    let mut listening: Vec<String> = walked.listeners.iter().map(|a| a.to_string()).collect();
    listening.sort();
    listening.dedup();
    let container = p.meta.cgroup.as_deref().and_then(cgroup::container_id);
    let report = ProcessReport {
        pid: p.tgid,
        ns_pid: p.meta.ns_pid,
        comm: p.meta.comm.clone(),
        cgroup: p.meta.cgroup.clone(),
        container: container.clone(),
        k8s: container.and_then(|id| facts.k8s.get(&id).cloned()),
        exited: !alive,
        fd_limit: limits::fd_limit_json(p),
        open_fds: p.meta.open_fds,
        live_sockets: p.live(),
        opened: p.opened(),
        closed: p.closed(),
        preexisting: p.counts.preexisting,
        unseen_opened: p.counts.unseen_opened,
        unseen_closed: p.counts.unseen_closed,
        direct_sockets: p.counts.direct_live(),
        growth_per_s: p.growth_per_s(),
        seconds_to_fd_limit: if alive {
            limits::seconds_to_fd_limit(p)
        } else {
            None
        },
        fd_usage_ratio: limits::usage_ratio(p),
        limit_advice: None,
        diagnoses: Vec::new(),
        warnings,
        tcp_states: walked.tcp_states,
        listening,
        suspects,
        failures,
        stack_fallbacks,
    };
    let ev = diagnose::evidence(
        p,
        suspect_facts,
        walked.listeners,
        facts.view(p.tgid),
        facts.connects_of(p.tgid),
        secs(ctx.min_age_ns),
    );
    (report, ev)
}

/// The report with its diagnoses, most important first, and the fd-limit advice they give.
pub fn diagnosed(mut report: ProcessReport, ev: &Evidence) -> ProcessReport {
    report.diagnoses = diagnose::diagnose(&report, ev);
    report.limit_advice = report
        .diagnoses
        .iter()
        .find(|d| d.pattern == diagnose::id::FD_LIMIT_TOO_LOW)
        .map(|d| d.fix.clone());
    report
}

/// Report-wide numbers the session keeps (losses, duration).
pub struct Totals {
    pub duration_s: f64,
    pub lost: Vec<(&'static str, u64)>,
    pub lost_events: u64,
    /// `--all`: TIME_WAIT rows of the whole host, not only the traced processes'.
    pub all: bool,
    pub own_cost: OwnCost,
}

/// The whole report from the processes' reports: most suspicious first, with the TIME_WAIT
/// that matters.
pub fn report(mut processes: Vec<ProcessReport>, facts: &Facts, totals: Totals) -> Report {
    rank(&mut processes);
    let scope = time_wait::scope(totals.all, facts, &processes);
    let unseen_opened = processes.iter().map(|p| p.unseen_opened).sum();
    let unseen_closed = processes.iter().map(|p| p.unseen_closed).sum();
    Report {
        kind: "report",
        duration_s: totals.duration_s,
        lost_events: totals.lost_events,
        lost: totals.lost.into_iter().collect(),
        counts_are_lower_bounds: totals.lost_events > 0,
        unseen_opened,
        unseen_closed,
        time_wait: time_wait::time_wait(&facts.views, &scope, 10),
        processes,
        own_cost: totals.own_cost,
    }
}

/// Most suspicious first: leaked sockets, failures, growth, live count.
pub fn rank(procs: &mut [ProcessReport]) {
    let score = |p: &ProcessReport| {
        (
            p.suspects.iter().map(|s| s.count).sum::<u64>(),
            p.failures.iter().map(|f| f.count).sum::<u64>(),
        )
    };
    procs.sort_by(|a, b| {
        score(b)
            .cmp(&score(a))
            .then(b.growth_per_s.total_cmp(&a.growth_per_s))
            .then(b.live_sockets.cmp(&a.live_sockets))
            .then(a.pid.cmp(&b.pid))
    });
}
