//! live_sockets equals the socket links in /proc/PID/fd however sockets arrive: SCM_RIGHTS,
//! pidfd_getfd, io_uring (single-shot and multishot accept, IORING_OP_SOCKET and _CLOSE, fixed
//! files counted apart), and through a path sockleak does not hook (reconciliation adopts it).

mod common;

use std::{net::TcpStream, process::Command, time::Instant};

use common::{Trace, Workload, build_c_with, proc_socket_fds, process, sleep_ms, symbols};
use serde_json::Value;

fn workload(name: &str) -> Workload {
    let mut w = Workload::spawn(&mut Command::new(build_c_with(name, &["-luring"])));
    w.expect("ready");
    w
}

fn trace(pid: u32) -> Trace {
    let p = pid.to_string();
    Trace::start(&[
        "--pid",
        &p,
        "--interval",
        "0.3",
        "--min-age",
        "0",
        "--min-count",
        "1",
    ])
}

/// Waits for a snapshot in which `pid` has `want` live sockets (the kernel's count reaches
/// userspace at the next interval) and returns that snapshot's entry.
fn live_becomes(t: &mut Trace, pid: u32, want: usize) -> Value {
    let deadline = Instant::now() + common::scaled(std::time::Duration::from_secs(10));
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let s = t.next_snapshot();
        if let Some(p) = s["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
        {
            if p["live_sockets"] == want {
                return p.clone();
            }
            last = p.clone();
        }
    }
    panic!("pid {pid} never showed {want} live sockets; last: {last:#}");
}

/// The line of a workload's source that contains `text`.
fn line_of(workload: &str, text: &str) -> usize {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/workloads/{workload}.c")),
    )
    .unwrap();
    src.lines()
        .position(|l| l.contains(text))
        .expect("line in source")
        + 1
}

fn suspects_with_origin<'a>(p: &'a Value, origin: &str) -> Vec<&'a Value> {
    p["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["origin"] == origin)
        .collect()
}

#[test]
fn sockets_received_over_scm_rights() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload("passing");
    let mut t = trace(w.pid);
    let reply = w.cmd("pass 20");
    let (fds, sender) = reply.split_at(20);
    let sender = sender[0] as u32;
    assert_eq!(fds.len(), 20);
    // The socketpair end it received on, and the 20.
    assert_eq!(proc_socket_fds(w.pid).len(), 21);
    live_becomes(&mut t, w.pid, 21);
    w.cmd("close 10");
    assert_eq!(proc_socket_fds(w.pid).len(), 11);
    live_becomes(&mut t, w.pid, 11);
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], 11);
    assert_eq!(p["unseen_opened"], 0);
    let received = suspects_with_origin(p, "received");
    assert_eq!(received.len(), 1, "{p:#}");
    let r = received[0];
    assert_eq!(r["count"], 10);
    assert_eq!(r["kinds"]["tcp"], 10);
    // The kernel added the sender's credentials (SO_PASSCRED on the receiving end).
    assert_eq!(r["senders"][0]["pid"], sender, "{r:#}");
    assert_eq!(r["senders"][0]["count"], 10);
    // recvmsg is a cancellation point: glibc's wrapper uses the stack without a frame, so the
    // frame-pointer walk names the line that called receive_site.
    assert_eq!(
        r["call_site"],
        format!(
            "main (passing.c:{})",
            line_of("passing", "nreceived = receive_site(")
        )
    );
    assert_eq!(report["unseen_opened"], 0);
}

