//! Reads the evidence the patterns need, at the edge: the process's connects (the kernel's
//! DESTS map), its listeners and the TIME_WAIT sockets of its network namespace, and, only
//! when a pattern can use them, its proxy variables and how it was started.

use std::net::{IpAddr, SocketAddr};

use hashbrown::HashMap;
use sockleak_common::socket::{DestKey, Endpoint};

use super::{Dest, Evidence, SuspectFacts, connects_to_itself::PROXY_VARS, fd_limit_too_low};
use crate::{
    launcher, procfs, redact,
    report::{model::ProcessReport, names},
    sockdiag::NetView,
    tracker::Process,
};

/// A DESTS key as an address.
pub fn dest_addr(k: &DestKey) -> Option<SocketAddr> {
    let mut ep = Endpoint::UNKNOWN;
    ep.family = k.family;
    ep.port = k.port;
    ep.addr[..16].copy_from_slice(&k.addr);
    names::socket_addr(&ep)
}

/// What `build` learned while walking the process's sockets.
pub struct Walked {
    pub suspects: Vec<SuspectFacts>,
    pub listeners: Vec<SocketAddr>,
}

pub fn evidence(
    p: &Process,
    r: &ProcessReport,
    walked: Walked,
    view: Option<&NetView>,
    connects: &[(SocketAddr, u64)],
    min_age_s: f64,
) -> Evidence {
    let alive = p.exited_ns.is_none();
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
            let l = walked
                .listeners
                .iter()
                .find(|l| listens_for(l, &d.remote, &walked.listeners, view))?;
            Some((d.clone(), *l))
        })
        .collect();
    let proxy_env = if alive && !self_dests.is_empty() {
        // Masked here, at the edge: the raw values go no further.
        procfs::environ_vars(p.tgid, PROXY_VARS)
            .into_iter()
            .map(|(n, v)| {
                let shown = redact::env_value(&n, &v);
                (n, shown)
            })
            .collect()
    } else {
        Vec::new()
    };
    let launcher = (alive && fd_limit_too_low::limit_matters(r))
        .then(|| launcher::of(p.tgid, p.meta.cgroup.as_deref()));
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
        suspects: walked.suspects,
        go: p.meta.go_http.clone(),
        listeners: walked.listeners,
        dests,
        self_dests,
        proxy_env,
        time_wait,
        port_range: view.and_then(|v| v.port_range),
        launcher,
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

    #[test]
    fn dest_keys_are_addresses() {
        let mut k = DestKey {
            tgid: 1,
            family: 2,
            port: 80,
            addr: [0; 16],
        };
        k.addr[..4].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(dest_addr(&k), Some("10.0.0.7:80".parse().unwrap()));
        k.family = 1;
        assert_eq!(dest_addr(&k), None);
    }
}
