//! Failed calls caught at syscall exit: accept4 EMFILE in a spinning accept loop, socket()
//! EMFILE, connect EADDRNOTAVAIL with a 5-port range. Counts compare with the workload's own,
//! and the diagnoses they earn (accept-emfile-spin, fd-limit-too-low, time-wait-churn) with
//! them; an accept loop that backs off is not a spin.

mod common;

use std::{net::TcpStream, process::Command};

use common::{
    NetNs, Trace, Workload, build_c, closing_server, diagnosis, evidence_has, failure,
    no_diagnosis, process, set_nofile, sleep_ms,
};

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

fn fds_below(pid: u32, limit: u32) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|fd| *fd < limit)
        .count() as u32
}

fn fd_list(pid: u32) -> String {
    let out = Command::new("ls")
        .args(["-l", &format!("/proc/{pid}/fd")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn workload(prefix: &[String]) -> Workload {
    let bin = build_c("sockets");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let mut w = Workload::spawn(&mut cmd);
    w.expect("ready");
    w
}

#[test]
fn accept_loop_spinning_on_emfile() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload(&[]);
    set_nofile(w.pid, 64, 64);
    let port = w.cmd("listen 128")[0];
    let pid = w.pid.to_string();
    let mut t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    // 100 loopback clients; the server can hold only 64 fds.
    let clients: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port as u16)).unwrap())
        .collect();
    let r = w.cmd("accept_loop 200");
    let (accepted, fails) = (r[0], r[1]);
    assert_eq!(fails, 200);
    // EMFILE: every fd number under the limit is taken (fds inherited from the test harness,
    // like cargo's jobserver pipe, may sit above it).
    assert_eq!(fds_below(w.pid, 64), 64, "{}", fd_list(w.pid));
    let open_now = open_fds(w.pid);
    // A failure line streamed while it happened.
    let mut saw_stream = false;
    for _ in 0..4 {
        let line = t.next_line();
        if line["type"] == "failure" {
            assert_eq!(line["syscall"], "accept4");
            assert_eq!(line["errno"], "EMFILE");
            saw_stream = true;
            break;
        }
    }
    assert!(saw_stream, "a failure line was streamed");
    let report = t.stop();
    let p = process(&report, w.pid);
    let f = failure(p, "accept4", "EMFILE");
    assert_eq!(f["count"], fails);
    assert_eq!(f["open_fds_at_failure"], open_now);
    assert_eq!(f["spinning"], true);
    assert_eq!(f["listen_backlog"]["queued"], 100 - accepted);
    assert_eq!(f["listen_backlog"]["max"], 128);
    assert!(
        f["call_site"].as_str().unwrap().starts_with("accept_site"),
        "{f:#}"
    );
    assert_eq!(p["fd_limit"]["soft"], 64);
    assert_eq!(p["fd_limit"]["hard"], 64);
    assert_eq!(p["open_fds"], open_now);
    assert!(p["fd_usage_ratio"].as_f64().unwrap() >= 1.0);
    // The loop spins while clients queue: the cause, with the measured numbers.
    let d = diagnosis(p, "accept-emfile-spin");
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(
        evidence_has(d, &format!("accept4 failed with EMFILE {fails} times in")),
        "{d:#}"
    );
    assert!(
        evidence_has(
            d,
            &format!(
                "{} connections wait in the listen queue (backlog 128)",
                100 - accepted
            )
        ),
        "{d:#}"
    );
    assert!(d["fix"].as_str().unwrap().contains("Back off"));
    assert!(d["call_site"].as_str().unwrap().starts_with("accept_site"));
    // And a hard limit of 64 is itself too low.
    let l = diagnosis(p, "fd-limit-too-low");
    assert_eq!(l["confidence"], "certain");
    assert!(evidence_has(
        l,
        &format!("accept4 failed with EMFILE {fails} times: the process hit its limit of 64 fds")
    ));
    assert!(evidence_has(l, "soft limit 64, hard limit 64"));
    let fix = l["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("prlimit --pid {pid} --nofile=65536:65536")),
        "{fix}"
    );
    assert_eq!(p["limit_advice"], l["fix"]);
    let warnings: Vec<&str> = p["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("spinning on EMFILE")),
        "{warnings:?}"
    );
    let usage = format!("of its soft fd limit ({open_now} of 64)");
    assert!(warnings.iter().any(|w| w.contains(&usage)), "{warnings:?}");
    drop(clients);
}

