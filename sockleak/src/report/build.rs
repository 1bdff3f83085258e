//! Building reports from the tracker's state: leak suspects grouped by call site, failures,
//! growth and time to the fd limit.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use sockleak_common::{
    event::Syscall,
    socket::{NO_STACK, Origin, SAMPLED_OUT},
};

use super::{
    model::{
        Backlog, Failure, FdLimitJson, HostFiles, PortRange, ProcessReport, Remote, Sender,
        SnapshotProcess, StackCount, Suspect, TimeWait,
    },
    names,
};
use crate::{
    callsite::CallSite,
    diagnose::{self, SuspectFacts, gather},
    limits, netns, procfs,
    sockdiag::NetView,
    stacks::{Site, Stacks},
    tracker::{FailureKey, FailureStats, Process},
};

const EMFILE: i64 = 24;
const ENFILE: i64 = 23;
const EADDRNOTAVAIL: i64 = 99;

/// Report-wide inputs.
pub struct BuildCtx<'a> {
    pub stacks: &'a Stacks,
    /// Socket tables per network-namespace inode.
    pub views: &'a HashMap<u64, NetView>,
    /// Network namespace of each process, where known; others use `default_netns`.
    pub netns: &'a HashMap<u32, u64>,
    pub default_netns: Option<u64>,
    /// When the TCP socket with this cookie was first seen in this state.
    pub state_since: &'a dyn Fn(u64, u8) -> Option<crate::tcp_ages::Seen>,
    /// Stack sampling: the latest sampled stack id of a (process, leaf caller).
    pub sampled: &'a dyn Fn(u32, u64) -> Option<i32>,
    pub now_ns: u64,
    pub start_ns: u64,
    pub min_age_ns: u64,
    pub min_count: u64,
    /// Remotes listed per suspect.
    pub max_remotes: usize,
    /// Connects per (process, destination) while traced (the kernel's DESTS).
    pub connects: &'a HashMap<u32, Vec<(std::net::SocketAddr, u64)>>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn fd_limit_json(p: &Process) -> Option<FdLimitJson> {
    p.meta.fd_limit.map(|l| FdLimitJson {
        soft: l.soft,
        hard: l.hard,
    })
}

/// Seconds until open fds reach the soft limit at the recent growth rate; None when not
/// growing or unknown.
pub fn seconds_to_fd_limit(p: &Process) -> Option<f64> {
    let soft = p.meta.fd_limit?.soft;
    let open = p.meta.open_fds?;
    if open >= soft {
        return Some(0.0);
    }
    let g = p.fd_growth_per_s();
    (g > 1e-9).then(|| (soft - open) as f64 / g)
}

impl BuildCtx<'_> {
    fn view(&self, pid: u32) -> Option<&NetView> {
        let ns = self.netns.get(&pid).copied().or(self.default_netns)?;
        self.views.get(&ns)
    }
}

pub fn snapshot_process(p: &Process) -> SnapshotProcess {
    SnapshotProcess {
        pid: p.tgid,
        comm: p.meta.comm.clone(),
        live_sockets: p.live(),
        opened: p.opened(),
        closed: p.closed(),
        open_fds: p.meta.open_fds,
        fd_limit: fd_limit_json(p),
        growth_per_s: p.growth_per_s(),
        seconds_to_fd_limit: seconds_to_fd_limit(p),
        failures: p.failures.values().map(|f| f.count).sum(),
    }
}

#[derive(Default)]
struct Group {
    count: u64,
    before_tracing: u64,
    oldest_ns: u64,
    kinds: BTreeMap<String, u64>,
    remotes: HashMap<String, u64>,
    locals: HashMap<String, u64>,
    states: BTreeMap<String, u64>,
    state_age_ns: BTreeMap<String, u64>,
    state_age_at_least: Vec<String>,
    max_idle_ms: Option<u32>,
    senders: HashMap<u32, u64>,
    facts: SuspectFacts,
}

