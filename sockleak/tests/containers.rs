//! Containers: a cgroup subtree traced from the kernel filter, namespace pids, processes that
//! join later, container ids resolved from cgroup paths, and stacks of binaries that exist only
//! inside the container's mount namespace.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{
    Trace, Workload, build_c, proc_socket_fds, process, sleep_ms, sockleak_bin, suspect_at,
};

/// A cgroup made for one test (under the cgroup2 mount), emptied and removed after it.
struct TestCgroup {
    dir: PathBuf,
}

fn cgroup2_root() -> PathBuf {
    sockleak::host::cgroup::cgroup2_mount().expect("a cgroup2 hierarchy is mounted")
}

impl TestCgroup {
    fn new(rel: &str) -> TestCgroup {
        let dir = cgroup2_root().join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        TestCgroup { dir }
    }

    fn rel(&self) -> String {
        format!(
            "/{}",
            self.dir.strip_prefix(cgroup2_root()).unwrap().display()
        )
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in sockleak::host::cgroup::pids_in(&self.dir) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        sleep_ms(100);
        // Innermost first.
        let mut d = self.dir.clone();
        let root = cgroup2_root();
        while d != root && d.starts_with(&root) {
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            d = d.parent().unwrap().to_path_buf();
        }
    }
}

/// Runs `argv` as a process placed in `cg` before it execs.
fn in_cgroup(cg: &TestCgroup, argv: &[&str]) -> Workload {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            cg.dir.display()
        ))
        .arg("sh")
        .args(argv);
    Workload::spawn(&mut c)
}

/// The host pid of the only child of `pid` (what `unshare --fork` runs).
fn only_child(pid: u32) -> u32 {
    for _ in 0..100 {
        let s =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = s.split_whitespace().next() {
            return c.parse().unwrap();
        }
        sleep_ms(20);
    }
    panic!("{pid} has no child");
}

#[test]
fn cgroup_subtree_with_pid_namespace_and_late_joiner() {
    if !common::require_bpf() {
        return;
    }
    let bin = build_c("sockets");
    let bin = bin.to_str().unwrap();
    let cg = TestCgroup::new(&format!("sockleak-test-{}/app", std::process::id()));
    let mut inside = in_cgroup(&cg, &["unshare", "--pid", "--fork", "--mount-proc", bin]);
    assert_eq!(
        inside.expect("ready"),
        "1",
        "pid 1 of its own PID namespace"
    );
    let host_pid = only_child(inside.pid);
    let mut outside = Workload::spawn(&mut Command::new(bin));
    outside.expect("ready");

    let dir = cg.dir.to_str().unwrap().to_string();
    let t = Trace::start(&["--cgroup", &dir, "--interval", "0.5", "--min-age", "0"]);
    inside.cmd("leak 4");
    outside.cmd("leak 4");
    // Started in the cgroup after attach: traced from its first socket.
    let mut late = in_cgroup(&cg, &[bin]);
    let late_pid: u32 = late.expect("ready").parse().unwrap();
    late.cmd("leak 3");
    let truth_inside = proc_socket_fds(host_pid);
    let truth_late = proc_socket_fds(late_pid);
    let report = t.stop();

    let p = process(&report, host_pid);
    assert_eq!(p["ns_pid"], 1);
    assert_eq!(p["cgroup"], cg.rel());
    assert_eq!(p["live_sockets"], truth_inside.len());
    assert_eq!(
        suspect_at(p, "leak_tcp_site").expect("symbolized")["count"],
        4
    );
    let l = process(&report, late_pid);
    assert_eq!(l["live_sockets"], truth_late.len());
    assert_eq!(l["preexisting"], 0);
    assert_eq!(l["opened"], 3);
    assert_eq!(suspect_at(l, "leak_tcp_site").unwrap()["count"], 3);
    assert!(
        report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["pid"] != outside.pid),
        "a process outside the cgroup is not reported"
    );
}

#[test]
fn container_id_and_a_binary_only_the_container_sees() {
    if !common::require_bpf() {
        return;
    }
    let id = format!("{:016x}", std::process::id() as u64 * 0x9e37_79b9).repeat(4);
    let id2 = format!("{}{}", &id[..12], "f".repeat(52));
    let base = format!("sockleak-test-{}-ct", std::process::id());
    let cg = TestCgroup::new(&format!("{base}/docker-{id}.scope"));
    // A private tmpfs in the workload's own mount namespace: the host cannot see the binary.
    let hidden = std::env::temp_dir().join(format!("sockleak-hidden-{}", std::process::id()));
    std::fs::create_dir_all(&hidden).unwrap();
    let bin = build_c("sockets");
    let script = format!(
        "mount -t tmpfs none {h} && cp {b} {h}/app && exec {h}/app",
        h = hidden.display(),
        b = bin.display()
    );
    let mut w = in_cgroup(
        &cg,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    );
    w.expect("ready");
    assert!(
        !Path::new(&hidden).join("app").exists(),
        "invisible from the host"
    );

    let t = Trace::start(&[
        "--container",
        &id[..12],
        "--interval",
        "0.5",
        "--min-age",
        "0",
    ]);
    w.cmd("leak 3");
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["container"], id);
    let s = suspect_at(p, "leak_tcp_site").expect("symbolized through /proc/PID/map_files");
    assert_eq!(s["count"], 3);

    // A second container sharing the 12-char prefix: the prefix is now ambiguous.
    let cg2 = TestCgroup::new(&format!("{base}/docker-{id2}.scope"));
    let mut w2 = in_cgroup(&cg2, &[bin.to_str().unwrap()]);
    w2.expect("ready");
    let out = Command::new(sockleak_bin())
        .args(["trace", "--container", &id[..12]])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("matches 2 containers"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // An id that matches nothing lists what is running.
    let out = Command::new(sockleak_bin())
        .args(["trace", "--container", "0123456789ab"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("matches no running container") && err.contains(&id[..12]),
        "{err}"
    );
    drop(w);
    drop(w2);
    let _ = std::fs::remove_dir(&hidden);
}
