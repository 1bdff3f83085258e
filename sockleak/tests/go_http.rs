//! Seed incident 1, end to end: a Go client that builds a new http.Transport per request leaks
//! keep-alive connections; sockleak names the function that sent the requests (joined to the
//! sockets, which Go dials on a goroutine of its own, by uprobes on net/http), the endpoint,
//! the exact count, and the cause: a uprobe on net/http.(*Transport).dialConn counts the
//! Transports. A client that shares one Transport but never closes response bodies is told
//! apart and named; the fixed client (shared Transport, bodies closed) gets nothing. Go 1.19
//! (Debian's golang-go) and 1.23 (bookworm-backports), each also stripped (`-ldflags=-s -w`),
//! HTTPS, a custom DialContext wrapping its connections, dual-stack dials, a stripped PIE, and
//! `--no-uprobes`. Call sites are checked against the source (tests/workloads/httpclient.go).

mod common;

use std::{path::PathBuf, process::Command};

use common::{
    Trace, Workload, build_go, build_go_using, diagnosis, evidence_has, go_toolchain, no_diagnosis,
    proc_socket_fds, process, sleep_ms, source_line, suspect_at, symbols,
};
use serde_json::Value;

const REQUESTS: usize = 40;
const PER_REQUEST: &str = "go-transport-per-request";
const BODY: &str = "go-response-body-not-closed";
const CLIENT: &str = "httpclient.go";

fn server(args: &[&str]) -> (Workload, String) {
    let mut s = Workload::spawn(Command::new(build_go("httpserver")).args(args));
    let addr = s.expect("listening");
    (s, addr)
}

/// A client binary under test, named for failure messages.
struct Client {
    name: String,
    bin: PathBuf,
}

/// go1.19 and go1.23, each as built and stripped.
fn clients() -> Vec<Client> {
    let mut out = Vec::new();
    for minor in [19, 23] {
        let go = go_toolchain(minor);
        for (what, flags) in [("", &[][..]), (" stripped", &["-ldflags=-s -w"][..])] {
            out.push(Client {
                name: format!("go1.{minor}{what}"),
                bin: build_go_using(&go, "httpclient", flags),
            });
        }
    }
    out
}

struct Run {
    report: Value,
    truth: Vec<u32>,
    pid: u32,
    addr: String,
    addr2: String,
}

fn run_with(bin: &PathBuf, mode: &str, extra: &[&str]) -> Run {
    let (_server, addr) = server(if mode == "tls" { &["tls"] } else { &[] });
    let (_server2, addr2) = server(&[]);
    let mut c =
        Workload::spawn(Command::new(bin).args([&addr, mode, &REQUESTS.to_string(), &addr2]));
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
        addr2,
    }
}

fn run(mode: &str) -> Run {
    run_with(&build_go("httpclient"), mode, &[])
}

/// The call site the report must give for the requests of `mode`: the sending function and
/// the line of its Get.
fn sent_by(function: &str, mode: &str) -> String {
    format!(
        "main.{function} ({CLIENT}:{})",
        source_line(CLIENT, &format!("// origin:{mode}"))
    )
}

fn only_suspect<'a>(p: &'a Value, who: &str) -> &'a Value {
    let s = p["suspects"].as_array().unwrap();
    assert_eq!(s.len(), 1, "{who}: one call site, one suspect: {p:#}");
    &s[0]
}

/// A suspect named by its joined origin: the call site, the note, the origin's own stack with
/// the sending function and its caller, and the socket's stack (net/http's dial) kept.
fn assert_joined(s: &Value, want: &str, function: &str, who: &str) {
    assert_eq!(s["call_site"], want, "{who}: {s:#}");
    let note = s["call_site_note"].as_str().unwrap_or("");
    assert!(
        note.contains("(*persistConn).roundTrip") && note.contains("dial goroutine"),
        "{who}: {note}"
    );
    let o = &s["origin_call"];
    assert_eq!(o["join"], "go-roundtrip", "{who}: {o:#}");
    assert_eq!(o["call_site"], want, "{who}");
    let frames = symbols(&o["stack"]);
    let at = |f: &str| frames.iter().position(|x| x == f);
    assert!(
        at(&format!("main.{function}")).is_some() && at("main.main").is_some(),
        "{who}: the origin's stack holds the sending function and its callers: {frames:#?}"
    );
    assert!(
        at(&format!("main.{function}")) < at("main.main"),
        "{who}: {frames:#?}"
    );
}

