//! Known leak patterns: each module recognises one from a process's report plus the evidence
//! it needs, and says what is wrong and what to change. A pattern the evidence does not
//! support is not emitted; one whose check could not be made is `likely` and says why.
//!
//! The patterns are pure functions of ([`ProcessReport`], [`Evidence`]). The evidence is built
//! from the report builder's facts (`evidence`); what only the edge can read, and only some
//! patterns want, it reads when [`wants`] says so.

pub mod accept_emfile_spin;
pub mod close_wait_not_closed;
pub mod connects_to_itself;
mod evidence;
pub mod fd_limit_too_low;
mod go_dials;
pub mod go_response_body_not_closed;
pub mod go_transport_per_request;
pub mod time_wait_churn;

pub use evidence::{Wants, evidence, wants};

use std::net::SocketAddr;

use hashbrown::HashMap;

use crate::{
    host::launcher::Launcher,
    model::{Diagnosis, ProcessReport},
    symbols::{callsite::Origins, gohttp::Probe},
};

/// Pattern ids, a public contract (docs/json-output.md).
pub mod id {
    pub const GO_TRANSPORT_PER_REQUEST: &str = "go-transport-per-request";
    pub const GO_RESPONSE_BODY_NOT_CLOSED: &str = "go-response-body-not-closed";
    pub const CONNECTS_TO_ITSELF: &str = "connects-to-itself";
    pub const CLOSE_WAIT_NOT_CLOSED: &str = "close-wait-not-closed";
    pub const TIME_WAIT_CHURN: &str = "time-wait-churn";
    pub const ACCEPT_EMFILE_SPIN: &str = "accept-emfile-spin";
    pub const FD_LIMIT_TOO_LOW: &str = "fd-limit-too-low";

    /// Most important first: a cause before the symptoms it produces.
    pub const ALL: [&str; 7] = [
        CONNECTS_TO_ITSELF,
        GO_TRANSPORT_PER_REQUEST,
        GO_RESPONSE_BODY_NOT_CLOSED,
        CLOSE_WAIT_NOT_CLOSED,
        TIME_WAIT_CHURN,
        ACCEPT_EMFILE_SPIN,
        FD_LIMIT_TOO_LOW,
    ];
}

/// What one suspect's sockets say beyond the report's fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SuspectFacts {
    /// Sockets per owning object (a Go `*http.Transport`), where a uprobe told.
    pub owners: HashMap<u64, u64>,
    /// Sockets whose owner is unknown.
    pub unowned: u64,
    /// ESTABLISHED sockets with bytes waiting in the receive queue, and those bytes.
    pub unread_sockets: u64,
    pub unread_bytes: u64,
    /// Go connections a request went out on that never went back to their Transport's idle
    /// pool since, and those back in it (the origin probes tell).
    pub checked_out: u64,
    pub idle_in_pool: u64,
}

impl SuspectFacts {
    /// Adds the facts of more sockets of the same suspect.
    pub fn merge(&mut self, o: SuspectFacts) {
        for (k, v) in o.owners {
            *self.owners.entry(k).or_insert(0) += v;
        }
        self.unowned += o.unowned;
        self.unread_sockets += o.unread_sockets;
        self.unread_bytes += o.unread_bytes;
        self.checked_out += o.checked_out;
        self.idle_in_pool += o.idle_in_pool;
    }
}

/// Connects of the process to one destination while traced.
#[derive(Debug, Clone, PartialEq)]
pub struct Dest {
    pub remote: SocketAddr,
    pub connects: u64,
    /// Of the process's sockets, those open now towards it.
    pub live: u64,
}

