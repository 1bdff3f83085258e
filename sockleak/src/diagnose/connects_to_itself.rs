//! `connects-to-itself`: the process's outgoing connections go to one of its own listening
//! sockets. A forwarding proxy whose `HTTP_PROXY` points at itself sends every request back in
//! until fds or ports run out (seed incident 2).

use std::net::SocketAddr;

use super::{Evidence, id};
use crate::{
    host::redact,
    model::{Confidence, Diagnosis, ProcessReport},
};

/// Connects to itself below this many are a health check, not a loop.
const MIN_CONNECTS: u64 = 10;

/// Proxy variables an HTTP client reads (Go, curl, Python, Node agents), and the exemptions
/// the fix points at. Their values reach the report masked (`redact`).
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn is_exemption(var: &str) -> bool {
    var.eq_ignore_ascii_case("no_proxy")
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
            // Every variable that points here, in PROXY_VARS order (the environment's own
            // order is arbitrary): which one a client reads depends on the client.
            let mut pointing: Vec<&(String, String)> = ev
                .proxy_env
                .iter()
                .filter(|(var, v)| {
                    !is_exemption(var)
                        && redact::host_port(v)
                            .is_some_and(|(h, p)| p == d.remote.port() && names(&h, &d.remote))
                })
                .collect();
            pointing.sort_by_key(|(var, _)| PROXY_VARS.iter().position(|p| p == var));
            let (summary, fix) = match pointing.as_slice() {
                [] => (
                    format!("It connects to its own listening port {}: requests loop back into it", d.remote.port()),
                    "Check the upstream/backend address it forwards to (it names this process) and refuse to forward to itself (e.g. detect its own Via/X-Forwarded-For hop)".into(),
                ),
                found => {
                    for (var, value) in found {
                        evidence.push(format!(
                            "{var}={value} in its environment: an HTTP client that reads {var} sends outgoing requests to that proxy, which is itself"
                        ));
                    }
                    if let Some((nv, nval)) = ev.proxy_env.iter().find(|(v, _)| is_exemption(v)) {
                        evidence.push(format!("{nv}={nval}: the hosts it exempts from the proxy"));
                    }
                    let vars = found.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ");
                    let (setting, them) = if found.len() == 1 {
                        ("setting", "it")
                    } else {
                        ("settings", "them")
                    };
                    (
                        format!("Its proxy {setting} {vars} point{} at its own port {}: every request it forwards comes back in, until fds or ports run out", if found.len() == 1 { "s" } else { "" }, d.remote.port()),
                        format!("Do not route this process's own requests through itself: unset {them} ({vars}) for it or list its upstream hosts in NO_PROXY; in Go, set Proxy: nil on the Transport it forwards with (http.DefaultTransport reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY, upper or lower case)"),
                    )
                }
            };
            Diagnosis {
                pattern: id::CONNECTS_TO_ITSELF,
                summary,
                evidence,
                fix,
                call_site: None,
                origin_call: None,
                confidence: Confidence::Certain,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Dest, fixture};

    fn ev(connects: u64, proxy: Option<&str>) -> Evidence {
        ev_with(
            connects,
            proxy.map(|v| ("HTTP_PROXY", v)).into_iter().collect(),
        )
    }

    fn ev_with(connects: u64, env: Vec<(&str, &str)>) -> Evidence {
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
            proxy_env: env
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
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

    #[test]
    fn a_masked_proxy_still_names_the_loop_and_exemptions_are_shown() {
        let d = check(
            &fixture::process(),
            &ev_with(
                40,
                vec![
                    ("NO_PROXY", "localhost,***@corp"),
                    ("https_proxy", "http://***@127.0.0.1:18080"),
                ],
            ),
        );
        assert_eq!(d.len(), 1);
        assert!(
            d[0].evidence[1].starts_with("https_proxy=http://***@127.0.0.1:18080 in its"),
            "{:?}",
            d[0].evidence
        );
        assert_eq!(
            d[0].evidence[2],
            "NO_PROXY=localhost,***@corp: the hosts it exempts from the proxy"
        );
        assert!(
            d[0].summary
                .contains("https_proxy points at its own port 18080")
        );
    }

    #[test]
    fn no_proxy_alone_is_not_a_proxy() {
        let d = check(
            &fixture::process(),
            &ev_with(40, vec![("NO_PROXY", "127.0.0.1:18080")]),
        );
        assert_eq!(d[0].evidence.len(), 1, "{d:#?}");
    }

    #[test]
    fn every_variable_pointing_here_is_named_in_a_fixed_order() {
        let d = check(
            &fixture::process(),
            &ev_with(
                40,
                vec![
                    ("ALL_PROXY", "socks5://***@127.0.0.1:18080"),
                    ("HTTPS_PROXY", "http://127.0.0.1:9"),
                    ("HTTP_PROXY", "http://***@localhost:18080"),
                ],
            ),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].evidence.len(), 3, "{:?}", d[0].evidence);
        assert!(d[0].evidence[1].starts_with("HTTP_PROXY="));
        assert!(d[0].evidence[2].starts_with("ALL_PROXY="));
        assert!(
            d[0].summary.starts_with(
                "Its proxy settings HTTP_PROXY, ALL_PROXY point at its own port 18080"
            ),
            "{}",
            d[0].summary
        );
        assert!(d[0].fix.contains("unset them (HTTP_PROXY, ALL_PROXY)"));
    }
}