#[test]
fn per_request_transport_names_the_sending_function() {
    if !common::require_bpf() {
        return;
    }
    let want = sent_by("requestNewTransport", "leaky");
    for c in clients() {
        let who = &c.name;
        let Run {
            report,
            truth,
            pid,
            addr,
            ..
        } = run_with(&c.bin, "leaky", &[]);
        let p = process(&report, pid);
        assert_eq!(
            truth.len(),
            REQUESTS,
            "{who}: each request left one connection"
        );
        assert_eq!(p["live_sockets"], truth.len(), "{who}");
        let s = only_suspect(p, who);
        assert_eq!(s["count"], REQUESTS, "{who}");
        assert_eq!(s["remotes"][0]["endpoint"], addr, "{who}");
        assert_eq!(s["states"]["ESTABLISHED"], REQUESTS, "{who}");
        assert_joined(s, &want, "requestNewTransport", who);
        // The socket's own stack is still net/http's dial.
        assert!(
            symbols(&s["stack"]).contains(&"net/http.(*Transport).dialConn".to_string()),
            "{who}: {s:#}"
        );
        let d = diagnosis(p, PER_REQUEST);
        assert_eq!(d["confidence"], "certain", "{who}: {d:#}");
        assert!(
            evidence_has(
                d,
                &format!("they belong to {REQUESTS} distinct *http.Transport objects")
            ),
            "{who}: {d:#}"
        );
        assert!(
            evidence_has(d, &format!("the requests were sent by {want}")),
            "{who}: {d:#}"
        );
        assert!(
            evidence_has(
                d,
                &format!("{REQUESTS} of them went back to their Transport's idle pool")
            ),
            "{who}: {d:#}"
        );
        assert_eq!(d["call_site"], want, "{who}");
        assert_eq!(d["origin_call"], s["origin_call"], "{who}");
        no_diagnosis(p, &[BODY, "fd-limit-too-low"]);
    }
}

#[test]
fn unclosed_bodies_name_the_function_that_never_closed() {
    if !common::require_bpf() {
        return;
    }
    let want = sent_by("requestNeverClosed", "unclosed");
    for c in clients() {
        let who = &c.name;
        let Run {
            report, truth, pid, ..
        } = run_with(&c.bin, "unclosed", &[]);
        let p = process(&report, pid);
        assert_eq!(truth.len(), REQUESTS, "{who}: no connection went back");
        let s = only_suspect(p, who);
        assert_eq!(s["count"], REQUESTS, "{who}");
        assert_joined(s, &want, "requestNeverClosed", who);
        let d = diagnosis(p, BODY);
        assert_eq!(d["confidence"], "certain", "{who}: {d:#}");
        assert!(
            evidence_has(
                d,
                &format!("they belong to 1 *http.Transport (the busiest owns {REQUESTS})")
            ),
            "{who}: {d:#}"
        );
        assert!(
            evidence_has(
                d,
                &format!("{REQUESTS} of them are still checked out after their last request")
            ),
            "{who}: {d:#}"
        );
        // 64 KiB bodies: most of each waits unread in the socket.
        assert!(
            evidence_has(
                d,
                &format!("{REQUESTS} of them have response data nobody read")
            ),
            "{who}: {d:#}"
        );
        let fix = d["fix"].as_str().unwrap();
        assert!(
            fix.contains("resp.Body.Close()") && fix.contains("io.Discard"),
            "{fix}"
        );
        assert_eq!(d["call_site"], want, "{who}");
        no_diagnosis(p, &[PER_REQUEST]);
    }
}

#[test]
fn healthy_client_has_no_suspect_and_no_origin_noise() {
    if !common::require_bpf() {
        return;
    }
    for c in clients() {
        let who = &c.name;
        let Run {
            report, truth, pid, ..
        } = run_with(&c.bin, "fixed", &[]);
        let p = process(&report, pid);
        assert_eq!(truth.len(), 1, "{who}: one pooled connection");
        assert_eq!(p["live_sockets"], 1, "{who}");
        assert!(p["opened"].as_u64().unwrap() >= 1);
        assert_eq!(p["suspects"].as_array().unwrap().len(), 0, "{who}: {p:#}");
        assert_eq!(p["diagnoses"].as_array().unwrap().len(), 0, "{who}: {p:#}");
        assert_eq!(p["warnings"].as_array().unwrap().len(), 0, "{who}: {p:#}");
        assert_eq!(p["limit_advice"], Value::Null);
    }
}

#[test]
fn https_origin_is_joined_through_tls() {
    if !common::require_bpf() {
        return;
    }
    let want = sent_by("requestNewTransportTLS", "tls");
    for c in clients() {
        let who = &c.name;
        let Run {
            report, truth, pid, ..
        } = run_with(&c.bin, "tls", &[]);
        let p = process(&report, pid);
        assert_eq!(truth.len(), REQUESTS, "{who}");
        let s = only_suspect(p, who);
        assert_eq!(s["count"], REQUESTS, "{who}");
        // The *tls.Conn around the *net.TCPConn is followed to the socket.
        assert_joined(s, &want, "requestNewTransportTLS", who);
        let d = diagnosis(p, PER_REQUEST);
        assert_eq!(d["confidence"], "certain", "{who}: {d:#}");
        assert_eq!(d["call_site"], want, "{who}");
    }
}

