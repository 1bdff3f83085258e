//! TCP state joined to fds: CLOSE_WAIT held by a server that never closes (and not by one that
//! does), TIME_WAIT piling up towards one destination (and not with a reused connection),
//! compared with `ss`, with the diagnoses they earn.

mod common;

use std::{net::TcpStream, process::Command};

use common::{
    NetNs, Trace, Workload, build_c, closing_server, diagnosis, evidence_has, no_diagnosis,
    process, sleep_ms, suspect_at,
};

fn workload() -> Workload {
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    w
}

#[test]
fn close_wait_at_the_accept_call_site() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload();
    let port = w.cmd("listen 128")[0] as u16;
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    let clients: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let accepted = w.cmd("accept_hold 50");
    assert_eq!(accepted.len(), 50);
    drop(clients); // the peers hang up; the server never closes
    // Well past --min-age even when a loaded machine delays the socket-table polls that
    // date the state.
    sleep_ms(3000);
    let ss = Command::new("ss")
        .args([
            "-Htan",
            "state",
            "close-wait",
            "sport",
            &format!("= :{port}"),
        ])
        .output()
        .unwrap();
    let ss_count = String::from_utf8_lossy(&ss.stdout).lines().count();
    let report = t.stop();
    let p = process(&report, w.pid);
    let s = suspect_at(p, "accept_site").expect("suspect at accept_site");
    assert_eq!(ss_count, 50);
    assert_eq!(s["count"], 50);
    assert_eq!(s["states"]["CLOSE_WAIT"], ss_count);
    assert_eq!(s["origin"], "accept4");
    assert_eq!(s["kinds"]["tcp"], 50);
    // Accepted sockets: peers by client address, and the address they were accepted on.
    assert_eq!(s["remotes"][0]["endpoint"], "127.0.0.1");
    assert_eq!(s["remotes"][0]["count"], 50);
    assert_eq!(s["locals"][0]["endpoint"], format!("127.0.0.1:{port}"));
    assert_eq!(s["locals"][0]["count"], 50);
    // They entered CLOSE_WAIT about 3 s before the report; the socket tables are polled each
    // interval (0.5 s), so the age is known to within an interval (and a tick's own time).
    let age = s["state_age_s"]["CLOSE_WAIT"].as_f64().unwrap();
    assert!((0.5..30.0).contains(&age), "{age}");
    assert_eq!(
        s["state_age_at_least"],
        serde_json::json!([]),
        "seen entering it"
    );
    // The listener is not a suspect.
    assert_eq!(p["live_sockets"], 51);
    assert_eq!(p["suspects"].as_array().unwrap().len(), 1, "{p:#}");
    let d = diagnosis(p, "close-wait-not-closed");
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(
        evidence_has(
            d,
            &format!("{ss_count} sockets in CLOSE_WAIT, the oldest for")
        ),
        "{d:#}"
    );
    assert!(evidence_has(
        d,
        &format!("accepted connections: clients that closed their end: 127.0.0.1 x{ss_count}")
    ));
    assert!(d["call_site"].as_str().unwrap().starts_with("accept_site"));
    assert!(d["fix"].as_str().unwrap().contains("read returns 0"));
    assert_eq!(
        p["listening"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );
}

#[test]
fn a_server_that_closes_after_eof_has_no_close_wait() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload();
    let port = w.cmd("listen 128")[0] as u16;
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    let clients: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    drop(clients);
    assert_eq!(w.cmd("accept_drain 50"), vec![50]);
    sleep_ms(2000);
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], 1, "the listener");
    assert_eq!(p["tcp_states"].get("CLOSE_WAIT"), None);
    no_diagnosis(p, &["close-wait-not-closed"]);
}

/// A client that opens a connection per request in a namespace with a 200-port range: its
/// TIME_WAIT sockets towards the server take most of the range (time-wait-churn). `connects`
/// is how many it makes.
fn churn_in_small_range(connects: u32) -> (serde_json::Value, u32, String, usize) {
    let ns = NetNs::new("churn");
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40199"]);
    // Loopback would otherwise reuse TIME_WAIT ports (tcp_tw_reuse=2).
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0"]);
    let prefix = ns.prefix();
    let p: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let (_server, port) = closing_server(&p);
    let bin = build_c("sockets");
    let mut w = Workload::spawn(Command::new(&prefix[0]).args(&prefix[1..]).arg(&bin));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    let r = w.cmd(&format!("connect_churn {port} {connects}"));
    assert_eq!(r, vec![i64::from(connects), 0]);
    // The server closes its end after each client's FIN: the last few connections reach
    // TIME_WAIT a moment after the client returns.
    let tw = || {
        ns.exec(&[
            "ss",
            "-Htan",
            "state",
            "time-wait",
            "dst",
            &format!("127.0.0.1:{port}"),
        ])
        .lines()
        .count()
    };
    // Until all are there, or (a loaded server lagging) the count holds still for 1 s.
    let (mut ss_count, mut still) = (tw(), 0);
    for _ in 0..100 {
        if ss_count >= connects as usize || still >= 10 {
            break;
        }
        sleep_ms(100);
        let now = tw();
        still = if now == ss_count { still + 1 } else { 0 };
        ss_count = now;
    }
    sleep_ms(300);
    let report = t.stop();
    (report, w.pid, format!("127.0.0.1:{port}"), ss_count)
}

#[test]
fn time_wait_churn_takes_most_of_the_port_range() {
    if !common::require_bpf() {
        return;
    }
    let (report, pid, dest, ss_count) = churn_in_small_range(120);
    // Over half the 200-port range (flagged), whatever a loaded machine's server left in FIN_WAIT2.
    assert!((101..=120).contains(&ss_count), "{ss_count}");
    let tw = report["time_wait"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["remote"] == dest)
        .expect("TIME_WAIT entry");
    assert_eq!(tw["count"], ss_count);
    assert_eq!(tw["direction"], "outgoing");
    assert_eq!(tw["port_range_size"], 200);
    assert_eq!(tw["flagged"], true, "{ss_count} of 200 ports");
    let p = process(&report, pid);
    assert_eq!(p["opened"], 120);
    assert_eq!(p["closed"], 120);
    assert_eq!(p["live_sockets"], 0);
    let d = diagnosis(p, "time-wait-churn");
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(
        evidence_has(
            d,
            &format!(
                "{ss_count} sockets to {dest} in TIME_WAIT: {:.0}% of the 200 local ports (40000-40199)",
                ss_count as f64 / 200.0 * 100.0
            )
        ),
        "{d:#}"
    );
    assert!(evidence_has(
        d,
        "this process made 120 connects to it while traced; 0 still open"
    ));
    let fix = d["fix"].as_str().unwrap();
    assert!(
        fix.contains("Reuse connections") && fix.contains("tcp_tw_reuse"),
        "{fix}"
    );
    assert!(fix.contains("tcp_tw_recycle no longer exists"));
}

#[test]
fn a_reused_connection_leaves_no_churn_and_no_time_wait_noise() {
    if !common::require_bpf() {
        return;
    }
    let (report, pid, _, ss_count) = churn_in_small_range(1);
    assert_eq!(ss_count, 1);
    let p = process(&report, pid);
    no_diagnosis(p, &["time-wait-churn"]);
    // One socket in TIME_WAIT is not worth a header line.
    assert_eq!(
        report["time_wait"],
        serde_json::json!([]),
        "{:#}",
        report["time_wait"]
    );
}
