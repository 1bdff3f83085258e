//! TCP state joined to fds: CLOSE_WAIT held by a server that never closes, TIME_WAIT piling up
//! towards one destination, compared with `ss`.

mod common;

use std::{net::TcpStream, process::Command};

use common::{Trace, Workload, build_c, closing_server, process, sleep_ms, suspect_at};

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
    sleep_ms(1500);
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
    // They entered CLOSE_WAIT about 1.5 s before the report; the socket tables are polled each
    // interval (0.5 s), so the age is known to within an interval (and a tick's own time).
    let age = s["state_age_s"]["CLOSE_WAIT"].as_f64().unwrap();
    assert!((0.5..30.0).contains(&age), "{age}");
    assert_eq!(s["state_age_at_least"], serde_json::json!([]), "seen entering it");
    // The listener is not a suspect.
    assert_eq!(p["live_sockets"], 51);
    assert_eq!(p["suspects"].as_array().unwrap().len(), 1, "{p:#}");
}

#[test]
fn time_wait_per_destination_matches_ss() {
    if !common::require_bpf() {
        return;
    }
    let (_server, port) = closing_server(&[]);
    let mut w = workload();
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    let r = w.cmd(&format!("connect_churn {port} 30"));
    assert_eq!(r, vec![30, 0]);
    sleep_ms(300);
    let ss = Command::new("ss")
        .args([
            "-Htan",
            "state",
            "time-wait",
            "dst",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let ss_count = String::from_utf8_lossy(&ss.stdout).lines().count();
    let report = t.stop();
    let dest = format!("127.0.0.1:{port}");
    let tw = report["time_wait"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["remote"] == dest)
        .expect("TIME_WAIT entry");
    assert_eq!(ss_count, 30);
    assert_eq!(tw["count"], ss_count);
    assert_eq!(tw["flagged"], false, "30 of a ~28k port range");
    let p = process(&report, w.pid);
    assert_eq!(p["opened"], 30);
    assert_eq!(p["closed"], 30);
    assert_eq!(p["live_sockets"], 0);
}
