//! Leak suspects: the walk's groups merged per named call site (JIT tiers, inlined variants
//! and stack copies of one site are one leak, their distinct stacks kept inside), filtered by
//! `--min-count`, largest first. A socket joined to the code that asked for it (its origin:
//! Go's request, Node's `net.connect`) is grouped by the origin's call site.

use hashbrown::HashMap;
use sockleak_common::socket::Origin;

use super::{
    facts::{BuildCtx, Facts},
    walk::{Group, GroupKey, OriginKey},
};
use crate::{
    diagnose::SuspectFacts,
    model::{OriginCall, Remote, Sender, StackCount, Suspect},
    symbols::{
        callsite::{self, CallSite, Origins},
        stacks::{Frame, Site},
    },
};

/// Other stacks listed per suspect.
const MAX_OTHER_STACKS: usize = 8;

/// The raw groups of one call site, merged.
struct Merged {
    call_site: CallSite,
    group: Group,
    stacks: Vec<StackCount>,
    /// Joined origins: how (sockets per join), and their stacks.
    joins: Vec<(&'static str, u64)>,
    origin_stacks: Vec<StackCount>,
    /// The origin's call site (None: its frames could not be named).
    origin_name: Option<String>,
}

/// What a group's origin says: its call site (as named from the origin's stacks), how it was
/// joined, and the stack that named it.
struct Joined {
    pick: callsite::OriginPick,
    join: &'static str,
    stack: Vec<Frame>,
}

fn joined(stack_pid: u32, o: &OriginKey, ctx: &BuildCtx<'_>) -> Option<Joined> {
    let join = callsite::join_name(o.join)?;
    let own = ctx.stacks.frames(stack_pid, o.site);
    let alt = |id| {
        ctx.stacks.frames(
            stack_pid,
            Site {
                stack_id: id,
                caller: 0,
            },
        )
    };
    let stacks = [own, alt(o.alt), alt(o.alt2)];
    let refs: Vec<&[Frame]> = stacks.iter().map(Vec::as_slice).collect();
    let pick = callsite::pick_origin(o.join, &refs)?;
    let stack = stacks.into_iter().nth(pick.stack).unwrap_or_default();
    Some(Joined { pick, join, stack })
}

fn add_stack(stacks: &mut Vec<StackCount>, frames: Vec<Frame>, count: u64) {
    match stacks.iter_mut().find(|sc| sc.stack == frames) {
        Some(sc) => sc.count += count,
        None => stacks.push(StackCount {
            count,
            stack: frames,
        }),
    }
}

fn most_first(stacks: &mut [StackCount]) {
    stacks.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.stack.len().cmp(&b.stack.len()))
    });
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The suspects, largest first, with the facts the diagnoses need of each (parallel).
/// `origins`: whether the process's sockets are joined to the code that asked for them.
pub fn suspects(
    groups: HashMap<GroupKey, Group>,
    origins: Option<&Origins>,
    facts: &Facts,
    ctx: &BuildCtx<'_>,
) -> (Vec<Suspect>, Vec<SuspectFacts>) {
    // Largest first, so what a merged suspect takes from its first group is deterministic.
    let mut groups: Vec<(GroupKey, Group)> = groups.into_iter().collect();
    groups.sort_by(|(ka, a), (kb, b)| {
        b.count
            .cmp(&a.count)
            .then((ka.0, ka.1, ka.2).cmp(&(kb.0, kb.1, kb.2)))
    });
    let mut merged: HashMap<(String, u8), Merged> = HashMap::new();
    for ((stack_pid, site, origin, okey), g) in groups {
        let frames = ctx.stacks.frames(stack_pid, site);
        let own = callsite::pick(&frames);
        let origin_call = joined(stack_pid, &okey, ctx);
        let pick = match &origin_call {
            Some(j) if j.pick.call_site.name.is_some() => j.pick.call_site.clone(),
            // The origin's frames are not named: the socket's own call site if it has one,
            // else why the origin's is unknown.
            Some(_) if own.name.is_some() => own,
            Some(j) => CallSite {
                name: None,
                note: j.pick.call_site.note.clone().or(own.note),
                shared: true,
                deferred: false,
            },
            // Made by the runtime later, and not joined: say why, when the probes could not be.
            None if own.deferred && own.name.is_none() => match origins {
                Some(Origins::Unavailable(why)) => CallSite {
                    note: Some(format!(
                        "{}; sockleak could not join it to that code: {why}",
                        own.note.as_deref().unwrap_or_default()
                    )),
                    ..own
                },
                _ => own,
            },
            None => own,
        };
        let key = match (&pick.name, pick.shared) {
            (Some(name), _) => name.clone(),
            (None, true) => format!("#{stack_pid}:{}", pick.note.as_deref().unwrap_or("")),
            (None, false) => format!("#{stack_pid}:{}:{:x}", site.stack_id, site.caller),
        };
        let m = merged.entry((key, origin)).or_insert_with(|| Merged {
            origin_name: origin_call
                .as_ref()
                .and_then(|j| j.pick.call_site.name.clone()),
            call_site: pick,
            group: Group::default(),
            stacks: Vec::new(),
            joins: Vec::new(),
            origin_stacks: Vec::new(),
        });
        add_stack(&mut m.stacks, frames, g.count);
        if let Some(j) = origin_call {
            match m.joins.iter_mut().find(|(n, _)| *n == j.join) {
                Some((_, c)) => *c += g.count,
                None => m.joins.push((j.join, g.count)),
            }
            add_stack(&mut m.origin_stacks, j.stack, g.count);
        }
        m.group.merge(g);
    }
    let mut out: Vec<(Suspect, SuspectFacts)> = merged
        .into_iter()
        .filter(|(_, m)| {
            m.group.count >= ctx.min_count || m.group.states.contains_key("CLOSE_WAIT")
        })
        .map(|((_, origin), m)| suspect(origin, m, facts, ctx))
        .collect();
    out.sort_by(|(a, _), (b, _)| {
        b.count
            .cmp(&a.count)
            .then(b.oldest_age_s.total_cmp(&a.oldest_age_s))
            .then(a.call_site.cmp(&b.call_site))
    });
    out.into_iter().unzip()
}

fn suspect(origin: u8, m: Merged, facts: &Facts, ctx: &BuildCtx<'_>) -> (Suspect, SuspectFacts) {
    let Merged {
        call_site,
        group: g,
        mut stacks,
        mut joins,
        mut origin_stacks,
        origin_name,
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
    most_first(&mut stacks);
    most_first(&mut origin_stacks);
    joins.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let origin_call = joins.first().map(|(join, _)| OriginCall {
        join,
        call_site: origin_name,
        stack: origin_stacks
            .into_iter()
            .next()
            .map(|s| s.stack)
            .unwrap_or_default(),
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
        senders: senders(g.senders, facts),
        call_site: call_site.name,
        call_site_note: call_site.note,
        stack: first.stack,
        stack_count: first.count,
        other_stacks,
        origin_call,
    };
    (s, g.facts)
}

fn senders(m: HashMap<u32, u64>, facts: &Facts) -> Vec<Sender> {
    let mut v: Vec<Sender> = m
        .into_iter()
        .map(|(pid, count)| Sender {
            pid,
            comm: facts.comms.get(&pid).cloned(),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    v
}
