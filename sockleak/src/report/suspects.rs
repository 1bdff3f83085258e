//! Leak suspects: the walk's groups merged per named call site (JIT tiers, inlined variants
//! and stack copies of one site are one leak, their distinct stacks kept inside), filtered by
//! `--min-count`, largest first.

use hashbrown::HashMap;
use sockleak_common::socket::Origin;

use super::{
    facts::{BuildCtx, Facts},
    walk::Group,
};
use crate::{
    diagnose::SuspectFacts,
    model::{Remote, Sender, StackCount, Suspect},
    symbols::{
        callsite::{self, CallSite},
        stacks::Site,
    },
};

/// Other stacks listed per suspect.
const MAX_OTHER_STACKS: usize = 8;

/// The raw groups of one call site, merged.
struct Merged {
    call_site: CallSite,
    group: Group,
    stacks: Vec<StackCount>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The suspects, largest first, with the facts the diagnoses need of each (parallel).
pub fn suspects(
    groups: HashMap<(u32, Site, u8), Group>,
    facts: &Facts,
    ctx: &BuildCtx<'_>,
) -> (Vec<Suspect>, Vec<SuspectFacts>) {
    let mut merged: HashMap<(String, u8), Merged> = HashMap::new();
    for ((stack_pid, site, origin), g) in groups {
        let frames = ctx.stacks.frames(stack_pid, site);
        let pick = callsite::pick(&frames);
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
    });
    out.into_iter().unzip()
}

fn suspect(origin: u8, m: Merged, facts: &Facts, ctx: &BuildCtx<'_>) -> (Suspect, SuspectFacts) {
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
        senders: senders(g.senders, facts),
        call_site: call_site.name,
        call_site_note: call_site.note,
        stack: first.stack,
        stack_count: first.count,
        other_stacks,
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