/// Everything beyond the report that a pattern may look at.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub min_age_s: f64,
    /// Parallel to the report's suspects.
    pub suspects: Vec<SuspectFacts>,
    /// A Go HTTP client: whether its Transports were counted.
    pub go: Option<Probe>,
    /// Whether its sockets are joined to the code that asked for them (Go, Node), or why not.
    pub origins: Option<Origins>,
    /// The process's listening sockets.
    pub listeners: Vec<SocketAddr>,
    pub dests: Vec<Dest>,
    /// Destinations (of `dests`) that are one of the process's own listeners.
    pub self_dests: Vec<(Dest, SocketAddr)>,
    /// Proxy variables of its environment (name, value), read only for self-connects.
    pub proxy_env: Vec<(String, String)>,
    /// TIME_WAIT sockets per destination in its network namespace.
    pub time_wait: HashMap<SocketAddr, u64>,
    pub port_range: Option<(u32, u32)>,
    /// How it was started, read only when its fd limit matters.
    pub launcher: Option<Launcher>,
}

/// The process's diagnoses, most important first.
pub fn diagnose(r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    out.extend(connects_to_itself::check(r, ev));
    out.extend(go_transport_per_request::check(r, ev));
    out.extend(go_response_body_not_closed::check(r, ev));
    out.extend(close_wait_not_closed::check(r, ev));
    out.extend(time_wait_churn::check(r, ev));
    out.extend(accept_emfile_spin::check(r, ev));
    out.extend(fd_limit_too_low::check(r, ev));
    let rank = |d: &Diagnosis| id::ALL.iter().position(|p| *p == d.pattern);
    // Stable: within a pattern, the order each module chose (largest first).
    out.sort_by_key(rank);
    out
}

/// "3 sockets", "1 socket".
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Seconds as a person says them ("45s", "12m", "3.5h"), as the text report writes them.
pub(crate) use crate::model::names::duration_str as dur;

#[cfg(test)]
pub(crate) mod fixture {
    //! Reports and suspects for the patterns' unit tests.
    use std::collections::BTreeMap;

    use crate::model::{Failure, FdLimitJson, ProcessReport, Remote, Suspect};

    pub fn process() -> ProcessReport {
        ProcessReport {
            pid: 42,
            ns_pid: None,
            comm: "app".into(),
            cgroup: None,
            container: None,
            k8s: None,
            exited: false,
            fd_limit: Some(FdLimitJson {
                soft: 65536,
                hard: 65536,
            }),
            open_fds: Some(10),
            live_sockets: 0,
            opened: 0,
            closed: 0,
            preexisting: 0,
            unseen_opened: 0,
            unseen_closed: 0,
            direct_sockets: 0,
            growth_per_s: 0.0,
            seconds_to_fd_limit: None,
            fd_usage_ratio: None,
            limit_advice: None,
            diagnoses: vec![],
            warnings: vec![],
            tcp_states: BTreeMap::new(),
            listening: vec![],
            suspects: vec![],
            failures: vec![],
            stack_fallbacks: vec![],
        }
    }

    pub fn suspect(count: u64, state: &str, call_site: &str) -> Suspect {
        Suspect {
            count,
            oldest_age_s: 30.0,
            before_tracing: 0,
            origin: "socket".into(),
            kinds: BTreeMap::from([("tcp".to_string(), count)]),
            remotes: vec![Remote {
                endpoint: "10.0.0.7:8080".into(),
                count,
            }],
            locals: vec![],
            states: BTreeMap::from([(state.to_string(), count)]),
            max_idle_s: Some(30.0),
            state_age_s: BTreeMap::new(),
            state_age_at_least: vec![],
            senders: vec![],
            call_site: Some(call_site.into()),
            call_site_note: None,
            stack: vec![],
            stack_count: count,
            other_stacks: vec![],
            origin_call: None,
        }
    }

    pub fn failure(syscall: &str, errno: &str, count: u64, span_s: f64) -> Failure {
        Failure {
            syscall: syscall.into(),
            errno: errno.into(),
            count,
            first_s: 1.0,
            last_s: 1.0 + span_s,
            tid: 42,
            open_fds_at_failure: None,
            remote: None,
            spinning: false,
            listen_backlog: None,
            port_range: None,
            ports_in_use_to_remote: None,
            host_files: None,
            note: None,
            call_site: Some("serve (server.c:40)".into()),
            call_site_note: None,
            stack: vec![],
        }
    }
}
