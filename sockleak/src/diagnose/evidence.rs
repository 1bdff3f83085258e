//! The evidence the patterns read beyond the report: the process's connects (the kernel's
//! DESTS map, in the facts), its listeners and the TIME_WAIT sockets of its network namespace.
//! Pure: what only the edge can read (the environment, how the process was started) is added
//! by the session, and only when [`wants`] says a pattern can use it.

use std::net::{IpAddr, SocketAddr};

use hashbrown::HashMap;

use super::{Dest, Evidence, SuspectFacts, fd_limit_too_low};
use crate::{
    host::sockdiag::NetView,
    model::{ProcessReport, names},
    tracker::Process,
};

pub fn evidence(
    p: &Process,
    suspects: Vec<SuspectFacts>,
    listeners: Vec<SocketAddr>,
    view: Option<&NetView>,
    connects: &[(SocketAddr, u64)],
    min_age_s: f64,
) -> Evidence {
    let mut live_to: HashMap<SocketAddr, u64> = HashMap::new();
    for s in p.sockets.values() {
        if let Some(a) = names::socket_addr(&s.record.remote) {
            *live_to.entry(a).or_insert(0) += 1;
        }
    }
    let dests: Vec<Dest> = connects
        .iter()
        .map(|(remote, n)| Dest {
            remote: *remote,
            connects: *n,
            live: live_to.get(remote).copied().unwrap_or(0),
        })
        .collect();
    let self_dests: Vec<(Dest, SocketAddr)> = dests
        .iter()
        .filter_map(|d| {
            let l = listeners
                .iter()
                .find(|l| listens_for(l, &d.remote, &listeners, view))?;
            Some((d.clone(), *l))
        })
        .collect();
    let time_wait = view
        .map(|v| {
            dests
                .iter()
                .filter_map(|d| Some((d.remote, *v.table.time_wait.get(&d.remote)?)))
                .collect()
        })
        .unwrap_or_default();
    Evidence {
        min_age_s,
        suspects,
        go: p.meta.go_http.clone(),
        origins: p.meta.origins.clone(),
        listeners,
        dests,
        self_dests,
        proxy_env: Vec::new(),
        time_wait,
        port_range: view.and_then(|v| v.port_range),
        launcher: None,
    }
}

/// What the edge may read for the patterns (of a live process only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// Its proxy variables: it connects to one of its own listeners.
    pub environment: bool,
    /// How it was started: its fd limit is part of the problem.
    pub launcher: bool,
}

pub fn wants(r: &ProcessReport, ev: &Evidence) -> Wants {
    let alive = !r.exited;
    Wants {
        environment: alive && !ev.self_dests.is_empty(),
        launcher: alive && fd_limit_too_low::limit_matters(r),
    }
}

/// Whether a listener accepts connections made to `to` in its network namespace.
fn listens_for(
    l: &SocketAddr,
    to: &SocketAddr,
    listeners: &[SocketAddr],
    view: Option<&NetView>,
) -> bool {
    if l.port() != to.port() {
        return false;
    }
    if l.ip() == to.ip() {
        return true;
    }
    // A wildcard listener (0.0.0.0, or [::] which takes IPv4 too) answers every local address.
    l.ip().is_unspecified() && (to.ip().is_loopback() || is_local(to.ip(), listeners, view))
}

/// An address this namespace owns: some socket in it is bound there.
fn is_local(ip: IpAddr, listeners: &[SocketAddr], view: Option<&NetView>) -> bool {
    listeners.iter().any(|l| l.ip() == ip)
        || view.is_some_and(|v| {
            v.table
                .by_inode
                .values()
                .any(|s| s.local.is_some_and(|a| a.ip() == ip))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_exact_listeners() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6any: SocketAddr = "[::]:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let other: SocketAddr = "10.1.1.1:8080".parse().unwrap();
        assert!(listens_for(&any, &lo, &[any], None));
        assert!(listens_for(&v6any, &lo, &[v6any], None));
        assert!(listens_for(&lo, &lo, &[lo], None));
        assert!(!listens_for(&lo, &other, &[lo], None));
        assert!(
            !listens_for(&any, &other, &[any], None),
            "not known to be local"
        );
        assert!(!listens_for(
            &any,
            &"127.0.0.1:9090".parse().unwrap(),
            &[any],
            None
        ));
    }
}
