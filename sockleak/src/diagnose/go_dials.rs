//! What the two Go HTTP client patterns share: finding suspects made by net/http's dial, and
//! judging from their Transports (or, without the uprobe, their receive queues) which of the
//! two causes holds them open.

use super::{Evidence, SuspectFacts, dur, plural};
use crate::{
    model::{Confidence, ProcessReport, Suspect},
    symbols::{
        callsite::Origins,
        gohttp::{DIAL_CONN, Probe},
    },
};

/// A Transport keeps at most this many idle connections per host unless told otherwise
/// (`DefaultMaxIdleConnsPerHost`): more per Transport were never handed back.
const MAX_IDLE_PER_HOST: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    TransportPerRequest,
    BodyNotClosed,
}

/// One suspect's verdict: the cause, how sure, and the evidence lines.
pub struct Verdict<'a> {
    pub suspect: &'a Suspect,
    pub cause: Cause,
    pub confidence: Confidence,
    pub evidence: Vec<String>,
}

/// Made under net/http's dial: on the dial goroutine (dialConn on the stack), or joined by the
/// probes to a net/http connection (a dual-stack dial connects on racer goroutines of its own,
/// whose stacks do not show dialConn).
fn made_by_dial(s: &Suspect) -> bool {
    s.stack
        .iter()
        .any(|f| f.symbol.as_deref() == Some(DIAL_CONN))
        || s.call_site
            .as_deref()
            .is_some_and(|c| c.starts_with(DIAL_CONN))
        || s.origin_call
            .as_ref()
            .is_some_and(|o| o.join.starts_with("go-"))
}

/// Verdicts for every suspect made by net/http's dial that holds idle connections.
pub fn verdicts<'a>(r: &'a ProcessReport, ev: &Evidence) -> Vec<Verdict<'a>> {
    let none = SuspectFacts::default();
    r.suspects
        .iter()
        .enumerate()
        .filter(|(_, s)| made_by_dial(s))
        .filter_map(|(i, s)| {
            let established = s.states.get("ESTABLISHED").copied().unwrap_or(0);
            // A pool may hold this many idle per host; fewer is not a pile-up.
            (established > MAX_IDLE_PER_HOST)
                .then(|| verdict(r, s, ev.suspects.get(i).unwrap_or(&none), ev, established))
        })
        .collect()
}

/// Where the requests came from: the origin's call site when the probes joined it, else why
/// the report cannot say.
fn origin_line(s: &Suspect, ev: &Evidence) -> String {
    match (&s.origin_call, &ev.origins) {
        (Some(o), _) if o.call_site.is_some() => format!(
            "the requests were sent by {} (joined to the sockets by uprobes: {}); the sockets were dialed on net/http's own goroutine",
            o.call_site.as_deref().unwrap_or_default(),
            match o.join {
                "go-roundtrip" => "the latest request on each connection",
                _ => "the request that caused each dial",
            }
        ),
        (_, Some(Origins::Unavailable(why))) => format!(
            "Go dials on a goroutine of its own: the code that sent the requests is not on this stack, and could not be joined to it: {why}"
        ),
        (_, Some(Origins::Joined)) => {
            "Go dials on a goroutine of its own: the code that sent the requests is not on this stack (these connections were made before sockleak attached its uprobes)".into()
        }
        (_, None) => {
            "Go dials on a goroutine of its own: the code that sent the requests is not on this stack".into()
        }
    }
}

fn verdict<'a>(
    r: &ProcessReport,
    s: &'a Suspect,
    f: &SuspectFacts,
    ev: &Evidence,
    established: u64,
) -> Verdict<'a> {
    let mut evidence = vec![format!(
        "{} made by {DIAL_CONN}, idle for up to {}",
        plural(
            established,
            "ESTABLISHED connection",
            "ESTABLISHED connections"
        ),
        dur(s.max_idle_s.unwrap_or(s.oldest_age_s))
    )];
    if let Some(top) = s.remotes.first() {
        let more = s.remotes.len().saturating_sub(1);
        evidence.push(if more == 0 {
            format!("all {} to {}", s.count, top.endpoint)
        } else {
            format!(
                "{} to {} (and {more} other destinations)",
                top.count, top.endpoint
            )
        });
    }
    let known: u64 = f.owners.values().sum();
    let distinct = f.owners.len() as u64;
    let unread = f.unread_sockets > 0 && f.unread_sockets * 2 >= established;
    let unread_line = || {
        format!(
            "{} of them have response data nobody read waiting in the receive queue ({} bytes)",
            f.unread_sockets, f.unread_bytes
        )
    };
    let (cause, confidence) = match &ev.go {
        Some(Probe::Attached) if known >= 2 => {
            let busiest = f.owners.values().copied().max().unwrap_or(0);
            let cause = if known > distinct * MAX_IDLE_PER_HOST {
                evidence.push(format!(
                    "they belong to {} (the busiest owns {busiest}); a Transport keeps at most MaxIdleConnsPerHost (default {MAX_IDLE_PER_HOST}) idle connections per host, so these were never handed back",
                    plural(distinct, "*http.Transport", "*http.Transport objects"),
                ));
                if unread {
                    evidence.push(unread_line());
                }
                Cause::BodyNotClosed
            } else {
                evidence.push(format!(
                    "they belong to {distinct} distinct *http.Transport objects ({:.1} connections each): a Transport is made per request",
                    known as f64 / distinct as f64
                ));
                Cause::TransportPerRequest
            };
            let mut confidence = Confidence::Certain;
            if known * 5 < s.count * 4 {
                evidence.push(format!(
                    "only {known} of the {} sockets carried their Transport (the others were made before sockleak attached its uprobe)",
                    s.count
                ));
                confidence = Confidence::Likely;
            }
            (cause, confidence)
        }
        other => {
            let why = match other {
                Some(Probe::Unavailable(why)) => why.clone(),
                Some(Probe::Attached) => {
                    "the sockets were made before sockleak attached its uprobe".into()
                }
                None => "the process was not probed".into(),
            };
            evidence.push(format!("could not count Transport objects: {why}"));
            if unread {
                evidence.push(unread_line());
                (Cause::BodyNotClosed, Confidence::Likely)
            } else {
                evidence.push(
                    "if the program shares one Transport, response bodies not being closed would look the same"
                        .into(),
                );
                (Cause::TransportPerRequest, Confidence::Likely)
            }
        }
    };
    if let Some(t) = r.seconds_to_fd_limit
        && r.growth_per_s > 0.0
    {
        evidence.push(format!(
            "open fds grow {:.1}/s: the fd limit is reached in about {}",
            r.growth_per_s,
            dur(t)
        ));
    }
    if f.checked_out + f.idle_in_pool > 0 {
        evidence.push(match cause {
            Cause::BodyNotClosed => format!(
                "{} of them are still checked out after their last request (its response body was never closed); {} went back to the idle pool",
                f.checked_out, f.idle_in_pool
            ),
            Cause::TransportPerRequest => format!(
                "{} of them went back to their Transport's idle pool after their request, {} are still checked out",
                f.idle_in_pool, f.checked_out
            ),
        });
    }
    evidence.push(origin_line(s, ev));
    Verdict {
        suspect: s,
        cause,
        confidence,
        evidence,
    }
}