impl Group {
    /// Adds another group's sockets (of the same call site) to this one.
    fn merge(&mut self, o: Group) {
        self.count += o.count;
        self.before_tracing += o.before_tracing;
        self.oldest_ns = self.oldest_ns.max(o.oldest_ns);
        for (k, v) in o.kinds {
            *self.kinds.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.remotes {
            *self.remotes.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.locals {
            *self.locals.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.states {
            *self.states.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.state_age_ns {
            let e = self.state_age_ns.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
        for st in o.state_age_at_least {
            if !self.state_age_at_least.contains(&st) {
                self.state_age_at_least.push(st);
            }
        }
        self.max_idle_ms = match (self.max_idle_ms, o.max_idle_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (k, v) in o.senders {
            *self.senders.entry(k).or_insert(0) += v;
        }
        self.facts.merge(o.facts);
    }
}

/// The raw groups of one call site, merged.
struct Merged {
    call_site: CallSite,
    group: Group,
    stacks: Vec<StackCount>,
}

/// Other stacks listed per suspect.
const MAX_OTHER_STACKS: usize = 8;

/// Whether a socket counts as leaked: old enough, not a listener, and (for ESTABLISHED TCP
/// with a known idle time) not in use recently. A pooled connection that carries traffic is
/// old but not leaked; one nobody has used since min-age is.
fn stale(info: Option<&crate::sockdiag::SockInfo>, age_ns: u64, min_age_ns: u64) -> bool {
    if age_ns < min_age_ns {
        return false;
    }
    let Some(info) = info else { return true };
    match (info.state, info.idle_ms) {
        (Some("LISTEN"), _) => false,
        (Some("ESTABLISHED"), Some(idle)) => u64::from(idle) * 1_000_000 >= min_age_ns,
        _ => true,
    }
}

pub fn process_report(p: &Process, ctx: &BuildCtx<'_>) -> ProcessReport {
    let alive = p.exited_ns.is_none();
    let end_ns = p.exited_ns.unwrap_or(ctx.now_ns);
    // Inodes of sockets made while tracing come from /proc at report time.
    let inodes: HashMap<u32, u64> = if alive {
        procfs::socket_fds(p.tgid)
            .map(|v| v.into_iter().collect())
            .unwrap_or_default()
    } else {
        HashMap::new()
    };
    let view = ctx.view(p.tgid);
    let mut groups: HashMap<(u32, Site, u8), Group> = HashMap::new();
    let mut tcp_states: BTreeMap<String, u64> = BTreeMap::new();
    let mut listeners = Vec::new();
    for (fd, s) in &p.sockets {
        let age = end_ns.saturating_sub(s.record.created_ns);
        let inode = inodes.get(fd).copied().or(s.inode);
        let info = inode.and_then(|i| view?.table.by_inode.get(&i));
        if let Some(st) = info.and_then(|i| i.state) {
            *tcp_states.entry(st.to_string()).or_insert(0) += 1;
            if st == "LISTEN"
                && let Some(l) = info.and_then(|i| i.local)
            {
                listeners.push(l);
            }
        }
        if !stale(info, age, ctx.min_age_ns) {
            continue;
        }
        let mut site = ctx.stacks.site(&s.record);
        if site.stack_id == SAMPLED_OUT {
            site.stack_id = ctx
                .stacks
                .canonical((ctx.sampled)(s.stack_pid, site.caller).unwrap_or(NO_STACK));
        }
        let g = groups
            .entry((s.stack_pid, site, s.record.origin))
            .or_default();
        g.count += 1;
        g.oldest_ns = g.oldest_ns.max(age);
        if s.record.origin == Origin::Preexisting as u8 {
            g.before_tracing += 1;
        }
        // A socket sockleak did not see made (or saw without socket()'s arguments): the
        // socket tables, else sockfs, say what it is.
        let mut kind = names::kind_of(&s.record);
        if kind == "unknown" {
            kind = match info {
                Some(i) => i.kind,
                None if alive => procfs::socket_kind(p.tgid, *fd).unwrap_or("unknown"),
                None => "unknown",
            };
        }
        *g.kinds.entry(kind.to_string()).or_insert(0) += 1;
        // A server's peers differ only by ephemeral port: group accepted sockets by client IP.
        // Sockets whose making sockleak did not see (preexisting, inherited, received) are
        // server-side when their local port is one the namespace listens on.
        let origin = Origin::from_u8(s.record.origin);
        let accepted = matches!(origin, Some(Origin::Accept | Origin::Accept4))
            || (!matches!(origin, Some(Origin::Socket))
                && info.is_some_and(|i| {
                    i.remote.is_some()
                        && i.state != Some("LISTEN")
                        && i.local.is_some_and(|l| {
                            view.is_some_and(|v| v.table.listening.contains(&l.port()))
                        })
                }));
        let remote = match info.and_then(|i| i.remote) {
            Some(r) if accepted => Some(r.ip().to_string()),
            Some(r) => Some(r.to_string()),
            None if accepted => names::socket_addr(&s.record.remote).map(|a| a.ip().to_string()),
            None => names::endpoint(&s.record.remote),
        };
        if let Some(r) = remote {
            *g.remotes.entry(r).or_insert(0) += 1;
        }
        if accepted && let Some(l) = info.and_then(|i| i.local) {
            *g.locals.entry(l.to_string()).or_insert(0) += 1;
        }
        if let Some(i) = info
            && let Some(st) = i.state
        {
            *g.states.entry(st.to_string()).or_insert(0) += 1;
            // Time in state, from the polled socket tables.
            if i.cookie != 0
                && let Some(code) = i.state_code
                && let Some(c) = (ctx.state_since)(i.cookie, code)
            {
                let a = end_ns.saturating_sub(c.since_ns);
                let e = g.state_age_ns.entry(st.to_string()).or_insert(0);
                *e = (*e).max(a);
                if c.at_start && !g.state_age_at_least.iter().any(|s| s == st) {
                    g.state_age_at_least.push(st.to_string());
                }
            }
        }
        if let Some(idle) = info.and_then(|i| i.idle_ms) {
            g.max_idle_ms = Some(g.max_idle_ms.map_or(idle, |m| m.max(idle)));
        }
        if s.record.origin == Origin::Received as u8 && s.record.peer_pid != 0 {
            *g.senders.entry(s.record.peer_pid).or_insert(0) += 1;
        }
        if s.record.owner != 0 {
            *g.facts.owners.entry(s.record.owner).or_insert(0) += 1;
        } else {
            g.facts.unowned += 1;
        }
        if let Some(i) = info.filter(|i| i.state == Some("ESTABLISHED") && i.rx_queue > 0) {
            g.facts.unread_sockets += 1;
            g.facts.unread_bytes += u64::from(i.rx_queue);
        }
    }
    // One suspect per named call site: JIT tiers, inlined variants and stack copies of one
    // site are one leak. Its distinct stacks stay inside it, most frequent first.
    let mut merged: HashMap<(String, u8), Merged> = HashMap::new();
    for ((stack_pid, site, origin), g) in groups {
        let frames = ctx.stacks.frames(stack_pid, site);
        let pick = crate::callsite::pick(&frames);
        let key = match &pick.name {
            Some(name) => name.clone(),
            None => format!("#{stack_pid}:{}:{:x}", site.stack_id, site.caller),
        };
        let m = merged.entry((key, origin)).or_insert_with(|| Merged {
            call_site: pick,
            group: Group::default(),
            stacks: Vec::new(),
        });
        match m.stacks.iter_mut().find(|sc| sc.stack == frames) {
            Some(sc) => sc.count += g.count,
            None => m.stacks.push(StackCount {
                count: g.count,
                stack: frames,
            }),
        }
        m.group.merge(g);
    }
    let mut suspects: Vec<(Suspect, SuspectFacts)> = merged
        .into_iter()
        .filter(|(_, m)| {
            m.group.count >= ctx.min_count || m.group.states.contains_key("CLOSE_WAIT")
        })
        .map(|((_, origin), m)| {
            let Merged {
                call_site,
                group: g,
                mut stacks,
            } = m;
            let top = |m: HashMap<String, u64>| {
                let mut v: Vec<Remote> = m
                    .into_iter()
                    .map(|(endpoint, count)| Remote { endpoint, count })
                    .collect();
                v.sort_by(|a, b| b.count.cmp(&a.count).then(a.endpoint.cmp(&b.endpoint)));
                v.truncate(ctx.max_remotes);
                v
            };
            stacks.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then(a.stack.len().cmp(&b.stack.len()))
            });
            let mut stacks = stacks.into_iter();
            let first = stacks.next().unwrap_or_default();
            let other_stacks: Vec<StackCount> = stacks.take(MAX_OTHER_STACKS).collect();
            let remotes = top(g.remotes);
            let locals = top(g.locals);
            let s = Suspect {
                count: g.count,
                oldest_age_s: secs(g.oldest_ns),
                before_tracing: g.before_tracing,
                origin: Origin::from_u8(origin)
                    .map_or("unknown", Origin::as_str)
                    .to_string(),
                kinds: g.kinds,
                remotes,
                locals,
                states: g.states,
                max_idle_s: g.max_idle_ms.map(|ms| f64::from(ms) / 1e3),
                state_age_s: g
                    .state_age_ns
                    .into_iter()
                    .map(|(k, v)| (k, secs(v)))
                    .collect(),
                state_age_at_least: g.state_age_at_least,
                senders: senders(g.senders),
                call_site: call_site.name,
                call_site_note: call_site.note,
                stack: first.stack,
                stack_count: first.count,
                other_stacks,
            };
            (s, g.facts)
        })
        .collect();
    suspects.sort_by(|(a, _), (b, _)| {
        b.count
            .cmp(&a.count)
            .then(b.oldest_age_s.total_cmp(&a.oldest_age_s))
    });
    let (suspects, facts): (Vec<Suspect>, Vec<SuspectFacts>) = suspects.into_iter().unzip();

    let mut failures: Vec<Failure> = p
        .failures
        .iter()
        .map(|(k, f)| failure_report(p, k, f, ctx))
        .collect();
    failures.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));

    let fd_usage_ratio = match (p.meta.open_fds, p.meta.fd_limit) {
        (Some(o), Some(l)) if l.soft != u64::MAX && l.soft > 0 => Some(o as f64 / l.soft as f64),
        _ => None,
    };
    let mut warnings = Vec::new();
    if let (Some(o), Some(l)) = (p.meta.open_fds, p.meta.fd_limit)
        && let Some(w) = limits::usage_warning(o, l)
    {
        warnings.push(w);
    }
    for f in failures.iter().filter(|f| f.spinning) {
        warnings.push(format!(
            "{} loop is spinning on {} ({} failures in {:.1}s)",
            f.syscall,
            f.errno,
            f.count,
            (f.last_s - f.first_s).max(0.0)
        ));
    }

    let mut report = ProcessReport {
        pid: p.tgid,
        ns_pid: p.meta.ns_pid,
        comm: p.meta.comm.clone(),
        cgroup: p.meta.cgroup.clone(),
        container: p
            .meta
            .cgroup
            .as_deref()
            .and_then(crate::cgroup::container_id),
        exited: !alive,
        fd_limit: fd_limit_json(p),
        open_fds: p.meta.open_fds,
        live_sockets: p.live(),
        opened: p.opened(),
        closed: p.closed(),
        preexisting: p.counts.preexisting,
        unseen_opened: p.counts.unseen_opened,
        unseen_closed: p.counts.unseen_closed,
        direct_sockets: p.counts.direct_live(),
        growth_per_s: p.growth_per_s(),
        seconds_to_fd_limit: if alive { seconds_to_fd_limit(p) } else { None },
        fd_usage_ratio,
        limit_advice: None,
        diagnoses: Vec::new(),
        warnings,
        tcp_states,
        listening: {
            let mut l: Vec<String> = listeners.iter().map(|a| a.to_string()).collect();
            l.sort();
            l.dedup();
            l
        },
        suspects,
        failures,
    };
    let walked = gather::Walked {
        suspects: facts,
        listeners,
    };
    let connects = ctx.connects.get(&p.tgid).map_or(&[][..], Vec::as_slice);
    let ev = gather::evidence(p, &report, walked, view, connects, secs(ctx.min_age_ns));
    report.diagnoses = diagnose::diagnose(&report, &ev);
    report.limit_advice = report
        .diagnoses
        .iter()
        .find(|d| d.pattern == diagnose::id::FD_LIMIT_TOO_LOW)
        .map(|d| d.fix.clone());
    report
}

fn senders(m: HashMap<u32, u64>) -> Vec<Sender> {
    let mut v: Vec<Sender> = m
        .into_iter()
        .map(|(pid, count)| Sender {
            pid,
            comm: procfs::comm(pid),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    v
}

/// One failure entry with what explains it: the listener's backlog for accept, the port range
/// and ports in use for EADDRNOTAVAIL, the host's file count for ENFILE.
fn failure_report(p: &Process, k: &FailureKey, f: &FailureStats, ctx: &BuildCtx<'_>) -> Failure {
    let first_s = secs(f.first_ns.saturating_sub(ctx.start_ns));
    let last_s = secs(f.last_ns.saturating_sub(ctx.start_ns));
    let accept = matches!(k.syscall, Syscall::Accept | Syscall::Accept4);
    let out_of_fds = k.errno == EMFILE || k.errno == ENFILE;
    let view = ctx.view(p.tgid);
    let mut out = Failure {
        syscall: k.syscall.as_str().to_string(),
        errno: names::errno_name(k.errno),
        count: f.count,
        first_s,
        last_s,
        tid: f.tid,
        open_fds_at_failure: f.open_fds,
        remote: names::endpoint(&f.remote),
        spinning: accept && out_of_fds && limits::is_spinning(f.count, first_s, last_s),
        listen_backlog: None,
        port_range: None,
        ports_in_use_to_remote: None,
        host_files: None,
        note: None,
        call_site: None,
        call_site_note: None,
        stack: ctx.stacks.frames(p.tgid, k.site),
    };
    let cs = crate::callsite::pick(&out.stack);
    out.call_site = cs.name;
    out.call_site_note = cs.note;
    if accept && p.exited_ns.is_none() && f.fd >= 0 {
        let info = procfs::socket_inode(p.tgid, f.fd as u32)
            .and_then(|i| view?.table.by_inode.get(&i))
            .filter(|i| i.state == Some("LISTEN"));
        out.listen_backlog = info.map(|i| Backlog {
            queued: i.rx_queue,
            max: i.tx_queue,
        });
    }
    if k.errno == ENFILE {
        out.host_files = netns::host_file_nr().map(|(allocated, max)| HostFiles { allocated, max });
    }
    if k.syscall == Syscall::Connect && k.errno == EADDRNOTAVAIL {
        out.port_range = view
            .and_then(|v| v.port_range)
            .map(|(low, high)| PortRange {
                low,
                high,
                size: high - low + 1,
            });
        out.ports_in_use_to_remote = names::socket_addr(&f.remote)
            .and_then(|a| view.map(|v| v.table.ports_to.get(&a).copied().unwrap_or(0)));
    }
    out.note = failure_note(&out);
    out
}

fn failure_note(f: &Failure) -> Option<String> {
    let accept = f.syscall.starts_with("accept");
    Some(match f.errno.as_str() {
        "EMFILE" if accept => format!(
            "the process is out of fds, so queued connections cannot be accepted{}: clients time out; raise RLIMIT_NOFILE or fix the leak",
            f.listen_backlog.as_ref().map_or(String::new(), |b| format!(
                " ({} of {} waiting in the listen backlog)",
                b.queued, b.max
            ))
        ),
        "EMFILE" => {
            "the process hit its fd limit (RLIMIT_NOFILE): new sockets fail until fds are closed"
                .into()
        }
        "ENFILE" => format!(
            "the whole host ran out of file handles{}: raise fs.file-max or find the process holding them",
            f.host_files.as_ref().map_or(String::new(), |h| format!(
                " ({} allocated, max {})",
                h.allocated, h.max
            ))
        ),
        "EADDRNOTAVAIL" => format!(
            "no free local port towards {}{}: reuse connections (keep-alive, one shared client), enable net.ipv4.tcp_tw_reuse, or widen net.ipv4.ip_local_port_range",
            f.remote.as_deref().unwrap_or("the destination"),
            match (&f.port_range, f.ports_in_use_to_remote) {
                (Some(r), Some(n)) => format!(
                    " ({n} ports in use towards it, TIME_WAIT included; the range {}-{} has {})",
                    r.low, r.high, r.size
                ),
                _ => String::new(),
            }
        ),
        "ENOBUFS" | "ENOMEM" => "the kernel is short of socket memory".into(),
        _ => return None,
    })
}

/// Which TIME_WAIT rows a report shows.
pub enum TimeWaitScope {
    /// `--all`: the whole view of each namespace.
    Host,
    /// Only what the traced processes take part in: (netns, destination) they connected to,
    /// (netns, port) they listen on.
    Traced {
        dests: hashbrown::HashSet<(u64, std::net::SocketAddr)>,
        ports: hashbrown::HashSet<(u64, u16)>,
    },
}

/// A row matters from this share of the port range (outgoing) or this count.
const TW_SHARE: f64 = 0.01;
const TW_COUNT: u64 = 100;

/// TIME_WAIT that matters in each namespace, largest first: outgoing per destination (flagged
/// above half the port range), incoming per client address and listening port.
pub fn time_wait(
    views: &HashMap<u64, NetView>,
    scope: &TimeWaitScope,
    per_netns: usize,
) -> Vec<TimeWait> {
    let mut out = Vec::new();
    for (ns, v) in views {
        let size = v.port_range.map(|(lo, hi)| hi - lo + 1);
        let mut rows: Vec<TimeWait> = Vec::new();
        for (remote, count) in &v.table.time_wait {
            let ratio = size.map(|s| *count as f64 / f64::from(s));
            let wanted = match scope {
                TimeWaitScope::Host => true,
                TimeWaitScope::Traced { dests, .. } => dests.contains(&(*ns, *remote)),
            };
            if wanted && (ratio.is_some_and(|r| r >= TW_SHARE) || *count >= TW_COUNT) {
                rows.push(TimeWait {
                    netns: *ns,
                    direction: "outgoing",
                    remote: remote.to_string(),
                    local_port: None,
                    count: *count,
                    port_range_size: size,
                    ratio,
                    flagged: ratio.is_some_and(|r| r > 0.5),
                });
            }
        }
        for ((port, client), count) in &v.table.time_wait_in {
            let wanted = match scope {
                TimeWaitScope::Host => true,
                TimeWaitScope::Traced { ports, .. } => ports.contains(&(*ns, *port)),
            };
            if wanted && *count >= TW_COUNT {
                rows.push(TimeWait {
                    netns: *ns,
                    direction: "incoming",
                    remote: client.to_string(),
                    local_port: Some(*port),
                    count: *count,
                    port_range_size: None,
                    ratio: None,
                    flagged: false,
                });
            }
        }
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.remote.cmp(&b.remote)));
        rows.truncate(per_netns);
        out.extend(rows);
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.count));
    out
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

#[cfg(test)]
mod tests {
    use sockleak_common::socket::{Endpoint, SocketRecord};

    use super::*;
    use crate::{
        procfs::FdLimit,
        sockdiag::{SockInfo, SocketTable},
        tracker::Socket,
    };

    fn sock(created: u64, stack: i32, origin: Origin, port: u16) -> Socket {
        let mut r = SocketRecord::EMPTY;
        r.created_ns = created;
        r.stack_id = stack;
        r.origin = origin as u8;
        r.family = 2;
        r.sock_type = 1;
        r.remote = Endpoint {
            family: 2,
            port,
            addr: [0; 32],
        };
        r.remote.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        Socket::new(r, 7)
    }

    static NO_CONNECTS: std::sync::LazyLock<HashMap<u32, Vec<(std::net::SocketAddr, u64)>>> =
        std::sync::LazyLock::new(HashMap::new);

    fn no_states(_: u64, _: u8) -> Option<crate::tcp_ages::Seen> {
        None
    }

    fn no_samples(_: u32, _: u64) -> Option<i32> {
        None
    }

    fn ctx<'a>(
        stacks: &'a Stacks,
        views: &'a HashMap<u64, NetView>,
        netns: &'a HashMap<u32, u64>,
    ) -> BuildCtx<'a> {
        BuildCtx {
            stacks,
            views,
            netns,
            default_netns: Some(1),
            state_since: &no_states,
            sampled: &no_samples,
            now_ns: 100_000_000_000,
            start_ns: 0,
            min_age_ns: 5_000_000_000,
            min_count: 1,
            max_remotes: 10,
            connects: &NO_CONNECTS,
        }
    }

