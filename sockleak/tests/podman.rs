//! A real container runtime: podman with runc (Docker's engine does not run on these machines;
//! crun refuses the hybrid cgroup layout). A statically linked leaker runs in a bare rootfs (no
//! image registry needed), with explicit ulimits (the runtime may not raise them here).

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{Trace, build_c_opts, proc_socket_fds, process, sleep_ms, symbols};

/// podman and runc can run a container here; in CI their absence fails the test.
fn require_podman() -> bool {
    if !common::require_bpf() {
        return false;
    }
    let works = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["podman", "runc"]
        .into_iter()
        .filter(|b| !works(b))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{} not installed: `cargo xtask test` installs them (apt-get install podman runc)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// A running container, removed when dropped.
struct Container {
    id: String,
    pid: u32,
    rootfs: PathBuf,
}

impl Container {
    fn run(rootfs: &Path, args: &[&str]) -> Container {
        let out = Command::new("podman")
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "run",
                "-d",
            ])
            .args(["--network", "host"])
            .args(["--ulimit", "nofile=512:512", "--ulimit", "nproc=4096:4096"])
            .arg("--rootfs")
            .arg(rootfs)
            .args(args)
            .output()
            .expect("podman runs");
        assert!(
            out.status.success(),
            "podman run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let pid = Command::new("podman")
            .args(["inspect", "-f", "{{.State.Pid}}", &id])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .expect("the container's host pid");
        Container {
            id,
            pid,
            rootfs: rootfs.to_path_buf(),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.id])
            .output();
        let _ = std::fs::remove_dir_all(&self.rootfs);
    }
}

#[test]
fn podman_container_by_id_prefix() {
    if !require_podman() {
        return;
    }
    let bin = build_c_opts(
        "container_leak",
        &["-static", "-g", "-O0", "-fno-omit-frame-pointer"],
        &[],
    );
    let rootfs = std::env::temp_dir().join(format!("sockleak-rootfs-{}", std::process::id()));
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(&bin, rootfs.join("leaker")).unwrap();
    let c = Container::run(&rootfs, &["/leaker", "450"]);
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).unwrap();
    assert!(
        cgroup.contains(&format!("/libpod_parent/libpod-{}", c.id)),
        "{cgroup}"
    );

    let t = Trace::start(&[
        "--container",
        &c.id[..12],
        "--interval",
        "0.5",
        "--min-age",
        "1",
    ]);
    std::fs::write(rootfs.join("go"), "").unwrap();
    let mut truth = 0;
    for _ in 0..100 {
        truth = proc_socket_fds(c.pid).len();
        if truth == 450 {
            break;
        }
        sleep_ms(50);
    }
    assert_eq!(truth, 450);
    sleep_ms(1500);
    let report = t.stop();
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{report:#}");
    let p = process(&report, c.pid);
    assert_eq!(p["ns_pid"], 1, "the container's init");
    assert_eq!(p["container"], c.id.as_str());
    assert_eq!(p["live_sockets"], proc_socket_fds(c.pid).len());
    assert_eq!(p["fd_limit"]["soft"], 512);

    // The binary exists only inside the container's rootfs view (/leaker): it is symbolized.
    let s = &p["suspects"][0];
    assert_eq!(s["count"], 450, "{p:#}");
    assert!(
        s["call_site"]
            .as_str()
            .unwrap_or("")
            .starts_with("leak_in_container (container_leak.c:"),
        "{s:#}"
    );
    assert!(symbols(&s["stack"]).iter().any(|f| f == "main"));

    // 450 of 512 fds: the limit is the problem, and the fix is the container's.
    let d = common::diagnosis(p, "fd-limit-too-low");
    let fix = d["fix"].as_str().unwrap();
    assert!(fix.contains("podman run --ulimit nofile="), "{fix}");
    assert!(
        common::evidence_has(d, &format!("podman container ({})", &c.id[..12])),
        "{d:#}"
    );
    assert_eq!(p["limit_advice"], d["fix"]);
}
