//! `sockleak serve`: scraped with a real HTTP client, parsed as Prometheus text; the live
//! socket gauge equals /proc and the failure counter moves on EMFILE.

mod common;

use std::process::Command;

use common::{Trace, Workload, build_c, proc_socket_fds, set_nofile};

/// GETs as Prometheus does (asking for OpenMetrics).
fn get(url: &str) -> (u16, String, String) {
    common::http_get(
        url,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
}

/// The value of one sample, by metric name and label subset.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_match_proc_and_count_failures() {
    if !common::require_bpf() {
        return;
    }
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    set_nofile(w.pid, 24, 16384);
    let pid = w.pid.to_string();
    let t = Trace::serve(&["--pid", &pid, "--listen", "127.0.0.1:0", "--min-age", "0"]);
    let line = t.wait_log("serving /metrics");
    let base = line[line.find("http://").unwrap()..].trim().to_string();

    let (status, _, body) = get(&format!("{base}/healthz"));
    assert_eq!((status, body.trim()), (200, "ok"));

    w.cmd("leak 6");
    let (status, ctype, body) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let truth = proc_socket_fds(w.pid).len() as f64;
    assert_eq!(
        sample(&body, "sockleak_live_sockets", &[("pid", &pid)]),
        Some(truth),
        "{body}"
    );
    assert_eq!(
        sample(&body, "sockleak_fd_soft_limit", &[("pid", &pid)]),
        Some(24.0)
    );
    // The call site label names the function and line that made the sockets.
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/workloads/sockets.c"
    ))
    .unwrap();
    let line = src
        .lines()
        .position(|l| l.contains("int leak_tcp_site(void)"))
        .unwrap()
        + 1;
    let site = format!("leak_tcp_site (sockets.c:{line})");
    assert_eq!(
        sample(
            &body,
            "sockleak_leaked_sockets",
            &[("pid", &pid), ("call_site", &site)]
        ),
        Some(6.0),
        "{body}"
    );
    let failures = |body: &str| {
        sample(
            body,
            "sockleak_failures_total",
            &[("pid", &pid), ("syscall", "socket"), ("errno", "EMFILE")],
        )
    };
    assert_eq!(failures(&body), None, "no failure yet");

    let r = w.cmd("socket_emfile 5");
    assert_eq!(r[1], 5);
    let (_, _, body) = get(&format!("{base}/metrics"));
    assert_eq!(failures(&body), Some(5.0));
    w.cmd("socket_emfile 5");
    let (_, _, body) = get(&format!("{base}/metrics"));
    assert_eq!(failures(&body), Some(10.0), "the counter moves");
    assert_eq!(
        sample(&body, "sockleak_live_sockets", &[("pid", &pid)]),
        Some(proc_socket_fds(w.pid).len() as f64)
    );
    assert!(sample(&body, "sockleak_self_resident_bytes", &[]).unwrap() > 1e6);

    let (status, ctype, body) = get(&format!("{base}/report"));
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "report");
    assert_eq!(common::process(&v, w.pid)["failures"][0]["count"], 10);
    drop(t);
}