    #[test]
    fn groups_by_call_site_and_ages() {
        let mut p = Process::new(7, None, 0);
        // Exited, so /proc is not consulted for inodes.
        p.exited_ns = Some(100_000_000_000);
        for fd in 0..4 {
            p.sockets
                .insert(fd, sock(10_000_000_000, 1, Origin::Socket, 4200));
        }
        p.sockets
            .insert(10, sock(50_000_000_000, 2, Origin::Accept4, 80));
        p.sockets
            .insert(11, sock(99_000_000_000, 2, Origin::Accept4, 80)); // too young
        let stacks = Stacks::default();
        let (views, netns) = (HashMap::new(), HashMap::new());
        let r = process_report(&p, &ctx(&stacks, &views, &netns));
        assert_eq!(r.suspects.len(), 2);
        assert_eq!(r.suspects[0].count, 4);
        assert_eq!(r.suspects[0].origin, "socket");
        assert_eq!(r.suspects[0].oldest_age_s, 90.0);
        assert_eq!(r.suspects[0].kinds["tcp"], 4);
        assert_eq!(r.suspects[0].remotes[0].endpoint, "127.0.0.1:4200");
        assert_eq!(r.suspects[0].remotes[0].count, 4);
        assert_eq!(r.suspects[1].count, 1);
        assert_eq!(r.live_sockets, 6);
        assert!(r.exited);
    }

