//! Call sites in real runtimes: Node.js and Java through their perf maps, Python 3.12 and a C
//! program without frame pointers through stack copies unwound with DWARF. Node and a JDK are
//! installed by `cargo xtask test`; Python 3.12 is used where the machine has it.

mod common;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::Value;

/// A listener whose backlog completes the workloads' connections (nobody accepts them).
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn workload_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(name)
}

fn only_suspect(p: &Value) -> &Value {
    let s = p["suspects"].as_array().unwrap();
    assert_eq!(s.len(), 1, "one call site, one suspect: {p:#}");
    &s[0]
}

fn assert_peers(s: &Value, port: u16, n: usize) {
    // IPv4-mapped peers of dual-stack sockets (Java's) are written as IPv4, like ss does.
    assert_eq!(
        s["remotes"][0]["endpoint"],
        format!("127.0.0.1:{port}"),
        "{s:#}"
    );
    assert_eq!(s["remotes"][0]["count"], n);
}

/// Traces workload `w` (after "ready") while it leaks once ("go" ... "done"), with `extra`
/// sockleak flags; returns the report and /proc's socket count just before it.
fn leak_round(w: &mut Workload, extra: &[&str]) -> (Value, usize) {
    let pid = w.pid.to_string();
    let mut args = vec!["--pid", &pid, "--interval", "0.5", "--min-age", "1"];
    args.extend_from_slice(extra);
    let t = Trace::start(&args);
    w.cmd_no_reply("go").unwrap();
    w.expect("done");
    sleep_ms(1500);
    // Wait until the process's sockets stop changing: with --java-perfmap, sockleak's jcmd
    // makes the JVM open its attach listener (and accept jcmd's connection), which on a loaded
    // machine can finish after the leak did.
    let mut truth = proc_socket_fds(w.pid).len();
    for _ in 0..20 {
        sleep_ms(500);
        let now = proc_socket_fds(w.pid).len();
        if now == truth {
            break;
        }
        truth = now;
    }
    (t.stop(), truth)
}

#[test]
fn node_leak_is_one_suspect_at_a_javascript_frame() {
    if !require_bpf() {
        return;
    }
    let (_l, port) = listener();
    let mut w = Workload::spawn(
        Command::new("node")
            .args(["--perf-basic-prof", "--interpreted-frames-native-stack"])
            // The perf map still goes to /tmp; V8's own log would land in the working tree.
            .args(["--logfile=/dev/null", "--no-logfile-per-isolate"])
            .arg(workload_path("leak.js"))
            .args([port.to_string(), "60".into()]),
    );
    w.expect("ready");
    let (report, truth) = leak_round(&mut w, &[]);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    // Interpreted and optimized code of one function (different addresses, different raw
    // stacks) is one call site.
    let s = only_suspect(p);
    assert_eq!(s["count"], 60, "{s:#}");
    assert_peers(s, port, 60);
    let site = s["call_site"].as_str().expect("a call site");
    let func = site.split(' ').next().unwrap();
    assert!(
        symbols(&s["stack"])
            .iter()
            .any(|f| f.starts_with("JS:") && f.contains(func)),
        "call site {site} is a JavaScript frame: {s:#}"
    );
    // net.connect makes the socket on a later tick: the report says so.
    assert!(
        s["call_site_note"].as_str().unwrap_or("").contains("tick"),
        "{s:#}"
    );
}

/// Compiles Leak.java once per test run.
fn leak_class_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("java-{}", std::process::id()));
    if !dir.join("Leak.class").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .arg(workload_path("Leak.java"))
            .status()
            .expect("javac runs (a JDK; cargo xtask test installs it)");
        assert!(st.success(), "compiling Leak.java");
    }
    dir
}

