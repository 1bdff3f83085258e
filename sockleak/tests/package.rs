//! The Debian package from `cargo xtask dist`: installed with dpkg on this machine, it traces a
//! workload with no Rust toolchain involved, then removes cleanly. `cargo xtask test` builds the
//! package and names it in SOCKLEAK_DEB.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use common::{Workload, build_c, proc_socket_fds};

fn dpkg(args: &[&str]) -> (bool, String) {
    let out = Command::new("dpkg").args(args).output().expect("dpkg runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Removes the package however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "sockleak"]).output();
    }
}

#[test]
fn deb_installs_traces_and_removes_cleanly() {
    if !common::require_bpf() {
        return;
    }
    let Some(deb) = std::env::var_os("SOCKLEAK_DEB") else {
        let reason = "SOCKLEAK_DEB is not set: run through `cargo xtask test`, which builds the package with `cargo xtask dist`";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: {reason}");
        }
        eprintln!("SKIPPED: {reason}");
        return;
    };
    let deb = Path::new(&deb);
    assert!(deb.exists(), "{}", deb.display());
    let (was_installed, _) = dpkg(&["-s", "sockleak"]);
    assert!(
        !was_installed,
        "a sockleak package is already installed here; the test would replace it"
    );

    let (ok, out) = dpkg(&["-i", deb.to_str().unwrap()]);
    let _guard = Installed;
    assert!(ok, "dpkg -i: {out}");
    let (_, files) = dpkg(&["-L", "sockleak"]);
    for f in [
        "/usr/bin/sockleak",
        "/lib/systemd/system/sockleak.service",
        "/usr/share/sockleak/prometheus-rules.yaml",
        "/usr/share/sockleak/web-config.example.yml",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in {files}");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/sockleak.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/sockleak serve"), "{unit}");

    let v = Command::new("/usr/bin/sockleak")
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());
    let version = String::from_utf8_lossy(&v.stdout);
    assert!(
        version.starts_with(&format!("sockleak {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // The installed binary does the main job: 5 leaked sockets, at their call site.
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    let mut t = Command::new("/usr/bin/sockleak")
        .args(["trace", "--pid", &w.pid.to_string()])
        .args(["--duration", "3", "--min-age", "0", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(t.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached:") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "sockleak exited before attaching"
        );
    }
    w.cmd("leak 5");
    let out = t.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let p = common::process(&report, w.pid);
    assert_eq!(p["live_sockets"], proc_socket_fds(w.pid).len());
    assert!(
        common::suspect_at(p, "leak_tcp_site").is_some_and(|s| s["count"] == 5),
        "{p:#}"
    );

    let (ok, out) = dpkg(&["--purge", "sockleak"]);
    assert!(ok, "dpkg --purge: {out}");
    for f in [
        "/usr/bin/sockleak",
        "/lib/systemd/system/sockleak.service",
        "/usr/share/sockleak",
    ] {
        assert!(!Path::new(f).exists(), "{f} left behind");
    }
    let (installed, _) = dpkg(&["-s", "sockleak"]);
    assert!(!installed);
}