#[test]
fn wrapped_dial_context_never_attributes_a_socket_to_the_wrong_caller() {
    if !common::require_bpf() {
        return;
    }
    let first = sent_by("requestWrappedFirst", "wrapped-first");
    let second = sent_by("requestWrappedSecond", "wrapped-second");
    for c in clients() {
        let who = &c.name;
        let Run {
            report,
            truth,
            pid,
            addr,
            addr2,
        } = run_with(&c.bin, "wrapped", &[]);
        let p = process(&report, pid);
        assert_eq!(truth.len(), REQUESTS, "{who}");
        // Each function talks to its own server: a socket joined to the wrong function would
        // show the other server as a peer.
        let mut named = 0;
        for s in p["suspects"].as_array().unwrap() {
            let peer = match s["call_site"].as_str() {
                Some(cs) if cs == first => &addr,
                Some(cs) if cs == second => &addr2,
                other => panic!("{who}: a call site other than the two senders: {other:?}: {s:#}"),
            };
            let remotes = s["remotes"].as_array().unwrap();
            assert_eq!(remotes.len(), 1, "{who}: {s:#}");
            assert_eq!(remotes[0]["endpoint"], *peer, "{who}: {s:#}");
            named += s["count"].as_u64().unwrap();
        }
        // The typed chain cannot follow the wrapper: the socket the dial goroutine made is the
        // fallback, and it names every one.
        assert_eq!(named, REQUESTS as u64, "{who}: {p:#}");
    }
}

#[test]
fn dual_stack_dials_carry_their_transport() {
    if !common::require_bpf() {
        return;
    }
    let want = sent_by("requestDualStack", "dual");
    for minor in [19, 23] {
        let bin = build_go_using(&go_toolchain(minor), "httpclient", &[]);
        let who = format!("go1.{minor}");
        let Run {
            report, truth, pid, ..
        } = run_with(&bin, "dual", &[]);
        let p = process(&report, pid);
        assert_eq!(truth.len(), REQUESTS, "{who}");
        let s = only_suspect(p, &who);
        assert_joined(s, &want, "requestDualStack", &who);
        // The sockets were made on the dialer's racer goroutines, not dialConn's: the Transport
        // comes from the connection itself.
        let d = diagnosis(p, PER_REQUEST);
        assert_eq!(d["confidence"], "certain", "{who}: {d:#}");
        assert!(
            evidence_has(
                d,
                &format!("they belong to {REQUESTS} distinct *http.Transport objects")
            ),
            "{who}: {d:#}"
        );
    }
}

#[test]
fn stripped_position_independent_binary_is_joined() {
    if !common::require_bpf() {
        return;
    }
    let bin = build_go_using(
        &go_toolchain(23),
        "httpclient",
        &["-buildmode=pie", "-ldflags=-s -w"],
    );
    let Run {
        report, truth, pid, ..
    } = run_with(&bin, "leaky", &[]);
    let p = process(&report, pid);
    assert_eq!(truth.len(), REQUESTS);
    let s = only_suspect(p, "go1.23 pie stripped");
    assert_joined(
        s,
        &sent_by("requestNewTransport", "leaky"),
        "requestNewTransport",
        "go1.23 pie stripped",
    );
    let d = diagnosis(p, PER_REQUEST);
    assert_eq!(d["confidence"], "certain", "{d:#}");
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
        ..
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
fn without_uprobes_the_diagnosis_is_likely_and_says_why() {
    if !common::require_bpf() {
        return;
    }
    let Run {
        report, truth, pid, ..
    } = run_with(&build_go("httpclient"), "leaky", &["--no-uprobes"]);
    let p = process(&report, pid);
    assert_eq!(truth.len(), REQUESTS);
    let d = diagnosis(p, PER_REQUEST);
    assert_eq!(d["confidence"], "likely", "{d:#}");
    assert!(evidence_has(
        d,
        "could not count Transport objects: uprobes are turned off (--no-uprobes)"
    ));
    // Today's output: the dial goroutine's stack, no origin.
    let s = suspect_at(p, "net/http.(*Transport).dialConn").unwrap_or_else(|| panic!("{p:#}"));
    assert_eq!(s["call_site"], Value::Null, "{s:#}");
    assert_eq!(s["origin_call"], Value::Null, "{s:#}");
    assert!(
        s["call_site_note"]
            .as_str()
            .unwrap_or("")
            .contains("goroutine of its own"),
        "{s:#}"
    );
    assert!(
        evidence_has(
            d,
            "could not be joined to it: uprobes are turned off (--no-uprobes)"
        ),
        "{d:#}"
    );
}