    #[test]
    fn jit_variants_of_one_call_site_are_one_suspect() {
        use crate::stacks::Frame;
        let js = |addr: u64, sym: &str| Frame {
            addr,
            symbol: Some(sym.into()),
            module: None,
            file: None,
            line: None,
        };
        let mut stacks = Stacks::default();
        let site = |id| Site {
            stack_id: id,
            caller: 0,
        };
        // Interpreted and optimized code of one function: different addresses, one name.
        stacks.insert_resolved(7, site(1), vec![js(0x10, "JS:~leak file:///a.js:3:1")]);
        stacks.insert_resolved(7, site(2), vec![js(0x90, "JS:*leak file:///a.js:3:1")]);
        stacks.insert_resolved(7, site(3), vec![js(0x50, "JS:~other file:///b.js:9:1")]);
        let mut p = Process::new(7, None, 0);
        p.exited_ns = Some(100_000_000_000);
        for fd in 0..9 {
            let (id, port) = match fd {
                0..5 => (1, 80),
                5..8 => (2, 81),
                _ => (3, 82),
            };
            p.sockets
                .insert(fd, sock(10_000_000_000, id, Origin::Socket, port));
        }
        let (views, netns) = (HashMap::new(), HashMap::new());
        let r = process_report(&p, &ctx(&stacks, &views, &netns));
        assert_eq!(r.suspects.len(), 2);
        let s = &r.suspects[0];
        assert_eq!(s.call_site.as_deref(), Some("leak (a.js:3)"));
        assert_eq!((s.count, s.stack_count), (8, 5));
        assert_eq!(s.stack[0].addr, 0x10, "the most frequent stack first");
        assert_eq!(s.other_stacks.len(), 1);
        assert_eq!(s.other_stacks[0].count, 3);
        assert_eq!(s.other_stacks[0].stack[0].addr, 0x90);
        let remotes: Vec<_> = s
            .remotes
            .iter()
            .map(|r| (r.endpoint.as_str(), r.count))
            .collect();
        assert_eq!(remotes, [("127.0.0.1:80", 5), ("127.0.0.1:81", 3)]);
        assert_eq!(s.kinds["tcp"], 8);
        assert_eq!(r.suspects[1].call_site.as_deref(), Some("other (b.js:9)"));
        assert_eq!(r.suspects[1].count, 1);
    }

