//! `accept-emfile-spin`: accept failing with EMFILE/ENFILE over and over while connections wait
//! in the listen queue (seed incident 4): the loop burns a CPU and clients time out.

use super::{Evidence, id};
use crate::model::{Confidence, Diagnosis, ProcessReport};

pub fn check(r: &ProcessReport, _ev: &Evidence) -> Vec<Diagnosis> {
    r.failures
        .iter()
        .filter(|f| f.spinning && f.syscall.starts_with("accept"))
        .map(|f| {
            let span = (f.last_s - f.first_s).max(1e-3);
            let mut evidence = vec![format!(
                "{} failed with {} {} times in {:.1}s ({:.0}/s)",
                f.syscall,
                f.errno,
                f.count,
                span,
                f.count as f64 / span
            )];
            let queued = f.listen_backlog.as_ref().filter(|b| b.queued > 0);
            if let Some(b) = queued {
                evidence.push(format!(
                    "{} connections wait in the listen queue (backlog {})",
                    b.queued, b.max
                ));
            } else if f.listen_backlog.is_none() {
                evidence.push("the listen queue could not be read (the listener is gone)".into());
            }
            if let (Some(open), Some(l)) = (f.open_fds_at_failure.or(r.open_fds), &r.fd_limit) {
                evidence.push(format!("{open} fds open, soft limit {}", l.soft));
            }
            Diagnosis {
                pattern: id::ACCEPT_EMFILE_SPIN,
                summary: format!(
                    "The accept loop spins on {}: it retries at once while every fd is in use, so queued clients are never served",
                    f.errno
                ),
                evidence,
                fix: "Back off when accept fails with EMFILE/ENFILE (sleep, or stop polling the listener until an fd is closed) instead of retrying at once; keep one spare fd to accept and close excess connections so clients get a fast refusal; then fix what holds the fds".into(),
                call_site: f.call_site.clone(),
                origin_call: None,
                confidence: if queued.is_some() {
                    Confidence::Certain
                } else {
                    Confidence::Likely
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose::fixture, model::Backlog};

    #[test]
    fn a_spinning_accept_with_a_queue() {
        let mut r = fixture::process();
        let mut f = fixture::failure("accept4", "EMFILE", 5000, 2.0);
        f.spinning = true;
        f.listen_backlog = Some(Backlog {
            queued: 17,
            max: 128,
        });
        f.open_fds_at_failure = Some(1024);
        r.failures.push(f);
        let d = check(&r, &Evidence::default());
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].evidence[0],
            "accept4 failed with EMFILE 5000 times in 2.0s (2500/s)"
        );
        assert_eq!(
            d[0].evidence[1],
            "17 connections wait in the listen queue (backlog 128)"
        );
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert!(d[0].fix.contains("Back off"));
    }

    #[test]
    fn slow_or_other_failures_are_not_a_spin() {
        let mut r = fixture::process();
        r.failures
            .push(fixture::failure("accept4", "EMFILE", 3, 10.0));
        let mut s = fixture::failure("socket", "EMFILE", 5000, 1.0);
        s.spinning = true;
        r.failures.push(s);
        assert!(check(&r, &Evidence::default()).is_empty());
    }
}
