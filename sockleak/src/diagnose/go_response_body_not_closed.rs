//! `go-response-body-not-closed`: connections made by net/http's dial that one (or a few)
//! Transports hold far beyond their idle pool: the responses were never closed, so the
//! connections never went back to the pool and every request dialed anew.

use super::{
    Evidence,
    go_dials::{Cause, verdicts},
    id,
};
use crate::model::{Diagnosis, ProcessReport};

pub fn check(r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    verdicts(r, ev)
        .into_iter()
        .filter(|v| v.cause == Cause::BodyNotClosed)
        .map(|v| Diagnosis {
            pattern: id::GO_RESPONSE_BODY_NOT_CLOSED,
            summary: format!(
                "Response bodies are not closed: {} connections stay checked out of their Transport, so each request dials a new one",
                v.suspect.count
            ),
            evidence: v.evidence,
            fix: "Close every response body (`defer resp.Body.Close()` right after the error check) and read it to EOF (`io.Copy(io.Discard, resp.Body)`) so the connection returns to the pool".into(),
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

    fn shared(owners: Vec<(u64, u64)>, unread: u64) -> (ProcessReport, Evidence) {
        let mut r = fixture::process();
        r.suspects
            .push(fixture::suspect(30, "ESTABLISHED", DIAL_CONN));
        let ev = Evidence {
            go: Some(Probe::Attached),
            suspects: vec![SuspectFacts {
                owners: owners.into_iter().collect(),
                unread_sockets: unread,
                unread_bytes: unread * 65536,
                ..SuspectFacts::default()
            }],
            ..Evidence::default()
        };
        (r, ev)
    }

    #[test]
    fn one_transport_with_thirty_connections() {
        let (r, ev) = shared(vec![(9, 30)], 30);
        let d = check(&r, &ev);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert!(
            d[0].evidence
                .iter()
                .any(|e| e.contains("they belong to 1 *http.Transport (the busiest owns 30)")),
            "{d:#?}"
        );
        assert!(
            d[0].evidence
                .iter()
                .any(|e| e.contains("30 of them have response data nobody read"))
        );
        assert!(d[0].fix.contains("resp.Body.Close()"));
        assert!(
            crate::diagnose::go_transport_per_request::check(&r, &ev).is_empty(),
            "not pattern 1"
        );
    }

    #[test]
    fn unread_data_tells_without_the_uprobe() {
        let (r, mut ev) = shared(vec![], 25);
        ev.go = Some(Probe::Unavailable(
            "uprobes are turned off (--no-uprobes)".into(),
        ));
        let d = check(&r, &ev);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].confidence, Confidence::Likely);
    }

    #[test]
    fn many_transports_are_not_this_pattern() {
        let (r, ev) = shared((1..=30).map(|t| (t, 1)).collect(), 0);
        assert!(check(&r, &ev).is_empty());
    }
}