    #[test]
    fn busy_established_and_listeners_are_not_suspects() {
        let mut p = Process::new(7, None, 0);
        p.exited_ns = Some(100_000_000_000);
        let mut busy = sock(0, 1, Origin::Socket, 1);
        busy.inode = Some(1);
        let mut idle = sock(0, 1, Origin::Socket, 1);
        idle.inode = Some(2);
        let mut listener = sock(0, 3, Origin::Socket, 0);
        listener.inode = Some(3);
        let mut closewait = sock(0, 4, Origin::Accept, 0);
        closewait.inode = Some(4);
        p.sockets.insert(3, busy);
        p.sockets.insert(4, idle);
        p.sockets.insert(5, listener);
        p.sockets.insert(6, closewait);
        let mut t = SocketTable::default();
        let info = |state, idle_ms| SockInfo {
            kind: "tcp",
            state: Some(state),
            state_code: None,
            local: None,
            remote: None,
            idle_ms,
            rx_queue: 0,
            tx_queue: 0,
            cookie: 0,
        };
        t.by_inode.insert(1, info("ESTABLISHED", Some(100)));
        t.by_inode.insert(2, info("ESTABLISHED", Some(60_000)));
        t.by_inode.insert(3, info("LISTEN", None));
        t.by_inode.insert(4, info("CLOSE_WAIT", Some(100)));
        let stacks = Stacks::default();
        let mut views = HashMap::new();
        views.insert(
            1,
            NetView {
                table: t,
                port_range: None,
            },
        );
        let netns = HashMap::new();
        let r = process_report(&p, &ctx(&stacks, &views, &netns));
        let states: Vec<_> = r
            .suspects
            .iter()
            .flat_map(|s| s.states.keys().cloned())
            .collect();
        assert_eq!(r.suspects.len(), 2, "{states:?}");
        assert!(states.contains(&"CLOSE_WAIT".to_string()));
        assert!(states.contains(&"ESTABLISHED".to_string()));
        let est = r
            .suspects
            .iter()
            .find(|s| s.states.contains_key("ESTABLISHED"))
            .unwrap();
        assert_eq!(est.count, 1);
        assert_eq!(est.max_idle_s, Some(60.0));
    }

