//! Diagnoses on real workloads that no other suite sets up: a Go forwarding proxy whose
//! HTTP_PROXY points at its own port (seed incident 2), and the same proxy forwarding to a
//! real backend; a process whose fd limit does not matter gets no limit advice. (The other
//! patterns are asserted where their workloads live: go_http, tcp_state, failures, containers.)

mod common;

use std::{net::TcpListener, process::Command};

use common::{
    NetNs, Trace, Workload, build_c, build_go, diagnosis, evidence_has, failure, no_diagnosis,
    process, set_nofile, sleep_ms,
};

/// A free loopback port in the current namespace (the proxy must know its port before it
/// starts: HTTP_PROXY names it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one request for `url` through the proxy at `port`, from inside `ns`; the status.
fn request_via_proxy(ns: &NetNs, port: u16, url: &str) -> String {
    let py = format!(
        "import urllib.request as u, urllib.error as e\n\
         o = u.build_opener(u.ProxyHandler({{'http': 'http://127.0.0.1:{port}'}}))\n\
         try:\n    print(o.open('{url}', timeout=20).status)\n\
         except e.HTTPError as x:\n    print(x.code)\n"
    );
    ns.exec(&["python3", "-c", &py]).trim().to_string()
}

fn proxy(ns: &NetNs, port: u16, http_proxy: Option<&str>) -> Workload {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(build_go("goproxy"))
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    if let Some(p) = http_proxy {
        cmd.env("HTTP_PROXY", p);
    }
    let mut w = Workload::spawn(&mut cmd);
    w.expect("listening");
    w
}

fn dials(w: &mut Workload) -> u64 {
    w.cmd_no_reply("count").unwrap();
    w.expect("dials").parse().unwrap()
}

/// A namespace whose 50 local ports run out: the loop ends with EADDRNOTAVAIL, as in the
/// incident, instead of running until the fd limit.
fn small_ns(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40049"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0"]);
    ns
}

#[test]
fn a_proxy_whose_http_proxy_is_itself_connects_to_itself() {
    if !common::require_bpf() {
        return;
    }
    let ns = small_ns("selfproxy");
    let port = free_port();
    let setting = format!("http://127.0.0.1:{port}");
    let mut w = proxy(&ns, port, Some(&setting));
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    // One request for a remote host: forwarded to "the proxy", itself, again and again.
    assert_eq!(
        request_via_proxy(&ns, port, "http://backend.invalid/"),
        "502"
    );
    let n = dials(&mut w);
    assert!(n >= 10, "the request looped ({n} dials)");
    sleep_ms(1200);
    let report = t.stop();
    let p = process(&report, w.pid);
    let d = diagnosis(p, "connects-to-itself");
    assert_eq!(d["confidence"], "certain");
    let me = format!("127.0.0.1:{port}");
    assert!(
        evidence_has(
            d,
            &format!("{n} connects to {me} while traced, which this process listens on ({me})")
        ),
        "{d:#}"
    );
    assert!(
        evidence_has(d, &format!("HTTP_PROXY={setting} in its environment")),
        "{d:#}"
    );
    let fix = d["fix"].as_str().unwrap();
    assert!(
        fix.contains("NO_PROXY") && fix.contains("Proxy: nil"),
        "{fix}"
    );
    // It stopped when the ports towards itself ran out, and says so.
    let f = failure(p, "connect", "EADDRNOTAVAIL");
    assert_eq!(f["remote"], me);
    // The cause comes first.
    assert_eq!(p["diagnoses"][0]["pattern"], "connects-to-itself");
}

#[test]
fn a_proxy_forwarding_to_a_backend_does_not() {
    if !common::require_bpf() {
        return;
    }
    let ns = small_ns("fwdproxy");
    let prefix = ns.prefix();
    let mut backend = Workload::spawn(
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(build_go("httpserver")),
    );
    let backend_addr = backend.expect("listening");
    let port = free_port();
    let mut w = proxy(&ns, port, None);
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    for _ in 0..20 {
        assert_eq!(
            request_via_proxy(&ns, port, &format!("http://{backend_addr}/")),
            "200"
        );
    }
    let n = dials(&mut w);
    assert!(n >= 1);
    let report = t.stop();
    let p = process(&report, w.pid);
    no_diagnosis(p, &["connects-to-itself"]);
}

#[test]
fn no_limit_advice_where_the_limit_does_not_matter() {
    if !common::require_bpf() {
        return;
    }
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    set_nofile(w.pid, 4096, 4096);
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    w.cmd("churn 20");
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], 0);
    assert_eq!(p["fd_limit"]["soft"], 4096);
    no_diagnosis(p, &["fd-limit-too-low"]);
    assert_eq!(p["limit_advice"], serde_json::Value::Null);
    assert_eq!(p["warnings"], serde_json::json!([]));
}