#[test]
fn sockets_taken_with_pidfd_getfd() {
    if !common::require_bpf() {
        return;
    }
    let mut holder = workload("passing");
    let held = holder.cmd("hold 5");
    let mut taker = workload("passing");
    let mut t = trace(taker.pid);
    let cmd = format!(
        "getfd {} {}",
        holder.pid,
        held.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let got = taker.cmd(&cmd);
    assert!(got.iter().all(|fd| *fd >= 0), "{got:?}");
    assert_eq!(proc_socket_fds(taker.pid).len(), 5);
    live_becomes(&mut t, taker.pid, 5);
    let report = t.stop();
    let p = process(&report, taker.pid);
    let received = suspects_with_origin(p, "received");
    assert_eq!(received.len(), 1, "{p:#}");
    assert_eq!(received[0]["count"], 5);
    assert_eq!(received[0]["senders"][0]["pid"], holder.pid);
    assert!(
        symbols(&received[0]["stack"])
            .iter()
            .any(|f| f == "getfd_site")
    );
}

#[test]
fn io_uring_sockets_accepts_and_closes() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload("uring");
    let port = w.cmd("listen")[0] as u16;
    let mut t = trace(w.pid);
    let addr = format!("127.0.0.1:{port}");
    // 30 single-shot accepts: the clients connect first, the accepts find them queued.
    let clients: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    assert_eq!(w.cmd("accept 30").len(), 30);
    assert_eq!(w.cmd("socket 20").len(), 20);
    assert_eq!(proc_socket_fds(w.pid).len(), 51);
    live_becomes(&mut t, w.pid, 51);
    // Multishot accept: one submission, five sockets.
    let more: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    assert_eq!(w.cmd("maccept 5").len(), 5);
    assert_eq!(proc_socket_fds(w.pid).len(), 56);
    live_becomes(&mut t, w.pid, 56);
    assert_eq!(w.cmd("close 10").len(), 10);
    assert_eq!(proc_socket_fds(w.pid).len(), 46);
    live_becomes(&mut t, w.pid, 46);
    // Fixed-file sockets are not fds: counted apart.
    assert_eq!(w.cmd("direct 3"), vec![0, 1, 2]);
    sleep_ms(700);
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], 46);
    assert_eq!(p["live_sockets"], proc_socket_fds(w.pid).len());
    assert_eq!(p["direct_sockets"], 3);
    assert_eq!(p["unseen_opened"], 0);
    // Every io_uring socket is attributed to the call site that submitted it; the closed
    // ones are gone from the suspects.
    let uring = suspects_with_origin(p, "io_uring");
    let at = |site: &str| -> u64 {
        uring
            .iter()
            .filter(|s| symbols(&s["stack"]).iter().any(|f| f == site))
            .map(|s| s["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(at("submit_socket"), 10, "{p:#}");
    assert_eq!(at("submit_accept"), 35, "{p:#}");
    drop((clients, more));
}

#[test]
fn fixed_file_closes_are_counted() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload("uring");
    let mut t = trace(w.pid);
    assert_eq!(w.cmd("direct 4"), vec![0, 1, 2, 3]);
    assert_eq!(w.cmd("dclose 4"), vec![4]);
    sleep_ms(700);
    let _ = t.next_snapshot();
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["direct_sockets"], 0);
    assert_eq!(p["live_sockets"], proc_socket_fds(w.pid).len());
}

#[test]
fn reconciliation_adopts_a_socket_from_an_unhooked_path() {
    if !common::require_bpf() {
        return;
    }
    let mut w = workload("passing");
    let t = trace(w.pid);
    let start = Instant::now();
    // IORING_OP_RECVMSG with SCM_RIGHTS: sockleak hooks neither.
    let fd = w.cmd("unhooked")[0];
    assert!(fd >= 0);
    let line = t.wait_log("appeared without sockleak seeing it made");
    assert!(
        start.elapsed().as_secs_f64() < (0.3 * 2.0 + 1.0) * common::time_scale(),
        "adopted within about one interval"
    );
    assert!(line.contains(&format!("udp socket fd {fd}")), "{line}");
    let truth = proc_socket_fds(w.pid);
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth.len());
    assert_eq!(p["unseen_opened"], 1);
    assert_eq!(report["unseen_opened"], 1);
    let unseen = suspects_with_origin(p, "unseen");
    assert_eq!(unseen.len(), 1, "{p:#}");
    assert_eq!(unseen[0]["count"], 1);
}
