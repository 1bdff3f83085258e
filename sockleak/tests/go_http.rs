//! Seed incident 1, end to end: a Go client that builds a new http.Transport per request leaks
//! keep-alive connections; sockleak names the Go call site, the endpoint, the exact count, and
//! the cause: a uprobe on net/http.(*Transport).dialConn counts the Transports. A client that
//! shares one Transport but never closes response bodies is told apart; the fixed client
//! (shared Transport, bodies closed) gets neither. Stripped binaries and `--no-uprobes` too.

mod common;

use std::{path::PathBuf, process::Command};

use common::{
    Trace, Workload, build_go, build_go_with, diagnosis, evidence_has, no_diagnosis,
    proc_socket_fds, process, sleep_ms, suspect_at,
};

const REQUESTS: usize = 40;
const PER_REQUEST: &str = "go-transport-per-request";
const BODY: &str = "go-response-body-not-closed";

fn server() -> (Workload, String) {
    let mut s = Workload::spawn(&mut Command::new(build_go("httpserver")));
    let addr = s.expect("listening");
    (s, addr)
}

struct Run {
    report: serde_json::Value,
    truth: Vec<u32>,
    pid: u32,
    addr: String,
}

fn run_with(bin: PathBuf, mode: &str, extra: &[&str]) -> Run {
    let (_server, addr) = server();
    let mut c = Workload::spawn(Command::new(bin).args([&addr, mode, &REQUESTS.to_string()]));
    c.expect("ready");
    let pid = c.pid.to_string();
    let mut args = vec!["--pid", &pid, "--interval", "0.5", "--min-age", "1"];
    args.extend_from_slice(extra);
    let t = Trace::start(&args);
    c.cmd_no_reply("go").unwrap();
    c.expect("done");
    // Let the leaked connections age past --min-age.
    sleep_ms(1800);
    let truth = proc_socket_fds(c.pid);
    let report = t.stop();
    Run {
        report,
        truth,
        pid: c.pid,
        addr,
    }
}

fn run(mode: &str) -> Run {
    run_with(build_go("httpclient"), mode, &[])
}

#[test]
fn per_request_transport_leak_is_found_at_dial_conn() {
    if !common::require_bpf() {
        return;
    }
    let Run {
        report,
        truth,
        pid,
        addr,
    } = run("leaky");
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
    // The cause, from the Transports the uprobe counted: one per request.
    let d = diagnosis(p, PER_REQUEST);
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(
        evidence_has(
            d,
            &format!("they belong to {REQUESTS} distinct *http.Transport objects")
        ),
        "{d:#}"
    );
    assert!(evidence_has(
        d,
        &format!("{REQUESTS} ESTABLISHED connections made by net/http.(*Transport).dialConn")
    ));
    assert!(evidence_has(d, &format!("all {REQUESTS} to {addr}")));
    let fix = d["fix"].as_str().unwrap();
    assert!(fix.contains("Share one http.Client/Transport"), "{fix}");
    assert!(fix.contains("MaxIdleConnsPerHost") && fix.contains("CloseIdleConnections"));
    assert_eq!(d["call_site"], s["call_site"]);
    no_diagnosis(p, &[BODY, "fd-limit-too-low"]);
}

#[test]
fn shared_transport_reports_no_leak() {
    if !common::require_bpf() {
        return;
    }
    let Run {
        report, truth, pid, ..
    } = run("fixed");
    let p = process(&report, pid);
    assert_eq!(truth.len(), 1, "one pooled connection");
    assert_eq!(p["live_sockets"], 1);
    assert!(p["opened"].as_u64().unwrap() >= 1);
    assert_eq!(p["suspects"].as_array().unwrap().len(), 0, "{p:#}");
    // The negative of both Go patterns, and of limit advice for a process far from its limit.
    no_diagnosis(p, &[PER_REQUEST, BODY, "fd-limit-too-low"]);
    assert_eq!(p["limit_advice"], serde_json::Value::Null);
}

#[test]
fn unclosed_bodies_on_a_shared_transport_are_not_a_transport_per_request() {
    if !common::require_bpf() {
        return;
    }
    let Run {
        report, truth, pid, ..
    } = run("unclosed");
    let p = process(&report, pid);
    assert_eq!(truth.len(), REQUESTS, "no connection went back to the pool");
    let d = diagnosis(p, BODY);
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(
        evidence_has(
            d,
            &format!("they belong to 1 *http.Transport (the busiest owns {REQUESTS})")
        ),
        "{d:#}"
    );
    // 64 KiB bodies: most of each waits unread in the socket.
    assert!(
        evidence_has(
            d,
            &format!("{REQUESTS} of them have response data nobody read")
        ),
        "{d:#}"
    );
    let fix = d["fix"].as_str().unwrap();
    assert!(
        fix.contains("resp.Body.Close()") && fix.contains("io.Discard"),
        "{fix}"
    );
    no_diagnosis(p, &[PER_REQUEST]);
}

#[test]
fn stripped_binary_is_probed_and_named_from_its_go_table() {
    if !common::require_bpf() {
        return;
    }
    let bin = build_go_with("httpclient", &["-ldflags=-s -w"]);
    let Run {
        report, truth, pid, ..
    } = run_with(bin, "leaky", &[]);
    let p = process(&report, pid);
    assert_eq!(truth.len(), REQUESTS);
    let s = suspect_at(p, "net/http.(*Transport).dialConn")
        .unwrap_or_else(|| panic!("frames named from .gopclntab: {p:#}"));
    assert_eq!(s["count"], REQUESTS);
    let d = diagnosis(p, PER_REQUEST);
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(evidence_has(
        d,
        &format!("they belong to {REQUESTS} distinct")
    ));
}

#[test]
fn without_uprobes_the_diagnosis_is_likely_and_says_why() {
    if !common::require_bpf() {
        return;
    }
    let Run {
        report, truth, pid, ..
    } = run_with(build_go("httpclient"), "leaky", &["--no-uprobes"]);
    let p = process(&report, pid);
    assert_eq!(truth.len(), REQUESTS);
    let d = diagnosis(p, PER_REQUEST);
    assert_eq!(d["confidence"], "likely", "{d:#}");
    assert!(evidence_has(
        d,
        "could not count Transport objects: uprobes are turned off (--no-uprobes)"
    ));
}