#[test]
fn java_call_site_is_the_leaking_method_with_java_perfmap() {
    if !require_bpf() {
        return;
    }
    let (_l, port) = listener();
    // Frame pointers through Java code, and the leaking method compiled (as code that leaks
    // often is) and kept a frame of its own.
    let mut w = Workload::spawn(
        Command::new("java")
            .args([
                "-XX:+PreserveFramePointer",
                "-Xcomp",
                "-XX:CompileCommand=quiet",
                "-XX:CompileCommand=compileonly,Leak::*",
                "-XX:CompileCommand=dontinline,Leak::openLeakyConnection",
                "-cp",
            ])
            .arg(leak_class_dir())
            .args(["Leak", &port.to_string(), "30"]),
    );
    w.expect("ready");
    let pid = w.pid.to_string();
    let perf_map = format!("/tmp/perf-{pid}.map");

    // Without --java-perfmap sockleak does not touch the JVM: no map, and the report says
    // which flag names the frames.
    let (report, _) = leak_round(&mut w, &["--min-count", "1"]);
    assert!(
        !Path::new(&perf_map).exists(),
        "the JVM was asked for a map"
    );
    let p = process(&report, w.pid);
    let suspects = p["suspects"].as_array().unwrap();
    // Unnamed stacks cannot be told to be one call site: each is its own suspect.
    let total: u64 = suspects.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 30, "{p:#}");
    // Compiled frames go unnamed with the note; a socket made while the method still ran in
    // the interpreter is named from the JVM (tests/interpreted.rs).
    for s in suspects {
        let interpreted = s["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["runtime"] == "java" && f["symbol"] == "Leak.openLeakyConnection(int)");
        if interpreted {
            assert_eq!(s["call_site"], "Leak.openLeakyConnection", "{s:#}");
            continue;
        }
        assert_eq!(s["call_site"], Value::Null, "{s:#}");
        assert!(
            s["call_site_note"]
                .as_str()
                .unwrap_or("")
                .contains("--java-perfmap"),
            "{s:#}"
        );
    }

    let (report, truth) = leak_round(&mut w, &["--java-perfmap"]);
    let _ = std::fs::remove_file(&perf_map);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    let s = suspect_at(p, "void Leak.openLeakyConnection(int)").unwrap_or_else(|| panic!("{p:#}"));
    assert_eq!(s["count"], 30, "{s:#}");
    assert_eq!(s["call_site"], "Leak.openLeakyConnection", "{s:#}");
    assert_peers(s, port, 30);
}

/// pyenv's Python 3.12 (or newer), or one on PATH.
fn python312() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut found: Vec<PathBuf> = std::fs::read_dir(Path::new(&home).join(".pyenv/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().into_owned();
            let minor: u32 = v.strip_prefix("3.")?.split('.').next()?.parse().ok()?;
            (minor >= 12).then(|| e.path().join("bin/python3"))
        })
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.into_iter().next().or_else(|| {
        ["python3.12", "python3.13"].iter().find_map(|n| {
            let out = Command::new("which").arg(n).output().ok()?;
            let p = String::from_utf8(out.stdout).ok()?;
            (!p.trim().is_empty()).then(|| PathBuf::from(p.trim()))
        })
    })
}

#[test]
fn python_function_names_with_x_perf() {
    if !require_bpf() {
        return;
    }
    let Some(python) = python312() else {
        eprintln!("SKIPPED: no Python 3.12+ here (pyenv or PATH); -X perf needs 3.12");
        return;
    };
    let (_l, port) = listener();
    let mut w = Workload::spawn(
        Command::new(&python)
            .args(["-X", "perf"])
            .arg(workload_path("leak.py"))
            .args([port.to_string(), "50".into()]),
    );
    w.expect("ready");
    let (report, truth) = leak_round(&mut w, &[]);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    // CPython is built without frame pointers: its stacks are copied and unwound with DWARF,
    // through the -X perf trampolines that name each Python function.
    let s = only_suspect(p);
    assert_eq!(s["count"], 50, "{s:#}");
    let frames = symbols(&s["stack"]);
    // The leaking function is named; its callers are there when the copied 16 KiB of stack
    // reaches them (CPython's C frames are large), so they are not asserted.
    assert!(
        frames
            .iter()
            .any(|s| s.starts_with("py::") && s.contains("::open_leaky_connection:")),
        "{frames:#?}"
    );
    // The interpreter's frame chain names it too, with its line.
    assert!(
        s["call_site"]
            .as_str()
            .unwrap_or("")
            .starts_with("open_leaky_connection (leak.py"),
        "{s:#}"
    );
    assert_peers(s, port, 50);
}

#[test]
fn c_without_frame_pointers_unwinds_with_dwarf() {
    if !require_bpf() {
        return;
    }
    let bin = build_c_opts("nofp", &["-g", "-O2", "-fomit-frame-pointer"], &[]);
    let mut w = Workload::spawn(&mut Command::new(bin));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    // The first stack shows the frame-pointer walk falls short; later ones are copied.
    w.cmd("warm");
    t.wait_log("DWARF");
    assert_eq!(w.cmd("leak 40"), vec![40]);
    sleep_ms(1500);
    let truth = proc_socket_fds(w.pid).len();
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    let s = suspect_at(p, "leak_here").unwrap_or_else(|| panic!("{p:#}"));
    assert_eq!(s["count"], 40, "{s:#}");
    let frames = symbols(&s["stack"]);
    let at = |f: &str| frames.iter().position(|x| x == f);
    let (leak, caller, main) = (at("leak_here"), at("open_connections"), at("main"));
    assert!(
        leak.is_some() && leak < caller && caller < main,
        "leak_here, then its caller, then main: {frames:#?}"
    );
    assert!(
        s["call_site"]
            .as_str()
            .unwrap_or("")
            .starts_with("leak_here"),
        "{s:#}"
    );
}
