//! Stacks of code built without frame pointers, walked in the kernel with compiled CFI tables:
//! the same call sites as the frame-pointer build of the same source, a fallback that says so
//! where code has no CFI, and address-space changes (exec, dlclose) while tables are built.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::Value;

const NO_FP: &[&str] = &["-g", "-O2", "-fomit-frame-pointer"];
const FP: &[&str] = &[
    "-g",
    "-O2",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
];

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(name)
}

fn gcc(args: &[&str]) {
    let st = Command::new("gcc").args(args).status().expect("gcc runs");
    assert!(st.success(), "gcc {args:?}");
}

/// A fresh directory for one build.
fn build_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sockleak-unwind-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// libsockleak_unwind.so and the program calling it, both with `flags`.
fn build_lib_and_app(tag: &str, flags: &[&str]) -> PathBuf {
    let d = build_dir(tag);
    let lib = d.join("libsockleak_unwind.so");
    let app = d.join("app");
    let (lib_s, app_s, dir_s) = (
        lib.to_str().unwrap(),
        app.to_str().unwrap(),
        d.to_str().unwrap(),
    );
    let src = workload("unwind_lib.c");
    let mut a: Vec<&str> = flags.to_vec();
    a.extend(["-shared", "-fPIC", "-o", lib_s, src.to_str().unwrap()]);
    gcc(&a);
    let src = workload("unwind_app.c");
    let rpath = format!("-Wl,-rpath,{dir_s}");
    let mut a: Vec<&str> = flags.to_vec();
    a.extend(["-o", app_s, src.to_str().unwrap(), "-L", dir_s]);
    a.extend(["-lsockleak_unwind", &rpath]);
    gcc(&a);
    app
}

/// (call site, count, frames up to the program's start) of each suspect, sorted.
fn sites(p: &Value) -> Vec<(String, u64, Vec<String>)> {
    let mut v: Vec<_> = p["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["call_site"].as_str().unwrap_or("").to_string(),
                s["count"].as_u64().unwrap(),
                symbols(&s["stack"]),
            )
        })
        .collect();
    v.sort();
    v
}

