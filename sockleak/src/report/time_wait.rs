//! TIME_WAIT that matters per network namespace: outgoing per destination (against the
//! ephemeral port range), incoming per client and listening port.

use std::net::SocketAddr;

use hashbrown::{HashMap, HashSet};

use super::facts::Facts;
use crate::{host::sockdiag::NetView, model::ProcessReport, model::TimeWait};

/// Which TIME_WAIT rows a report shows.
pub enum TimeWaitScope {
    /// `--all`: the whole view of each namespace.
    Host,
    /// Only what the traced processes take part in: (netns, destination) they connected to,
    /// (netns, port) they listen on.
    Traced {
        dests: HashSet<(u64, SocketAddr)>,
        ports: HashSet<(u64, u16)>,
    },
}

/// With `--all` the host's rows; else those of the traced processes' destinations and ports.
pub fn scope(all: bool, facts: &Facts, processes: &[ProcessReport]) -> TimeWaitScope {
    if all {
        return TimeWaitScope::Host;
    }
    let ns_of = |pid: u32| facts.netns.get(&pid).copied().or(facts.default_netns);
    let dests = facts
        .connects
        .iter()
        .filter_map(|(pid, d)| Some((ns_of(*pid)?, d)))
        .flat_map(|(ns, d)| d.iter().map(move |(a, _)| (ns, *a)))
        .collect();
    let ports = processes
        .iter()
        .filter_map(|p| Some((ns_of(p.pid)?, &p.listening)))
        .flat_map(|(ns, l)| {
            l.iter()
                .filter_map(move |a| Some((ns, a.parse::<SocketAddr>().ok()?.port())))
        })
        .collect();
    TimeWaitScope::Traced { dests, ports }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sockdiag::SocketTable;

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
