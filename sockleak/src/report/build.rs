//! Building reports from the tracker's state: leak suspects grouped by call site, failures,
//! growth and time to the fd limit.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use sockleak_common::socket::Origin;

use super::{
    model::{Failure, FdLimitJson, ProcessReport, Remote, SnapshotProcess, Suspect},
    names,
};
use crate::{
    procfs,
    sockdiag::SocketTable,
    stacks::{Site, Stacks},
    tracker::Process,
};

/// Report-wide inputs.
pub struct BuildCtx<'a> {
    pub stacks: &'a Stacks,
    pub table: Option<&'a SocketTable>,
    pub now_ns: u64,
    pub start_ns: u64,
    pub min_age_ns: u64,
    pub min_count: u64,
    /// Remotes listed per suspect.
    pub max_remotes: usize,
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

pub fn snapshot_process(p: &Process) -> SnapshotProcess {
    SnapshotProcess {
        pid: p.tgid,
        comm: p.meta.comm.clone(),
        live_sockets: p.live(),
        opened: p.opened,
        closed: p.closed,
        open_fds: p.meta.open_fds,
        fd_limit: fd_limit_json(p),
        growth_per_s: p.growth_per_s(),
        seconds_to_fd_limit: seconds_to_fd_limit(p),
    }
}

#[derive(Default)]
struct Group {
    count: u64,
    oldest_ns: u64,
    kinds: BTreeMap<String, u64>,
    remotes: HashMap<String, u64>,
    states: BTreeMap<String, u64>,
    max_idle_ms: Option<u32>,
}

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
    let mut groups: HashMap<(u32, Site, u8), Group> = HashMap::new();
    for (fd, s) in &p.sockets {
        let age = end_ns.saturating_sub(s.record.created_ns);
        let inode = inodes.get(fd).copied().or(s.inode);
        let info = inode.and_then(|i| ctx.table?.by_inode.get(&i));
        if !stale(info, age, ctx.min_age_ns) {
            continue;
        }
        let g = groups
            .entry((s.stack_pid, Site::of(&s.record), s.record.origin))
            .or_default();
        g.count += 1;
        g.oldest_ns = g.oldest_ns.max(age);
        let mut kind = names::kind_of(&s.record);
        if kind == "unknown"
            && let Some(i) = info
        {
            kind = i.kind;
        }
        *g.kinds.entry(kind.to_string()).or_insert(0) += 1;
        let remote = info
            .and_then(|i| i.remote.map(|r| r.to_string()))
            .or_else(|| names::endpoint(&s.record.remote));
        if let Some(r) = remote {
            *g.remotes.entry(r).or_insert(0) += 1;
        }
        if let Some(st) = info.and_then(|i| i.state) {
            *g.states.entry(st.to_string()).or_insert(0) += 1;
        }
        if let Some(idle) = info.and_then(|i| i.idle_ms) {
            g.max_idle_ms = Some(g.max_idle_ms.map_or(idle, |m| m.max(idle)));
        }
    }
    let mut suspects: Vec<Suspect> = groups
        .into_iter()
        .filter(|(_, g)| g.count >= ctx.min_count || g.states.contains_key("CLOSE_WAIT"))
        .map(|((stack_pid, site, origin), g)| {
            let mut remotes: Vec<Remote> = g
                .remotes
                .into_iter()
                .map(|(endpoint, count)| Remote { endpoint, count })
                .collect();
            remotes.sort_by(|a, b| b.count.cmp(&a.count).then(a.endpoint.cmp(&b.endpoint)));
            remotes.truncate(ctx.max_remotes);
            Suspect {
                count: g.count,
                oldest_age_s: secs(g.oldest_ns),
                origin: Origin::from_u8(origin)
                    .map_or("unknown", Origin::as_str)
                    .to_string(),
                kinds: g.kinds,
                remotes,
                states: g.states,
                max_idle_s: g.max_idle_ms.map(|ms| f64::from(ms) / 1e3),
                stack: ctx.stacks.frames(stack_pid, site),
            }
        })
        .collect();
    suspects.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.oldest_age_s.total_cmp(&a.oldest_age_s))
    });

    let mut failures: Vec<Failure> = p
        .failures
        .iter()
        .map(|(k, f)| Failure {
            syscall: k.syscall.as_str().to_string(),
            errno: names::errno_name(k.errno),
            count: f.count,
            first_s: secs(f.first_ns.saturating_sub(ctx.start_ns)),
            last_s: secs(f.last_ns.saturating_sub(ctx.start_ns)),
            open_fds_at_failure: f.open_fds,
            remote: names::endpoint(&f.remote),
            stack: ctx.stacks.frames(p.tgid, k.site),
        })
        .collect();
    failures.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));

    ProcessReport {
        pid: p.tgid,
        ns_pid: p.meta.ns_pid,
        comm: p.meta.comm.clone(),
        exited: !alive,
        fd_limit: fd_limit_json(p),
        open_fds: p.meta.open_fds,
        live_sockets: p.live(),
        opened: p.opened,
        closed: p.closed,
        preexisting: p.preexisting,
        growth_per_s: p.growth_per_s(),
        seconds_to_fd_limit: if alive { seconds_to_fd_limit(p) } else { None },
        suspects,
        failures,
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

#[cfg(test)]
mod tests {
    use sockleak_common::socket::{Endpoint, SocketRecord};

    use super::*;
    use crate::{procfs::FdLimit, sockdiag::SockInfo, tracker::Socket};

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
        Socket {
            record: r,
            inode: None,
            stack_pid: 7,
        }
    }

    fn ctx<'a>(stacks: &'a Stacks, table: Option<&'a SocketTable>) -> BuildCtx<'a> {
        BuildCtx {
            stacks,
            table,
            now_ns: 100_000_000_000,
            start_ns: 0,
            min_age_ns: 5_000_000_000,
            min_count: 1,
            max_remotes: 10,
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
        let r = process_report(&p, &ctx(&stacks, None));
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
            local: None,
            remote: None,
            idle_ms,
        };
        t.by_inode.insert(1, info("ESTABLISHED", Some(100)));
        t.by_inode.insert(2, info("ESTABLISHED", Some(60_000)));
        t.by_inode.insert(3, info("LISTEN", None));
        t.by_inode.insert(4, info("CLOSE_WAIT", Some(100)));
        let stacks = Stacks::default();
        let r = process_report(&p, &ctx(&stacks, Some(&t)));
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