fn in_order(frames: &[String], want: &[&str]) -> bool {
    let mut at = 0;
    for w in want {
        match frames[at..].iter().position(|f| f == w) {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

/// Runs the library program under sockleak (default settings): a warm-up socket from the
/// library, then `tcp` and `udp` sockets leaked through their three-deep paths.
fn leak_through_library(app: &Path, switches: bool) -> (Value, u32, usize) {
    let mut w = Workload::spawn(&mut Command::new(app));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    assert_eq!(w.cmd("warm"), vec![1]);
    if switches {
        // Its first frame-pointer stack stops short: sockleak switches it to DWARF.
        t.wait_log("unwinding its stacks with DWARF");
    } else {
        sleep_ms(300);
    }
    assert_eq!(w.cmd("tcp 30"), vec![30]);
    assert_eq!(w.cmd("udp 20"), vec![20]);
    sleep_ms(1500);
    let truth = proc_socket_fds(w.pid).len();
    (t.stop(), w.pid, truth)
}

#[test]
fn library_without_frame_pointers_has_the_call_sites_of_the_frame_pointer_build() {
    if !require_bpf() {
        return;
    }
    let fp = build_lib_and_app("fp", FP);
    let nofp = build_lib_and_app("nofp", NO_FP);
    let (fp_report, fp_pid, fp_truth) = leak_through_library(&fp, false);
    let (report, pid, truth) = leak_through_library(&nofp, true);

    let want = sites(process(&fp_report, fp_pid));
    assert_eq!(process(&fp_report, fp_pid)["live_sockets"], fp_truth);
    let got = sites(process(&report, pid));
    assert_eq!(process(&report, pid)["live_sockets"], truth);
    // The frame-pointer build names both leaking functions and their callers...
    assert_eq!(want.len(), 2, "{want:#?}");
    let tcp = want
        .iter()
        .find(|s| s.0.starts_with("lib_leak_tcp"))
        .unwrap();
    let udp = want
        .iter()
        .find(|s| s.0.starts_with("lib_leak_udp"))
        .unwrap();
    assert_eq!((tcp.1, udp.1), (30, 20));
    assert!(
        in_order(&tcp.2, &["lib_leak_tcp", "tcp3", "tcp2", "tcp1", "main"]),
        "{tcp:#?}"
    );
    assert!(
        in_order(&udp.2, &["lib_leak_udp", "udp3", "udp2", "udp1", "main"]),
        "{udp:#?}"
    );
    // ... and the build without frame pointers gives exactly the same: call sites, counts and
    // every frame.
    assert_eq!(got, want);

    // Walked in the kernel, every one: no copy, nothing lost.
    let p = process(&report, pid);
    assert_eq!(p["stack_fallbacks"], serde_json::json!([]), "{p:#}");
    let tables = &report["own_cost"]["unwind_tables"];
    assert!(tables["walked"].as_u64().unwrap() >= 50, "{tables:#}");
    assert_eq!(tables["fallbacks"], 0, "{tables:#}");
    assert!(
        tables["files"].as_u64().unwrap() >= 3,
        "program, library, libc: {tables:#}"
    );
    assert_eq!(report["lost"]["stack_lost"], 0);
    // The own-cost line's BPF figure was measured in its first window.
    assert!(
        report["own_cost"]["bpf_ns_per_socket"].as_f64().is_some(),
        "{:#}",
        report["own_cost"]
    );
}

#[test]
fn code_without_cfi_falls_back_to_a_copy_and_says_so() {
    if !require_bpf() {
        return;
    }
    let d = build_dir("nocfi");
    let bin = d.join("nocfi");
    let src = workload("nocfi.c");
    let mut a = NO_FP.to_vec();
    a.extend(["-o", bin.to_str().unwrap(), src.to_str().unwrap()]);
    gcc(&a);
    let mut w = Workload::spawn(&mut Command::new(&bin));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::start(&["--pid", &pid, "--interval", "0.5", "--min-age", "1"]);
    assert_eq!(w.cmd("cfi 1"), vec![1]);
    t.wait_log("unwinding its stacks with DWARF");
    assert_eq!(w.cmd("cfi 20"), vec![20]);
    assert_eq!(w.cmd("nocfi 15"), vec![15]);
    // The log names the place once, as it happens.
    let line = t.wait_log("the kernel cannot walk its stack at asm_open");
    assert!(line.contains("no CFI"), "{line}");
    sleep_ms(1500);
    let truth = proc_socket_fds(w.pid).len();
    let report = t.stop();
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);

    // One call site (open_tcp), whichever path reached it: its stacks through the assembly
    // are complete, unwound from copies in userspace; the C-only ones walked in the kernel.
    let s = suspect_at(p, "open_tcp").unwrap_or_else(|| panic!("{p:#}"));
    assert_eq!(s["count"], 36, "{s:#}");
    let mut stacks: Vec<(u64, Vec<String>)> =
        vec![(s["stack_count"].as_u64().unwrap(), symbols(&s["stack"]))];
    for o in s["other_stacks"].as_array().unwrap() {
        stacks.push((o["count"].as_u64().unwrap(), symbols(&o["stack"])));
    }
    let with = |f: &str| stacks.iter().find(|(_, st)| st.iter().any(|x| x == f));
    let (n, through) = with("asm_open").unwrap_or_else(|| panic!("{stacks:#?}"));
    assert_eq!(*n, 15);
    assert!(
        in_order(through, &["open_tcp", "asm_open", "through_asm", "main"]),
        "{through:#?}"
    );
    let (n, direct) = with("direct").unwrap_or_else(|| panic!("{stacks:#?}"));
    assert_eq!(*n, 20);
    assert!(
        in_order(direct, &["open_tcp", "direct", "main"]),
        "{direct:#?}"
    );

    // The report says which stacks fell back, why and where.
    let fallbacks = p["stack_fallbacks"].as_array().unwrap();
    assert_eq!(fallbacks.len(), 1, "{fallbacks:#?}");
    assert_eq!(fallbacks[0]["reason"], "no CFI");
    assert_eq!(fallbacks[0]["count"], 15);
    let at = fallbacks[0]["at"].as_str().unwrap();
    assert!(
        at.starts_with("asm_open+") && at.ends_with(bin.to_str().unwrap()),
        "{at}"
    );
    let warned = p["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("no CFI at asm_open+"));
    assert!(warned, "{:#}", p["warnings"]);
    let tables = &report["own_cost"]["unwind_tables"];
    assert_eq!(tables["fallbacks"], 15, "{tables:#}");
    assert!(tables["walked"].as_u64().unwrap() >= 20, "{tables:#}");
    assert_eq!(report["lost"]["stack_lost"], 0);
}

#[test]
fn exec_and_dlclose_while_tables_load_leave_sockleak_running() {
    if !require_bpf() {
        return;
    }
    let d = build_dir("churn");
    let bin = d.join("maps_churn");
    let src = workload("maps_churn.c");
    let mut a = NO_FP.to_vec();
    a.extend(["-o", bin.to_str().unwrap(), src.to_str().unwrap(), "-ldl"]);
    gcc(&a);
    // Two distinct libraries (distinct build ids) that dlopen places at the same address in
    // turn.
    let mut libs = Vec::new();
    for tag in ["A", "B"] {
        let lib = d.join(format!("lib{tag}.so"));
        let src = workload("unwind_lib.c");
        let define = format!("-DVARIANT_{tag}");
        let mut a = NO_FP.to_vec();
        a.extend([
            define.as_str(),
            "-shared",
            "-fPIC",
            "-o",
            lib.to_str().unwrap(),
            src.to_str().unwrap(),
        ]);
        gcc(&a);
        libs.push(lib);
    }
    let mut w = Workload::spawn(Command::new(&bin).args([
        "dlopen",
        libs[0].to_str().unwrap(),
        libs[1].to_str().unwrap(),
        "20000",
    ]));
    w.expect("ready");
    let pid = w.pid.to_string();
    // DWARF from the start: every new image is registered for tables as it appears.
    let t = Trace::start(&[
        "--pid",
        &pid,
        "--stack-mode",
        "dwarf",
        "--interval",
        "0.3",
        "--min-age",
        "0",
    ]);
    // It forks a chain of 300 execs (each making a socket first), traced from birth, and
    // loads and unloads the libraries.
    w.cmd_no_reply("go").unwrap();
    let chain: u32 = w.expect("chain").parse().unwrap();
    w.expect("done");
    // The chain's last image has argv "exec 0".
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read(format!("/proc/{chain}/cmdline"))
        .is_ok_and(|c| c.ends_with(b"exec\x000\x00"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec chain did not finish"
        );
        sleep_ms(50);
    }
    sleep_ms(1000);
    // Once the address space settles, its stacks are walked in the kernel: a few sockets made
    // then, a while apart (the churn's own may all fall back, as its libraries come and go
    // faster than tables are built).
    const SETTLED: u64 = 5;
    for _ in 0..SETTLED {
        w.cmd("socket");
        sleep_ms(300);
    }
    let truth = proc_socket_fds(w.pid).len();
    let chain_truth = proc_socket_fds(chain).len();
    let (out, err) = t.stop_output();
    assert!(!err.contains("panicked"), "{err}");
    let report: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["type"] == "report")
        .expect("a report");
    let p = process(&report, w.pid);
    assert_eq!(p["live_sockets"], truth);
    assert_eq!(p["opened"], 20000 + SETTLED, "{p:#}");
    assert_eq!(report["lost_events"], 0);
    let c = process(&report, chain);
    assert_eq!(c["live_sockets"], chain_truth, "{c:#}");
    assert_eq!(chain_truth, 1, "the last image keeps its socket");
    let tables = &report["own_cost"]["unwind_tables"];
    assert!(tables["walked"].as_u64().unwrap() > 0, "{tables:#}");
}
