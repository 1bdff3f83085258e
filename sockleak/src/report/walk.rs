//! The walk over a process's live sockets: what its sockets are (TCP states, listeners) and
//! the stale ones grouped by (stack, call site, origin), before call sites are merged.

use std::{collections::BTreeMap, net::SocketAddr};

use hashbrown::HashMap;
use sockleak_common::{
    origin::{conn_state, join},
    socket::{NO_STACK, Origin, SAMPLED_OUT},
};

use super::facts::{BuildCtx, Facts};
use crate::{
    diagnose::SuspectFacts, host::sockdiag::SockInfo, model::names, symbols::stacks::Site,
    tracker::Process,
};

/// A socket's joined origin (see `sockleak_common::origin`), as a group key: its stack, and
/// for a Node retry the stacks it may inherit. All NO_STACK and `join::NONE` without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginKey {
    pub join: u8,
    pub site: Site,
    pub alt: i32,
    pub alt2: i32,
}

impl OriginKey {
    pub const NONE: OriginKey = OriginKey {
        join: join::NONE,
        site: Site {
            stack_id: NO_STACK,
            caller: 0,
        },
        alt: NO_STACK,
        alt2: NO_STACK,
    };
}

/// Key of a raw group: (address-space pid, the socket's stack, how the fd came to be, its
/// origin).
pub type GroupKey = (u32, Site, u8, OriginKey);

/// The stale sockets of one (address-space pid, stack, origin).
#[derive(Default)]
pub struct Group {
    pub count: u64,
    pub before_tracing: u64,
    pub oldest_ns: u64,
    pub kinds: BTreeMap<String, u64>,
    pub remotes: HashMap<String, u64>,
    pub locals: HashMap<String, u64>,
    pub states: BTreeMap<String, u64>,
    pub state_age_ns: BTreeMap<String, u64>,
    pub state_age_at_least: Vec<String>,
    pub max_idle_ms: Option<u32>,
    pub senders: HashMap<u32, u64>,
    pub facts: SuspectFacts,
}

impl Group {
    /// Adds another group's sockets (of the same call site) to this one.
    pub fn merge(&mut self, o: Group) {
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

/// What the walk found.
#[derive(Default)]
pub struct Walk {
    pub groups: HashMap<GroupKey, Group>,
    /// TCP states of all live sockets.
    pub tcp_states: BTreeMap<String, u64>,
    /// Addresses the process listens on (TCP), in fd order.
    pub listeners: Vec<SocketAddr>,
}

/// Whether a socket counts as leaked: old enough, not a listener, and (for ESTABLISHED TCP
/// with a known idle time) not in use recently. A pooled connection that carries traffic is
/// old but not leaked; one nobody has used since min-age is.
pub fn stale(info: Option<&SockInfo>, age_ns: u64, min_age_ns: u64) -> bool {
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

pub fn sockets(p: &Process, facts: &Facts, ctx: &BuildCtx<'_>) -> Walk {
    let end_ns = p.exited_ns.unwrap_or(ctx.now_ns);
    let view = facts.view(p.tgid);
    let proc_facts = facts.of(p.tgid);
    let mut w = Walk::default();
    for (fd, s) in &p.sockets {
        let age = end_ns.saturating_sub(s.record.created_ns);
        // Inodes of sockets made while tracing come from /proc at report time.
        let inode = proc_facts.inodes.get(fd).copied().or(s.inode);
        let info = inode.and_then(|i| view?.table.by_inode.get(&i));
        if let Some(st) = info.and_then(|i| i.state) {
            *w.tcp_states.entry(st.to_string()).or_insert(0) += 1;
            if st == "LISTEN"
                && let Some(l) = info.and_then(|i| i.local)
            {
                w.listeners.push(l);
            }
        }
        if !stale(info, age, ctx.min_age_ns) {
            continue;
        }
        let mut site = ctx.stacks.site(&s.record);
        if site.stack_id == SAMPLED_OUT {
            let sampled = facts.sampled.get(&(s.stack_pid, site.caller)).copied();
            site.stack_id = ctx.stacks.canonical(sampled.unwrap_or(NO_STACK));
        }
        let c = &s.record.conn;
        let origin = if c.join == join::NONE || c.stack_id == NO_STACK {
            OriginKey::NONE
        } else {
            OriginKey {
                join: c.join,
                site: Site {
                    stack_id: ctx.stacks.canonical(c.stack_id),
                    caller: c.caller,
                },
                alt: ctx.stacks.canonical(c.alt_stack_id),
                alt2: ctx.stacks.canonical(c.alt2_stack_id),
            }
        };
        let g = w
            .groups
            .entry((s.stack_pid, site, s.record.origin, origin))
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
                None => proc_facts.kinds.get(fd).copied().unwrap_or("unknown"),
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
                && let Some(c) = ctx.ages.since(i.cookie, code)
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
        match c.state {
            conn_state::GO_CHECKED_OUT => g.facts.checked_out += 1,
            conn_state::GO_IDLE => g.facts.idle_in_pool += 1,
            _ => {}
        }
        if let Some(i) = info.filter(|i| i.state == Some("ESTABLISHED") && i.rx_queue > 0) {
            g.facts.unread_sockets += 1;
            g.facts.unread_bytes += u64::from(i.rx_queue);
        }
    }
    w
}
