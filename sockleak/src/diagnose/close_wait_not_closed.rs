//! `close-wait-not-closed`: sockets in CLOSE_WAIT: the peer hung up, and this process read the
//! end of the stream (or never read again) without closing its side (seed incident 4).

use super::{Evidence, dur, id, plural};
use crate::model::{Confidence, Diagnosis, ProcessReport};

pub fn check(r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    r.suspects
        .iter()
        .filter_map(|s| {
            let n = s.states.get("CLOSE_WAIT").copied().filter(|n| *n > 0)?;
            let age = s.state_age_s.get("CLOSE_WAIT").copied();
            // A socket that just got the FIN may be about to be closed: not yet a leak.
            if age.is_some_and(|a| a < ev.min_age_s) {
                return None;
            }
            let at_least = s.state_age_at_least.iter().any(|st| st == "CLOSE_WAIT");
            let mut evidence = vec![match age {
                Some(a) => format!(
                    "{} in CLOSE_WAIT, the oldest for {}{}",
                    plural(n, "socket", "sockets"),
                    if at_least { "at least " } else { "" },
                    dur(a)
                ),
                None => format!("{} in CLOSE_WAIT", plural(n, "socket", "sockets")),
            }];
            let origin = match s.origin.as_str() {
                "accept" | "accept4" => "accepted connections: clients",
                "socket" => "outgoing connections: servers",
                _ => "peers",
            };
            let peers: Vec<String> = s
                .remotes
                .iter()
                .take(3)
                .map(|p| format!("{} x{}", p.endpoint, p.count))
                .collect();
            if !peers.is_empty() {
                evidence.push(format!(
                    "{origin} that closed their end: {}",
                    peers.join(", ")
                ));
            }
            Some(Diagnosis {
                pattern: id::CLOSE_WAIT_NOT_CLOSED,
                summary: format!(
                    "The peer closed {}, and this process never closed its side",
                    if n == 1 { "a connection" } else { "connections" }
                ),
                evidence,
                fix: "Close the socket when a read returns 0 (end of stream) or an error, on every path (including timeouts and error returns); in Go, Close() the net.Conn or resp.Body once io.EOF is seen".into(),
                call_site: s.call_site.clone(),
                origin_call: s.origin_call.clone(),
                // The kernel's TCP state says so; the age when it is unknown.
                confidence: if age.is_some() {
                    Confidence::Certain
                } else {
                    Confidence::Likely
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::fixture;

    fn with_close_wait(age: Option<f64>) -> ProcessReport {
        let mut r = fixture::process();
        let mut s = fixture::suspect(12, "CLOSE_WAIT", "handle (server.c:88)");
        s.origin = "accept4".into();
        if let Some(a) = age {
            s.state_age_s.insert("CLOSE_WAIT".into(), a);
        }
        r.suspects.push(s);
        r.suspects
            .push(fixture::suspect(5, "ESTABLISHED", "pool (db.c:3)"));
        r
    }

    #[test]
    fn names_count_age_and_call_site() {
        let ev = Evidence {
            min_age_s: 5.0,
            ..Evidence::default()
        };
        let d = check(&with_close_wait(Some(42.0)), &ev);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].evidence[0],
            "12 sockets in CLOSE_WAIT, the oldest for 42s"
        );
        assert!(d[0].evidence[1].starts_with("accepted connections: clients"));
        assert_eq!(d[0].call_site.as_deref(), Some("handle (server.c:88)"));
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert!(d[0].fix.contains("read returns 0"));
    }

    #[test]
    fn fresh_close_wait_is_not_yet_a_leak() {
        let ev = Evidence {
            min_age_s: 5.0,
            ..Evidence::default()
        };
        assert!(check(&with_close_wait(Some(1.0)), &ev).is_empty());
        let mut r = fixture::process();
        r.suspects
            .push(fixture::suspect(5, "ESTABLISHED", "pool (db.c:3)"));
        assert!(check(&r, &ev).is_empty());
    }
}
