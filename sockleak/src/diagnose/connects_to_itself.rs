//! `connects-to-itself`: the process's outgoing connections go to one of its own listening
//! sockets. A forwarding proxy whose `HTTP_PROXY` points at itself sends every request back in
//! until fds or ports run out (seed incident 2).

use std::net::SocketAddr;

use super::{Evidence, id};
use crate::report::model::{Confidence, Diagnosis, ProcessReport};

/// Connects to itself below this many are a health check, not a loop.
const MIN_CONNECTS: u64 = 10;

/// Proxy variables an HTTP client reads (Go, curl, Python, Node agents).
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The port a proxy URL names ("http://127.0.0.1:8080/", "localhost:3128", "socks5://h:1080"),
/// with the scheme's default, and its host.
pub fn proxy_target(value: &str) -> Option<(String, u16)> {
    let v = value.trim();
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), v),
    };
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse().ok()?),
        _ => (
            hostport,
            match scheme.as_str() {
                "https" => 443,
                "socks5" | "socks5h" | "socks4" | "socks" => 1080,
                _ => 80,
            },
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Whether a proxy host names the address `to` (a loopback name or the same IP).
fn names(host: &str, to: &SocketAddr) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == to.ip() || (ip.is_loopback() && to.ip().is_loopback()),
        Err(_) => host.eq_ignore_ascii_case("localhost") && to.ip().is_loopback(),
    }
}

pub fn check(_r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    let mut loops: Vec<_> = ev
        .self_dests
        .iter()
        .filter(|(d, _)| d.connects >= MIN_CONNECTS)
        .collect();
    loops.sort_by_key(|(d, _)| std::cmp::Reverse(d.connects));
    loops
        .into_iter()
        .map(|(d, listener)| {
            let mut evidence = vec![format!(
                "{} connects to {} while traced, which this process listens on ({listener}); {} still open",
                d.connects, d.remote, d.live
            )];
            let proxy = ev.proxy_env.iter().find(|(_, v)| {
                proxy_target(v).is_some_and(|(h, p)| p == d.remote.port() && names(&h, &d.remote))
            });
            let (summary, fix) = match proxy {
                Some((var, value)) => {
                    evidence.push(format!(
                        "{var}={value} in its environment: its HTTP client sends outgoing requests to that proxy, which is itself"
                    ));
                    (
                        format!("Its proxy setting {var} points at its own port {}: every request it forwards comes back in, until fds or ports run out", d.remote.port()),
                        format!("Do not route this process's own requests through itself: unset {var} for it or list its upstream hosts in NO_PROXY; in Go, set Proxy: nil on the Transport it forwards with (http.DefaultTransport reads {var})"),
                    )
                }
                None => (
                    format!("It connects to its own listening port {}: requests loop back into it", d.remote.port()),
                    "Check the upstream/backend address it forwards to (it names this process) and refuse to forward to itself (e.g. detect its own Via/X-Forwarded-For hop)".into(),
                ),
            };
            Diagnosis {
                pattern: id::CONNECTS_TO_ITSELF,
                summary,
                evidence,
                fix,
                call_site: None,
                confidence: Confidence::Certain,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Dest, fixture};

    #[test]
    fn proxy_urls() {
        assert_eq!(
            proxy_target("http://127.0.0.1:8080/"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            proxy_target("localhost:3128"),
            Some(("localhost".into(), 3128))
        );
        assert_eq!(
            proxy_target("https://user:pw@proxy.corp"),
            Some(("proxy.corp".into(), 443))
        );
        assert_eq!(
            proxy_target("socks5://[::1]:1080"),
            Some(("::1".into(), 1080))
        );
        assert_eq!(proxy_target("http://[::1]"), Some(("::1".into(), 80)));
        assert_eq!(proxy_target(""), None);
    }

    fn ev(connects: u64, proxy: Option<&str>) -> Evidence {
        let remote: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        Evidence {
            self_dests: vec![(
                Dest {
                    remote,
                    connects,
                    live: 3,
                },
                "127.0.0.1:18080".parse().unwrap(),
            )],
            proxy_env: proxy
                .map(|v| ("HTTP_PROXY".to_string(), v.to_string()))
                .into_iter()
                .collect(),
            ..Evidence::default()
        }
    }

    #[test]
    fn a_proxy_pointing_at_itself() {
        let d = check(
            &fixture::process(),
            &ev(120, Some("http://localhost:18080")),
        );
        assert_eq!(d.len(), 1);
        assert!(d[0].evidence[0].starts_with("120 connects to 127.0.0.1:18080 while traced"));
        assert!(d[0].evidence[1].starts_with("HTTP_PROXY=http://localhost:18080"));
        assert!(d[0].fix.contains("NO_PROXY"));
        assert!(d[0].fix.contains("Proxy: nil"));
    }

    #[test]
    fn a_loop_without_a_proxy_and_a_proxy_elsewhere() {
        for proxy in [None, Some("http://127.0.0.1:3128")] {
            let d = check(&fixture::process(), &ev(50, proxy));
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].evidence.len(), 1, "{d:#?}");
            assert!(d[0].fix.contains("refuse to forward to itself"));
        }
    }

    #[test]
    fn a_health_check_is_not_a_loop() {
        assert!(check(&fixture::process(), &ev(3, Some("http://127.0.0.1:18080"))).is_empty());
    }
}