    #[test]
    fn time_to_limit() {
        let mut p = Process::new(7, None, 0);
        p.meta.fd_limit = Some(FdLimit {
            soft: 1024,
            hard: 4096,
        });
        for i in 0..5u64 {
            p.sample(i * 1_000_000_000, Some(24 + i * 100));
        }
        p.meta.open_fds = Some(424);
        assert_eq!(seconds_to_fd_limit(&p), Some(6.0));
        p.meta.open_fds = Some(1024);
        assert_eq!(seconds_to_fd_limit(&p), Some(0.0));
    }
}

#[cfg(test)]
mod time_wait_tests {
    use super::*;
    use crate::sockdiag::SocketTable;

    fn views() -> HashMap<u64, NetView> {
        let mut t = SocketTable::default();
        t.time_wait.insert("10.0.0.1:80".parse().unwrap(), 150);
        t.time_wait.insert("10.0.0.2:80".parse().unwrap(), 2);
        t.time_wait.insert("10.0.0.3:5432".parse().unwrap(), 60);
        t.time_wait_in
            .insert((8080, "10.0.0.9".parse().unwrap()), 500);
        let mut views = HashMap::new();
        views.insert(
            9,
            NetView {
                table: t,
                port_range: Some((40000, 40199)),
            },
        );
        views
    }

