//! Seed incident 1, end to end: a Go client that builds a new http.Transport per request leaks
//! keep-alive connections; sockleak names the Go call site, the endpoint and the exact count.
//! The fixed client (one shared Transport) reports no leak.

mod common;

use std::process::Command;

use common::{Trace, Workload, build_go, proc_socket_fds, process, sleep_ms, suspect_at};

const REQUESTS: usize = 40;

fn server() -> (Workload, String) {
    let mut s = Workload::spawn(&mut Command::new(build_go("httpserver")));
    let addr = s.expect("listening");
    (s, addr)
}

fn client(addr: &str, mode: &str) -> Workload {
    let mut c = Workload::spawn(Command::new(build_go("httpclient")).args([
        addr,
        mode,
        &REQUESTS.to_string(),
    ]));
    c.expect("ready");
    c
}

fn run(mode: &str) -> (serde_json::Value, Vec<u32>, u32, String) {
    let (_server, addr) = server();
    let mut c = client(&addr, mode);
    let pid = c.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    c.cmd_no_reply("go").unwrap();
    c.expect("done");
    // Let the leaked connections age past --min-age.
    sleep_ms(1800);
    let truth = proc_socket_fds(c.pid);
    let report = t.stop();
    (report, truth, c.pid, addr)
}

#[test]
fn per_request_transport_leak_is_found_at_dial_conn() {
    if !common::require_bpf() {
        return;
    }
    let (report, truth, pid, addr) = run("leaky");
    let p = process(&report, pid);
    assert_eq!(
        truth.len(),
        REQUESTS,
        "each request left one connection open"
    );
    assert_eq!(p["live_sockets"], truth.len());
    let s = suspect_at(p, "net/http.(*Transport).dialConn")
        .unwrap_or_else(|| panic!("no suspect at dialConn: {p:#}"));
    assert_eq!(s["count"], truth.len());
    assert_eq!(s["remotes"][0]["endpoint"], addr);
    assert_eq!(s["remotes"][0]["count"], REQUESTS);
    assert_eq!(s["states"]["ESTABLISHED"], REQUESTS);
    assert_eq!(s["kinds"]["tcp"], REQUESTS);
    assert!(s["max_idle_s"].as_f64().unwrap() >= 1.0);
}

#[test]
fn shared_transport_reports_no_leak() {
    if !common::require_bpf() {
        return;
    }
    let (report, truth, pid, _) = run("fixed");
    let p = process(&report, pid);
    assert_eq!(truth.len(), 1, "one pooled connection");
    assert_eq!(p["live_sockets"], 1);
    assert!(p["opened"].as_u64().unwrap() >= 1);
    assert_eq!(p["suspects"].as_array().unwrap().len(), 0, "{p:#}");
}
