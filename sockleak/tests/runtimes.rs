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

/// The README's node flags.
const NODE_FLAGS: &[&str] = &["--perf-basic-prof", "--interpreted-frames-native-stack"];

/// Runs tests/workloads/leak.js in `mode` against `port` with `n` connections, under `flags`,
/// traced; returns the report, /proc's socket count and the pid. V8's own log goes to an
/// unlinked temporary file (`--logfile=+`): the working directory is checked to stay empty.
fn node_round(flags: &[&str], mode: &str, port: u16, n: usize) -> (Value, usize, u32) {
    let cwd = tempfile::tempdir().unwrap();
    let mut w = Workload::spawn(
        Command::new("node")
            .current_dir(cwd.path())
            .args(flags)
            .args(["--logfile=+", "--no-logfile-per-isolate"])
            .arg(workload_path("leak.js"))
            .args([port.to_string(), n.to_string(), mode.to_string()]),
    );
    w.expect("ready");
    let (report, truth) = leak_round(&mut w, &[]);
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "node left files behind: {left:?}");
    (report, truth, w.pid)
}

/// Where leak.js asks for its connections in `mode`, as a call site: V8 names a function by
/// the line it starts on.
fn js_site(function: &str, mode: &str) -> String {
    format!(
        "{function} (leak.js:{})",
        source_line("leak.js", &format!("// origin:{mode}"))
    )
}

fn assert_node_origin(s: &Value, want: &str) {
    assert_eq!(s["call_site"], want, "{s:#}");
    let o = &s["origin_call"];
    assert_eq!(o["join"], "node-handle", "{s:#}");
    assert_eq!(o["call_site"], want, "{s:#}");
    let func = want.split(' ').next().unwrap();
    assert!(
        symbols(&o["stack"])
            .iter()
            .any(|f| f.starts_with("JS:") && f.contains(func)),
        "the origin stack holds the JavaScript function: {s:#}"
    );
    // The socket's own stack is Node's later tick; no node: frame is the call site.
    assert!(
        s["call_site_note"]
            .as_str()
            .unwrap_or("")
            .contains("later tick"),
        "{s:#}"
    );
}

#[test]
fn node_connect_is_named_at_the_function_that_called_it() {
    if !require_bpf() {
        return;
    }
    let (_l, port) = listener();
    let (report, truth, pid) = node_round(NODE_FLAGS, "net", port, 60);
    let p = process(&report, pid);
    assert_eq!(p["live_sockets"], truth);
    // Interpreted and optimized code of one function (different addresses, different raw
    // stacks) is one call site; the socket was made on a later tick, the handle on the user's.
    let s = only_suspect(p);
    assert_eq!(s["count"], 60, "{s:#}");
    assert_peers(s, port, 60);
    assert_node_origin(s, &js_site("openLeakyConnection", "net"));
}

#[test]
fn node_with_perf_basic_prof_alone_names_compiled_calls_and_says_what_names_the_rest() {
    if !require_bpf() {
        return;
    }
    let (_l, port) = listener();
    let (report, truth, pid) = node_round(&["--perf-basic-prof"], "net", port, 60);
    let p = process(&report, pid);
    assert_eq!(p["live_sockets"], truth);
    let want = js_site("openLeakyConnection", "net");
    let suspects = p["suspects"].as_array().unwrap();
    let named = suspects
        .iter()
        .find(|s| s["call_site"] == want.as_str())
        .unwrap_or_else(|| panic!("no suspect at {want}: {p:#}"));
    assert_node_origin(named, &want);
    // The first calls run in V8's interpreter, which only --interpreted-frames-native-stack
    // names: they are one group, never a node: frame, and the report says which flag names
    // them. Measured: 10 to 12 of 60 on node 20.
    let rest: Vec<&Value> = suspects
        .iter()
        .filter(|s| s["call_site"] != want.as_str())
        .collect();
    assert!(rest.len() <= 1, "the unnamed calls are one group: {p:#}");
    let mut total = named["count"].as_u64().unwrap();
    for s in rest {
        assert_eq!(s["call_site"], Value::Null, "{s:#}");
        assert!(
            s["call_site_note"]
                .as_str()
                .unwrap_or("")
                .contains("--interpreted-frames-native-stack"),
            "{s:#}"
        );
        total += s["count"].as_u64().unwrap();
    }
    assert!(named["count"].as_u64().unwrap() >= 40, "{p:#}");
    assert_eq!(total, 60, "{p:#}");
}

#[test]
fn node_http_get_is_named_at_the_function_that_called_it() {
    if !require_bpf() {
        return;
    }
    let mut server = Workload::spawn(&mut Command::new(build_go("httpserver")));
    let addr = server.expect("listening");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let (report, truth, pid) = node_round(NODE_FLAGS, "http", port, 60);
    let p = process(&report, pid);
    assert_eq!(p["live_sockets"], truth);
    // Each request's keep-alive Agent holds its idle socket.
    let s = only_suspect(p);
    assert_eq!(s["count"], 60, "{s:#}");
    assert_peers(s, port, 60);
    assert_node_origin(s, &js_site("openLeakyRequest", "http"));
}

#[test]
fn node_happy_eyeballs_retry_inherits_the_connection_it_replaces() {
    if !require_bpf() {
        return;
    }
    // ::1 refused (the listener is IPv4 only): Node makes a new handle for 127.0.0.1 on a
    // later tick, from its own code.
    let (_l, port) = listener();
    let (report, truth, pid) = node_round(NODE_FLAGS, "dual", port, 20);
    let p = process(&report, pid);
    assert_eq!(p["live_sockets"], truth);
    let s = only_suspect(p);
    assert_eq!(s["count"], 20, "{s:#}");
    assert_peers(s, port, 20);
    let want = js_site("openDualStackConnection", "dual");
    assert_eq!(s["call_site"], want.as_str(), "{s:#}");
    assert!(
        s["call_site_note"]
            .as_str()
            .unwrap_or("")
            .contains("happy eyeballs"),
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
