//! Text mode: a live summary every interval and a final report in the spirit of bcc's memleak.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::model::{
    Confidence, Diagnosis, Failure, OwnCost, ProcessReport, Report, Snapshot, Suspect, TimeWait,
    names::duration_str,
};
use crate::symbols::stacks::Frame;

/// Frames printed per stack; JSON carries them all.
const MAX_FRAMES: usize = 16;

fn limit_str(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// The live summary block (without cursor control).
pub fn snapshot(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sockleak  t={:.0}s  processes={}  lost_events={}",
        s.t_s,
        s.processes.len(),
        s.lost_events
    );
    let _ = writeln!(
        out,
        "{:>8} {:<16} {:>8} {:>9} {:>16} {:>9} {:>7}",
        "PID", "COMM", "SOCKETS", "GROWTH/s", "FDS/LIMIT", "FULL IN", "FAILS"
    );
    for p in &s.processes {
        let fds = match (p.open_fds, &p.fd_limit) {
            (Some(o), Some(l)) => {
                // A mark once past 80% of the soft limit.
                let hot = l.soft != u64::MAX && o as f64 >= 0.8 * l.soft as f64;
                format!("{}{o}/{}", if hot { "!" } else { "" }, limit_str(l.soft))
            }
            (Some(o), None) => o.to_string(),
            _ => "-".into(),
        };
        let full = p.seconds_to_fd_limit.map_or("-".into(), duration_str);
        let _ = writeln!(
            out,
            "{:>8} {:<16} {:>8} {:>+9.1} {:>16} {:>9} {:>7}",
            p.pid, p.comm, p.live_sockets, p.growth_per_s, fds, full, p.failures
        );
    }
    out
}

fn frame_line(f: &Frame) -> String {
    let mut s = format!("{:#x}", f.addr);
    match &f.symbol {
        Some(sym) => {
            let _ = write!(s, " {sym}");
        }
        None => s.push_str(" ?"),
    }
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let _ = write!(s, " at {file}:{line}");
    }
    if let Some(m) = &f.module {
        let _ = write!(s, " [{}]", m.rsplit('/').next().unwrap_or(m));
    }
    s
}

