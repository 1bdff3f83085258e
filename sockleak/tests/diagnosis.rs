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
    let env: Vec<(&str, &str)> = http_proxy.map(|p| ("HTTP_PROXY", p)).into_iter().collect();
    proxy_with_env(ns, port, &env)
}

fn proxy_with_env(ns: &NetNs, port: u16, env: &[(&str, &str)]) -> Workload {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(build_go("goproxy"))
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for (k, v) in env {
        cmd.env(k, v);
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

/// The same loop with credentials in every proxy variable: no password (nor user name) appears
/// in anything sockleak writes, in any output or at `--log debug`, while the diagnosis still
/// names the variable and the port; `--no-report-endpoint` leaves only /metrics.
#[test]
fn proxy_credentials_never_leave_sockleak() {
    if !common::require_bpf() {
        return;
    }
    let ns = small_ns("secretproxy");
    let port = free_port();
    let user = "opsuser7";
    // An escaped @, an unescaped @, a socks URL and an exemption list with a URL in it.
    let secrets = [
        "p%40ss-one",
        "p@ss-one",
        "pa@ss-two",
        "s3cr3t-three",
        "np-four",
    ];
    let http_proxy = format!("http://{user}:p%40ss-one@127.0.0.1:{port}");
    let https_proxy = format!("http://{user}:pa@ss-two@127.0.0.1:{port}");
    let all_proxy = format!("socks5://{user}:s3cr3t-three@127.0.0.1:{port}");
    let no_proxy = format!("localhost,http://{user}:np-four@corp.invalid");
    let mut w = proxy_with_env(
        &ns,
        port,
        &[
            ("HTTP_PROXY", &http_proxy),
            ("https_proxy", &https_proxy),
            ("ALL_PROXY", &all_proxy),
            ("NO_PROXY", &no_proxy),
        ],
    );
    let pid = w.pid.to_string();
    let common = [
        "--pid",
        &pid,
        "--interval",
        "0.5",
        "--min-age",
        "1",
        "--log",
        "debug",
    ];
    let json = Trace::start(&common);
    let text = Trace::text(&common);
    let serve_args: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--listen", "127.0.0.1:0"])
        .collect();
    let serve = Trace::serve(&serve_args);
    let metrics_only_args: Vec<&str> = serve_args
        .iter()
        .copied()
        .chain(["--no-report-endpoint"])
        .collect();
    let metrics_only = Trace::serve(&metrics_only_args);
    let base = |t: &Trace| {
        let line = t.wait_log("serving /metrics");
        line[line.find("http://").unwrap()..].trim().to_string()
    };
    let (serve_base, metrics_only_base) = (base(&serve), base(&metrics_only));
    assert!(
        metrics_only
            .wait_log("serving /metrics")
            .contains("/metrics, /healthz"),
        "the log says /report is off"
    );

    assert_eq!(
        request_via_proxy(&ns, port, "http://backend.invalid/"),
        "502"
    );
    assert!(dials(&mut w) >= 10, "the request looped");
    sleep_ms(1200);

    let (status, _, report) = common::http_get(&format!("{serve_base}/report"), None);
    assert_eq!(status, 200);
    let (status, _, metrics) = common::http_get(&format!("{serve_base}/metrics"), None);
    assert_eq!(status, 200);
    let (status, _, _) = common::http_get(&format!("{metrics_only_base}/report"), None);
    assert_eq!(status, 404, "--no-report-endpoint");
    let (status, _, metrics_only_body) =
        common::http_get(&format!("{metrics_only_base}/metrics"), None);
    assert_eq!(status, 200);
    assert!(
        metrics_only_body.contains("sockleak_diagnosis{"),
        "{metrics_only_body}"
    );

    let (json_out, json_err) = json.stop_output();
    let (text_out, text_err) = text.stop_output();
    let (_, serve_err) = serve.stop_output();
    let (_, metrics_only_err) = metrics_only.stop_output();
    for (what, body) in [
        ("trace --format json stdout", &json_out),
        ("trace --format json stderr", &json_err),
        ("trace --format text stdout", &text_out),
        ("trace --format text stderr", &text_err),
        ("serve stderr", &serve_err),
        ("serve --no-report-endpoint stderr", &metrics_only_err),
        ("/report", &report),
        ("/metrics", &metrics),
        ("/metrics without /report", &metrics_only_body),
    ] {
        for secret in secrets.iter().chain([&user]) {
            assert!(!body.contains(secret), "{what} shows `{secret}`:\n{body}");
        }
    }
    assert!(
        json_err.contains("DEBUG") || json_err.contains("debug"),
        "ran at --log debug"
    );

    // The diagnosis still names the variable and the port, masked, in JSON and in text.
    let last = json_out.lines().last().unwrap();
    let final_report: serde_json::Value = serde_json::from_str(last).unwrap();
    let p = process(&final_report, w.pid);
    let d = diagnosis(p, "connects-to-itself");
    assert!(
        evidence_has(
            d,
            &format!("HTTP_PROXY=http://***@127.0.0.1:{port} in its environment")
        ),
        "{d:#}"
    );
    assert!(
        evidence_has(
            d,
            "NO_PROXY=localhost,http://***@corp.invalid: the hosts it exempts"
        ),
        "{d:#}"
    );
    assert!(
        d["summary"].as_str().unwrap().contains(&format!(
            "settings HTTP_PROXY, https_proxy, ALL_PROXY point at its own port {port}"
        )),
        "{d:#}"
    );
    assert!(
        text_out.contains(&format!(
            "HTTP_PROXY=http://***@127.0.0.1:{port} in its environment"
        )),
        "{text_out}"
    );
    assert!(report.contains(&format!("HTTP_PROXY=http://***@127.0.0.1:{port}")));
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