#[test]
fn socket_emfile_with_soft_limit_far_below_hard() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload(&[]);
    // Far below hard, and under this machine's hard limit (raising hard needs CAP_SYS_RESOURCE).
    set_nofile(w.pid, 32, 16384);
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    let r = w.cmd("socket_emfile 25");
    let (made, fails) = (r[0], r[1]);
    assert_eq!(fails, 25);
    assert_eq!(fds_below(w.pid, 32), 32, "{}", fd_list(w.pid));
    let open_now = open_fds(w.pid);
    let report = t.stop();
    let p = process(&report, w.pid);
    let f = failure(p, "socket", "EMFILE");
    assert_eq!(f["count"], fails);
    assert_eq!(f["open_fds_at_failure"], open_now);
    assert_eq!(f["spinning"], false, "only accept loops spin");
    assert!(f["call_site"].as_str().unwrap().starts_with("client_site"));
    assert_eq!(p["live_sockets"], made);
    assert_eq!(p["fd_limit"]["soft"], 32);
    let d = diagnosis(p, "fd-limit-too-low");
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("soft fd limit 32 is far below the hard limit 16384"),
        "{d:#}"
    );
    assert!(evidence_has(
        d,
        &format!("socket failed with EMFILE {fails} times: the process hit its limit of 32 fds")
    ));
    let fix = d["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("prlimit --pid {pid} --nofile=16384:16384")),
        "{fix}"
    );
    assert_eq!(p["limit_advice"], d["fix"]);
    no_diagnosis(p, &["accept-emfile-spin"]);
}

#[test]
fn an_accept_loop_that_backs_off_is_not_a_spin() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload(&[]);
    set_nofile(w.pid, 64, 64);
    let port = w.cmd("listen 128")[0];
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    let clients: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", port as u16)).unwrap())
        .collect();
    let r = w.cmd("accept_backoff 4");
    assert_eq!(r[1], 4);
    let report = t.stop();
    let p = process(&report, w.pid);
    let f = failure(p, "accept4", "EMFILE");
    assert_eq!(f["count"], 4);
    assert_eq!(f["spinning"], false);
    no_diagnosis(p, &["accept-emfile-spin"]);
    // The limit still bites: that diagnosis stays.
    diagnosis(p, "fd-limit-too-low");
    drop(clients);
}

#[test]
fn connect_eaddrnotavail_with_five_ephemeral_ports() {
    if !common::require_bpf() {
        return;
    }
    let ns = NetNs::new("ports");
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40004"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0"]);
    let prefix = ns.prefix();
    let p: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let (_server, port) = closing_server(&p);
    let mut w = workload(&prefix);
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    let r = w.cmd(&format!("connect_churn {port} 12"));
    let (ok, fails) = (r[0], r[1]);
    // Linux prefers one port parity for connect(), so not all 5 ports may be used.
    assert!((1..=5).contains(&ok) && ok + fails == 12, "{ok} {fails}");
    sleep_ms(300);
    let tw_ss = ns
        .exec(&["ss", "-Htan", "state", "time-wait"])
        .lines()
        .count();
    let report = t.stop();
    let proc_ = process(&report, w.pid);
    let f = failure(proc_, "connect", "EADDRNOTAVAIL");
    let dest = format!("127.0.0.1:{port}");
    assert_eq!(f["count"], fails);
    assert_eq!(f["remote"], dest);
    assert_eq!(f["port_range"]["low"], 40000);
    assert_eq!(f["port_range"]["high"], 40004);
    assert_eq!(f["port_range"]["size"], 5);
    assert_eq!(f["ports_in_use_to_remote"], ok);
    assert!(f["note"].as_str().unwrap().contains("tcp_tw_reuse"));
    // The host view: TIME_WAIT towards the destination, against the 5-port range.
    let tw = report["time_wait"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["remote"] == dest)
        .expect("TIME_WAIT entry for the destination");
    assert_eq!(tw_ss as i64, ok);
    assert_eq!(tw["count"], tw_ss);
    assert_eq!(tw["direction"], "outgoing");
    assert_eq!(tw["port_range_size"], 5);
    assert_eq!(tw["flagged"], ok > 2, "flagged above half of the range");
    // Out of ports towards one destination: time-wait-churn, certain from the failures.
    let d = diagnosis(proc_, "time-wait-churn");
    assert_eq!(d["confidence"], "certain", "{d:#}");
    assert!(
        evidence_has(
            d,
            &format!("connect failed with EADDRNOTAVAIL {fails} times")
        ),
        "{d:#}"
    );
    assert!(evidence_has(
        d,
        &format!("{tw_ss} sockets to {dest} in TIME_WAIT")
    ));
    assert!(evidence_has(d, "of the 5 local ports (40000-40004)"));
    assert!(evidence_has(
        d,
        &format!("this process made {ok} connects to it while traced; 0 still open")
    ));
    assert!(d["fix"].as_str().unwrap().contains("tcp_tw_reuse"));
}