fn stack(out: &mut String, frames: &[Frame], indent: &str) {
    if frames.is_empty() {
        let _ = writeln!(
            out,
            "{indent}(no stack: opened before tracing or stacks off)"
        );
        return;
    }
    for (i, f) in frames.iter().take(MAX_FRAMES).enumerate() {
        let _ = writeln!(out, "{indent}#{i:<2} {}", frame_line(f));
    }
    if frames.len() > MAX_FRAMES {
        let _ = writeln!(out, "{indent}... {} more frames", frames.len() - MAX_FRAMES);
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long a suspect's sockets have been open, honest about those older than the trace.
fn age(s: &Suspect) -> String {
    if s.before_tracing == s.count {
        "open since before tracing".into()
    } else if s.before_tracing > 0 {
        format!(
            "open for up to {} ({} since before tracing)",
            duration_str(s.oldest_age_s),
            s.before_tracing
        )
    } else {
        format!("open for up to {}", duration_str(s.oldest_age_s))
    }
}

fn suspect(out: &mut String, s: &Suspect) {
    let _ = writeln!(
        out,
        "    {} socket(s) made by {}, {}; {}{}",
        s.count,
        s.origin,
        age(s),
        counts(&s.kinds),
        if s.states.is_empty() {
            String::new()
        } else {
            format!("; {}", counts(&s.states))
        }
    );
    call_site(out, s.call_site.as_deref(), s.call_site_note.as_deref());
    for (state, age) in &s.state_age_s {
        let _ = writeln!(out, "      in {state} for up to {}", duration_str(*age));
    }
    if let Some(idle) = s.max_idle_s {
        let _ = writeln!(
            out,
            "      idle (no data either way) for up to {}",
            duration_str(idle)
        );
    }
    if !s.remotes.is_empty() {
        let r: Vec<String> = s
            .remotes
            .iter()
            .map(|r| format!("{} x{}", r.endpoint, r.count))
            .collect();
        let _ = writeln!(out, "      peers {}", r.join(", "));
    }
    if !s.locals.is_empty() && s.origin.starts_with("accept") {
        let l: Vec<String> = s.locals.iter().map(|r| r.endpoint.clone()).collect();
        let _ = writeln!(out, "      accepted on {}", l.join(", "));
    }
    if !s.senders.is_empty() {
        let from: Vec<String> = s
            .senders
            .iter()
            .map(|x| match &x.comm {
                Some(c) => format!("pid {} ({c}) x{}", x.pid, x.count),
                None => format!("pid {} (exited) x{}", x.pid, x.count),
            })
            .collect();
        let _ = writeln!(out, "      received from {}", from.join(", "));
    }
    if let Some(o) = &s.origin_call {
        let _ = writeln!(out, "      requested at ({}):", o.join);
        stack(out, &o.stack, "      ");
    }
    if !s.other_stacks.is_empty() {
        let counts: Vec<String> = s.other_stacks.iter().map(|o| o.count.to_string()).collect();
        let _ = writeln!(
            out,
            "      {} of {} of them (the call site has {} more stacks, of {} sockets; --format json lists them):",
            if s.origin_call.is_some() {
                "socket made on the stack"
            } else {
                "stack"
            },
            s.stack_count,
            s.other_stacks.len(),
            counts.join(", ")
        );
    } else if s.origin_call.is_some() {
        let _ = writeln!(out, "      socket made on:");
    }
    stack(out, &s.stack, "      ");
}

/// The call site line, and why there is none (or what it means) when the picker says so.
fn call_site(out: &mut String, name: Option<&str>, note: Option<&str>) {
    match (name, note) {
        (Some(cs), None) => {
            let _ = writeln!(out, "      call site: {cs}");
        }
        (Some(cs), Some(n)) => {
            let _ = writeln!(out, "      call site: {cs}\n        ({n})");
        }
        (None, Some(n)) => {
            let _ = writeln!(out, "      call site: unknown ({n})");
        }
        (None, None) => {}
    }
}

fn diagnosis(out: &mut String, d: &Diagnosis) {
    let sure = match d.confidence {
        Confidence::Certain => "",
        Confidence::Likely => " (likely)",
    };
    let _ = writeln!(out, "    {}{sure}: {}", d.pattern, d.summary);
    if let Some(cs) = &d.call_site {
        let _ = writeln!(out, "      call site: {cs}");
    }
    for e in &d.evidence {
        let _ = writeln!(out, "      - {e}");
    }
    let _ = writeln!(out, "      FIX: {}", d.fix);
}

fn failure(out: &mut String, f: &Failure) {
    let _ = writeln!(
        out,
        "    {}() failed with {} x{} (first at {:.1}s, last at {:.1}s){}{}{}",
        f.syscall,
        f.errno,
        f.count,
        f.first_s,
        f.last_s,
        f.open_fds_at_failure
            .map_or(String::new(), |n| format!(", {n} open fds at failure")),
        f.remote
            .as_ref()
            .map_or(String::new(), |r| format!(", to {r}")),
        if f.spinning { ", SPINNING" } else { "" }
    );
    if let Some(n) = &f.note {
        let _ = writeln!(out, "      {n}");
    }
    call_site(out, f.call_site.as_deref(), f.call_site_note.as_deref());
    stack(out, &f.stack, "      ");
}

fn process(out: &mut String, p: &ProcessReport, min_age_s: f64) {
    let _ = writeln!(
        out,
        "\nPID {} ({}){}{}{}{}",
        p.pid,
        p.comm,
        p.ns_pid
            .filter(|n| *n != p.pid)
            .map_or(String::new(), |n| format!(" ns_pid {n}")),
        p.k8s.as_ref().map_or(String::new(), |k| format!(
            " pod {}/{} container {}",
            k.namespace, k.pod, k.container
        )),
        p.cgroup
            .as_deref()
            .filter(|_| p.container.is_none())
            .map_or(String::new(), |c| format!(" cgroup {c}")),
        if p.exited { ", exited" } else { "" }
    );
    let _ = write!(
        out,
        "  {} live socket(s) ({:+.1}/s): opened {}, closed {}, preexisting {}",
        p.live_sockets, p.growth_per_s, p.opened, p.closed, p.preexisting
    );
    if let Some(o) = p.open_fds {
        let _ = write!(out, "; {o} open fds");
    }
    if let Some(l) = &p.fd_limit {
        let _ = write!(
            out,
            ", limit {} soft / {} hard",
            limit_str(l.soft),
            limit_str(l.hard)
        );
    }
    out.push('\n');
    if p.direct_sockets > 0 {
        let _ = writeln!(
            out,
            "  {} io_uring fixed-file socket(s) open (not fds, not counted above)",
            p.direct_sockets
        );
    }
    if p.unseen_opened + p.unseen_closed > 0 {
        let _ = writeln!(
            out,
            "  {} socket(s) appeared and {} went away without sockleak seeing the syscall (found by comparing with /proc)",
            p.unseen_opened, p.unseen_closed
        );
    }
    if let Some(s) = p.seconds_to_fd_limit {
        let _ = writeln!(
            out,
            "  reaches its fd limit in about {} at this rate",
            duration_str(s)
        );
    }
    for w in &p.warnings {
        let _ = writeln!(out, "  WARNING: {w}");
    }
    if !p.listening.is_empty() {
        let _ = writeln!(out, "  listens on {}", p.listening.join(", "));
    }
    if !p.diagnoses.is_empty() {
        let _ = writeln!(out, "  DIAGNOSIS:");
        for d in &p.diagnoses {
            diagnosis(out, d);
        }
    }
    if !p.failures.is_empty() {
        let _ = writeln!(out, "  FAILED CALLS:");
        for f in &p.failures {
            failure(out, f);
        }
    }
    // CLOSE_WAIT first: the peer hung up and this process never closed: a certain leak.
    let (close_wait, rest): (Vec<&Suspect>, Vec<&Suspect>) = p
        .suspects
        .iter()
        .partition(|s| s.states.contains_key("CLOSE_WAIT"));
    if !close_wait.is_empty() {
        let _ = writeln!(out, "  CLOSE_WAIT (peer closed, this process never did):");
        for s in close_wait {
            suspect(out, s);
        }
    }
    if !rest.is_empty() {
        let _ = writeln!(
            out,
            "  LEAK SUSPECTS (idle {min_age_s}s or longer, by call site):"
        );
        for s in rest {
            suspect(out, s);
        }
    }
    if p.suspects.is_empty() {
        let _ = writeln!(
            out,
            "  no leak suspects (no call site holds idle sockets open {min_age_s}s or longer)"
        );
    }
}

fn time_wait(out: &mut String, tw: &[TimeWait]) {
    if !tw.is_empty() {
        let top: Vec<String> = tw
            .iter()
            .take(5)
            .map(|t| match (t.local_port, t.ratio) {
                (Some(port), _) => format!("from {} to port {port} x{}", t.remote, t.count),
                (None, Some(r)) => format!(
                    "to {} x{} ({:.0}% of the local ports)",
                    t.remote,
                    t.count,
                    r * 100.0
                ),
                (None, None) => format!("to {} x{}", t.remote, t.count),
            })
            .collect();
        let _ = writeln!(out, "TIME_WAIT: {}", top.join(", "));
    }
    for t in tw.iter().filter(|t| t.flagged) {
        let _ = writeln!(
            out,
            "WARNING: {} sockets in TIME_WAIT towards {} use {:.0}% of the {}-port ephemeral range: connect() there will fail with EADDRNOTAVAIL",
            t.count,
            t.remote,
            t.ratio.unwrap_or(0.0) * 100.0,
            t.port_range_size.unwrap_or(0)
        );
    }
}

/// sockleak's own cost on one line (the figures `/metrics` serves).
pub fn own_cost_line(c: &OwnCost) -> String {
    let bpf = match c.bpf_ns_per_socket {
        // Host-wide: every process's calls run the programs' gates, so the figure is the whole
        // BPF cost divided by the traced sockets, not one socket's path.
        Some(ns) if ns >= 1000.0 => format!("BPF {:.2} µs per traced socket (host-wide)", ns / 1e3),
        Some(ns) => format!("BPF {ns:.0} ns per traced socket (host-wide)"),
        None if c.bpf_measured_s > 0.0 => "BPF per traced socket: none made while measured".into(),
        None => "BPF per traced socket: not measured yet".into(),
    };
    let mut line = format!(
        "own cost: {bpf}, CPU {:.1}% of a core, RSS {:.1} MiB",
        c.cpu_percent,
        c.rss_bytes as f64 / 1048576.0
    );
    match &c.unwind_tables {
        Some(t) => {
            let _ = write!(
                line,
                ", unwind tables {:.1} of {:.0} MiB ({} file(s), {} process(es)",
                t.bytes as f64 / 1048576.0,
                t.cap_bytes as f64 / 1048576.0,
                t.files,
                t.processes
            );
            if t.walked + t.fallbacks > 0 {
                let _ = write!(
                    line,
                    "; {} stack(s) walked in the kernel, {} copied",
                    t.walked, t.fallbacks
                );
            }
            if t.evictions > 0 {
                let _ = write!(line, "; {} evicted", t.evictions);
            }
            line.push(')');
        }
        None => line.push_str(", unwind tables off"),
    }
    line
}

pub fn report(r: &Report, min_age_s: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sockleak report: traced {:.1}s, {} process(es), {} lost event(s)",
        r.duration_s,
        r.processes.len(),
        r.lost_events
    );
    let _ = writeln!(out, "{}", own_cost_line(&r.own_cost));
    if r.counts_are_lower_bounds {
        let causes: Vec<String> = r
            .lost
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "WARNING: the kernel side dropped data ({}); counts are lower bounds",
            causes.join(", ")
        );
    }
    if r.unseen_opened + r.unseen_closed > 0 {
        let _ = writeln!(
            out,
            "NOTE: {} socket(s) appeared and {} went away through paths sockleak does not hook (reconciled with /proc; counts stay exact): please report it, with the socket kinds sockleak logged",
            r.unseen_opened, r.unseen_closed
        );
    }
    time_wait(&mut out, &r.time_wait);
    // Grouped by container (in rank order of each group's first process) when any is in one.
    if r.processes.iter().any(|p| p.container.is_some()) {
        let mut groups: Vec<Option<&str>> = Vec::new();
        for p in &r.processes {
            if !groups.contains(&p.container.as_deref()) {
                groups.push(p.container.as_deref());
            }
        }
        for g in groups {
            let first = r.processes.iter().find(|p| p.container.as_deref() == g);
            let k8s = first.and_then(|p| p.k8s.as_ref());
            let _ = match (g, k8s, first.and_then(|p| p.cgroup.as_deref())) {
                (Some(id), Some(k), _) => writeln!(
                    out,
                    "\n== pod {}/{} container {} ({}) ==",
                    k.namespace,
                    k.pod,
                    k.container,
                    &id[..12.min(id.len())]
                ),
                (Some(id), None, Some(cg)) => {
                    writeln!(out, "\n== container {} ({cg}) ==", &id[..12.min(id.len())])
                }
                (Some(id), None, None) => writeln!(out, "\n== container {id} =="),
                (None, _, _) => writeln!(out, "\n== not in a container =="),
            };
            for p in r.processes.iter().filter(|p| p.container.as_deref() == g) {
                process(&mut out, p, min_age_s);
            }
        }
    } else {
        for p in &r.processes {
            process(&mut out, p, min_age_s);
        }
    }
    out
}
