//! Failed socket/accept/connect calls with what explains them: the listener's backlog for
//! accept, the port range and ports in use for EADDRNOTAVAIL, the host's file count for
//! ENFILE, and a note saying what the failure means.

use sockleak_common::event::Syscall;

use super::facts::{BuildCtx, Facts};
use crate::{
    host::limits,
    model::{Backlog, Failure, HostFiles, PortRange, names},
    symbols::callsite,
    tracker::{FailureKey, FailureStats, Process},
};

pub const EMFILE: i64 = 24;
pub const ENFILE: i64 = 23;
const EADDRNOTAVAIL: i64 = 99;

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The process's failures, most frequent first.
pub fn failures(p: &Process, facts: &Facts, ctx: &BuildCtx<'_>) -> Vec<Failure> {
    let mut out: Vec<Failure> = p
        .failures
        .iter()
        .map(|(k, f)| failure(p, k, f, facts, ctx))
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));
    out
}

fn failure(
    p: &Process,
    k: &FailureKey,
    f: &FailureStats,
    facts: &Facts,
    ctx: &BuildCtx<'_>,
) -> Failure {
    let first_s = secs(f.first_ns.saturating_sub(ctx.start_ns));
    let last_s = secs(f.last_ns.saturating_sub(ctx.start_ns));
    let accept = matches!(k.syscall, Syscall::Accept | Syscall::Accept4);
    let out_of_fds = k.errno == EMFILE || k.errno == ENFILE;
    let view = facts.view(p.tgid);
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
    let cs = callsite::pick(&out.stack);
    out.call_site = cs.name;
    out.call_site_note = cs.note;
    if accept && p.exited_ns.is_none() && f.fd >= 0 {
        let info = facts
            .of(p.tgid)
            .inodes
            .get(&(f.fd as u32))
            .and_then(|i| view?.table.by_inode.get(i))
            .filter(|i| i.state == Some("LISTEN"));
        out.listen_backlog = info.map(|i| Backlog {
            queued: i.rx_queue,
            max: i.tx_queue,
        });
    }
    if k.errno == ENFILE {
        out.host_files = facts
            .host_files
            .map(|(allocated, max)| HostFiles { allocated, max });
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
    out.note = note(&out);
    out
}

fn note(f: &Failure) -> Option<String> {
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
