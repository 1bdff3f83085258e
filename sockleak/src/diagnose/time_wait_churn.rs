//! `time-wait-churn`: short-lived connections to one destination leave so many sockets in
//! TIME_WAIT that the local ports towards it run out (seed incident 2): connect() then fails
//! with EADDRNOTAVAIL ("cannot assign requested address").

use super::{Evidence, id};
use crate::model::{Confidence, Diagnosis, ProcessReport};

/// TIME_WAIT towards one destination above this share of the ephemeral range is churn.
const SHARE: f64 = 0.2;
/// Fewer connects than this while traced do not make a churner.
const MIN_CONNECTS: u64 = 20;

pub fn check(r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    let range = ev
        .port_range
        .map(|(lo, hi)| (lo, hi, u64::from(hi - lo + 1)));
    let mut out: Vec<(u64, Diagnosis)> = ev
        .dests
        .iter()
        .filter_map(|d| {
            let tw = ev.time_wait.get(&d.remote).copied().unwrap_or(0);
            let remote = d.remote.to_string();
            let failed: u64 = r
                .failures
                .iter()
                .filter(|f| f.errno == "EADDRNOTAVAIL" && f.remote.as_deref() == Some(&remote))
                .map(|f| f.count)
                .sum();
            let share = range.map(|(_, _, n)| tw as f64 / n as f64);
            let churn = d.connects >= MIN_CONNECTS && share.is_some_and(|s| s >= SHARE);
            if !churn && failed == 0 {
                return None;
            }
            let mut evidence = Vec::new();
            match (range, share) {
                (Some((lo, hi, n)), Some(s)) => evidence.push(format!(
                    "{tw} sockets to {remote} in TIME_WAIT: {:.0}% of the {n} local ports ({lo}-{hi})",
                    s * 100.0
                )),
                _ => evidence.push(format!("{tw} sockets to {remote} in TIME_WAIT")),
            }
            evidence.push(format!(
                "this process made {} connects to it while traced; {} still open",
                d.connects, d.live
            ));
            if failed > 0 {
                evidence.push(format!(
                    "connect failed with EADDRNOTAVAIL {failed} times: no free local port towards it"
                ));
            }
            // Every TIME_WAIT socket could be this process's own, or it was refused a port.
            let confidence = if failed > 0 || d.connects >= tw {
                Confidence::Certain
            } else {
                evidence.push(
                    "other processes may connect to it too: it made fewer connects than there are TIME_WAIT sockets"
                        .into(),
                );
                Confidence::Likely
            };
            Some((
                tw.max(failed),
                Diagnosis {
                    pattern: id::TIME_WAIT_CHURN,
                    summary: format!(
                        "A new connection per request to {remote}: closed connections wait in TIME_WAIT for 60s and tie up the local ports towards it"
                    ),
                    evidence,
                    fix: "Reuse connections (HTTP keep-alive, a connection pool, one shared client) instead of one per request; net.ipv4.tcp_tw_reuse=1 lets new outgoing connections take TIME_WAIT ports (it does nothing for incoming ones), tcp_tw_recycle no longer exists (removed in Linux 4.12), and a wider net.ipv4.ip_local_port_range only buys time".into(),
                    call_site: None,
                    origin_call: None,
                    confidence,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    out.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Dest, fixture};

    fn ev(tw: u64, connects: u64) -> Evidence {
        let remote = "10.0.0.7:80".parse().unwrap();
        Evidence {
            dests: vec![Dest {
                remote,
                connects,
                live: 0,
            }],
            time_wait: [(remote, tw)].into_iter().collect(),
            port_range: Some((40000, 40199)),
            ..Evidence::default()
        }
    }

    #[test]
    fn most_of_the_range_in_time_wait() {
        let d = check(&fixture::process(), &ev(150, 150));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].evidence[0],
            "150 sockets to 10.0.0.7:80 in TIME_WAIT: 75% of the 200 local ports (40000-40199)"
        );
        assert_eq!(
            d[0].evidence[1],
            "this process made 150 connects to it while traced; 0 still open"
        );
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert!(d[0].fix.contains("tcp_tw_reuse"));
        assert!(d[0].fix.contains("tcp_tw_recycle no longer exists"));
    }

    #[test]
    fn eaddrnotavail_alone_is_enough() {
        let mut r = fixture::process();
        let mut f = fixture::failure("connect", "EADDRNOTAVAIL", 12, 1.0);
        f.remote = Some("10.0.0.7:80".into());
        r.failures.push(f);
        let d = check(&r, &ev(10, 5));
        assert_eq!(d.len(), 1);
        assert!(d[0].evidence[2].contains("EADDRNOTAVAIL 12 times"));
    }

    #[test]
    fn reused_connections_are_not_churn() {
        assert!(check(&fixture::process(), &ev(0, 1)).is_empty());
        // Another process's TIME_WAIT: this one connected twice.
        assert!(check(&fixture::process(), &ev(150, 2)).is_empty());
    }

    #[test]
    fn others_may_share_the_blame() {
        let d = check(&fixture::process(), &ev(150, 60));
        assert_eq!(d[0].confidence, Confidence::Likely);
    }
}
