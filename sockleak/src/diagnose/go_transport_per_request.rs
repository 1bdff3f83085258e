//! `go-transport-per-request`: idle keep-alive connections made by net/http's dial, spread over
//! many `*http.Transport` objects: each request built its own Transport (seed incidents 1, 3).

use super::{
    Evidence,
    go_dials::{Cause, verdicts},
    id,
};
use crate::model::{Diagnosis, ProcessReport};

pub fn check(r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    verdicts(r, ev)
        .into_iter()
        .filter(|v| v.cause == Cause::TransportPerRequest)
        .map(|v| Diagnosis {
            pattern: id::GO_TRANSPORT_PER_REQUEST,
            summary: format!(
                "A new http.Transport is built per request: each keeps its own idle keep-alive connection, and {} are left open",
                v.suspect.count
            ),
            evidence: v.evidence,
            fix: "Share one http.Client/Transport (a package-level variable) instead of building one per request; set MaxIdleConnsPerHost and IdleConnTimeout on it, or call CloseIdleConnections() on a Transport you are done with".into(),
            call_site: v.suspect.call_site.clone(),
            origin_call: v.suspect.origin_call.clone(),
            confidence: v.confidence,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diagnose::{SuspectFacts, fixture},
        model::Confidence,
        symbols::gohttp::{DIAL_CONN, Probe},
    };

    fn leaky(owners: impl IntoIterator<Item = (u64, u64)>) -> (ProcessReport, Evidence) {
        let mut r = fixture::process();
        r.suspects.push(fixture::suspect(
            40,
            "ESTABLISHED",
            &format!("{DIAL_CONN} (transport.go:1608)"),
        ));
        let ev = Evidence {
            go: Some(Probe::Attached),
            suspects: vec![SuspectFacts {
                owners: owners.into_iter().collect(),
                ..SuspectFacts::default()
            }],
            ..Evidence::default()
        };
        (r, ev)
    }

    #[test]
    fn forty_transports_one_connection_each() {
        let (r, ev) = leaky((1..=40).map(|t| (t, 1)));
        let d = check(&r, &ev);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert!(
            d[0].evidence
                .iter()
                .any(|e| e.contains("40 distinct *http.Transport")),
            "{d:#?}"
        );
        assert!(d[0].fix.contains("MaxIdleConnsPerHost"));
        assert!(d[0].fix.contains("CloseIdleConnections"));
        assert_eq!(
            d[0].call_site.as_deref(),
            Some("net/http.(*Transport).dialConn (transport.go:1608)")
        );
    }

    #[test]
    fn one_busy_transport_is_not_this_pattern() {
        let (r, ev) = leaky([(7, 40)]);
        assert!(check(&r, &ev).is_empty());
    }

    #[test]
    fn without_the_uprobe_it_is_likely_and_says_why() {
        let (r, mut ev) = leaky([]);
        ev.go = Some(Probe::Unavailable(
            "uprobes are turned off (--no-uprobes)".into(),
        ));
        let d = check(&r, &ev);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].confidence, Confidence::Likely);
        assert!(
            d[0].evidence
                .iter()
                .any(|e| e.contains("could not count Transport objects: uprobes are turned off"))
        );
    }

    #[test]
    fn a_pool_of_two_is_not_a_pile_up() {
        let (mut r, ev) = leaky((1..=2).map(|t| (t, 1)));
        r.suspects[0] = fixture::suspect(2, "ESTABLISHED", DIAL_CONN);
        assert!(check(&r, &ev).is_empty());
    }

    #[test]
    fn other_call_sites_are_not_go_http() {
        let (mut r, ev) = leaky((1..=40).map(|t| (t, 1)));
        r.suspects[0].call_site = Some("database/sql.(*DB).conn".into());
        assert!(check(&r, &ev).is_empty());
    }
}