    #[test]
    fn host_view_keeps_rows_that_matter() {
        let tw = time_wait(&views(), &TimeWaitScope::Host, 10);
        let rows: Vec<_> = tw
            .iter()
            .map(|t| (t.direction, t.remote.as_str(), t.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("incoming", "10.0.0.9", 500),
                ("outgoing", "10.0.0.1:80", 150),
                ("outgoing", "10.0.0.3:5432", 60),
                ("outgoing", "10.0.0.2:80", 2),
            ]
        );
        assert!(tw[1].flagged, "75% of the range");
        assert_eq!(tw[0].local_port, Some(8080));
    }

    #[test]
    fn traced_view_shows_only_their_destinations() {
        let scope = TimeWaitScope::Traced {
            dests: [(9, "10.0.0.3:5432".parse().unwrap())]
                .into_iter()
                .collect(),
            ports: hashbrown::HashSet::new(),
        };
        let tw = time_wait(&views(), &scope, 10);
        assert_eq!(tw.len(), 1);
        assert_eq!(tw[0].remote, "10.0.0.3:5432");
    }

    #[test]
    fn single_sockets_to_random_ports_are_noise() {
        let mut t = SocketTable::default();
        for port in 50000..50010 {
            t.time_wait
                .insert(format!("10.0.0.1:{port}").parse().unwrap(), 1);
        }
        let mut views = HashMap::new();
        views.insert(
            9,
            NetView {
                table: t,
                port_range: Some((32768, 60999)),
            },
        );
        assert!(time_wait(&views, &TimeWaitScope::Host, 10).is_empty());
    }
}
