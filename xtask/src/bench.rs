//! `cargo xtask bench`: sockleak's cost, side by side with bpftrace scripts doing the minimal
//! version of its job, in the same run. The deciding figure is the BPF programs' own run time
//! per socket lifecycle (`kernel.bpf_stats_enabled=1`, summed over each tool's programs), which
//! stays stable on a noisy machine; end-to-end time and sockleak's own userspace CPU per
//! lifecycle are shown beside it. Rounds are interleaved across configurations; medians are
//! reported. Not run in CI.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    bpfstats::{self, ProgStat, StatsOn},
    procs::{
        Churn, CpuMeter, Tracer, build_release, machine, median, reported_live, rss_kib, socket_fds,
    },
    util::workspace_root,
};

/// The bpftrace peers. `ustack`: a stack per socket; `connect`: also count connects.
fn bpftrace_script(pid: u32, ustack: bool, connect: bool) -> String {
    let value = if ustack { "ustack" } else { "nsecs" };
    let mut s = format!(
        "BEGIN {{ printf(\"attached\\n\"); }}\n\
         tracepoint:syscalls:sys_exit_socket /pid == {pid}/ {{ @s[pid, args->ret] = {value}; }}\n\
         tracepoint:syscalls:sys_enter_close /pid == {pid}/ {{ delete(@s[pid, args->fd]); }}\n"
    );
    if connect {
        let _ = writeln!(
            s,
            "tracepoint:syscalls:sys_exit_connect /pid == {pid}/ {{ @c[pid] = count(); }}"
        );
        s.push_str("END { clear(@s); clear(@c); }");
    } else {
        s.push_str("END { clear(@s); }");
    }
    s
}

#[derive(Clone, Debug, PartialEq)]
enum Tool {
    Baseline,
    Sockleak(Vec<String>),
    Bpftrace {
        ustack: bool,
        connect: bool,
    },
    /// An empty bpftrace uprobe on a function of the workload: what the trap alone costs.
    EmptyUprobe(&'static str),
}

/// The program a configuration runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bin {
    /// churn, built with frame pointers.
    Fp,
    /// churn_nofp: the same source built without them.
    NoFp,
    /// CPython 3.11 (Debian's, built without frame pointers) running pyloop.py.
    Python,
}

#[derive(Clone, Debug)]
struct Cfg {
    name: &'static str,
    tool: Tool,
    bin: Bin,
}

fn cfg(name: &'static str, tool: Tool) -> Cfg {
    Cfg {
        name,
        tool,
        bin: Bin::Fp,
    }
}

fn cfg_on(bin: Bin, name: &'static str, tool: Tool) -> Cfg {
    Cfg { name, tool, bin }
}

fn sockleak_args(extra: &[&str]) -> Tool {
    Tool::Sockleak(extra.iter().map(|s| s.to_string()).collect())
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Run {
    /// End-to-end ns per lifecycle.
    e2e_ns: f64,
    /// BPF run time per lifecycle, all of the tool's programs.
    bpf_ns: f64,
    /// The tool's userspace CPU per lifecycle (sockleak only).
    cpu_ns: f64,
    /// Share of lifecycles whose stack was lost (sockleak's `lost.stack_lost`).
    stack_lost: f64,
    /// Stacks walked in the kernel with unwind tables, and walks that fell back to a copy
    /// (the report's `own_cost.unwind_tables`).
    walked: f64,
    fallbacks: f64,
    /// Symbols of the first suspect's stack (the leaked sockets' call site).
    leak_stack: Vec<String>,
    progs: BTreeMap<String, ProgStat>,
}

/// Where the tool looks: the workload itself, or another process.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Workload,
    Other,
    OtherCgroup,
}

fn start_tool(
    sockleak: &Path,
    tool: &Tool,
    pid: u32,
    cgroup: Option<&str>,
) -> Result<Option<Tracer>> {
    Ok(match tool {
        Tool::Baseline => None,
        Tool::Sockleak(extra) => {
            let mut c = Command::new(sockleak);
            c.args([
                "--log",
                "info",
                "trace",
                "--format",
                "json",
                "--interval",
                "3600",
            ]);
            match cgroup {
                Some(cg) => c.args(["--cgroup", cg]),
                None if extra.iter().any(|a| a == "--all") => &mut c,
                None => c.args(["--pid", &pid.to_string()]),
            };
            c.args(extra);
            Some(Tracer::start(&mut c, "attached:")?)
        }
        Tool::Bpftrace { ustack, connect } => Some(Tracer::start(
            Command::new("bpftrace").args(["-e", &bpftrace_script(pid, *ustack, *connect)]),
            "attached",
        )?),
        Tool::EmptyUprobe(func) => {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
            let script = format!(
                "BEGIN {{ printf(\"attached\\n\"); }}\nuprobe:{}:\"{func}\" /pid == {pid}/ {{ }}",
                exe.display()
            );
            Some(Tracer::start(
                Command::new("bpftrace").args(["-e", &script]),
                "attached",
            )?)
        }
    })
}

/// One run: the workload waits, the tool attaches, the workload runs `ops` lifecycles.
#[allow(clippy::too_many_arguments)]
fn one_run(
    sockleak: &Path,
    churn: &Path,
    prog: Option<&[String]>,
    args: &[&str],
    ops: u64,
    tool: &Tool,
    target: Target,
) -> Result<Run> {
    let mut w = match prog {
        Some(p) => Churn::start_cmd(Command::new(&p[0]).args(&p[1..]).args(args))?,
        None => Churn::start(churn, args)?,
    };
    let other = match target {
        Target::Workload => None,
        _ => Some(Churn::start(churn, &["leak", "1"])?),
    };
    let cgroup = match (&other, target) {
        (Some(o), Target::OtherCgroup) => Some(BenchCgroup::new(o.pid)?),
        _ => None,
    };
    let traced = other.as_ref().map_or(w.pid, |o| o.pid);
    let before = bpfstats::ids();
    let t = start_tool(
        sockleak,
        tool,
        traced,
        cgroup.as_ref().map(|c| c.rel.as_str()),
    )?;
    let meter = t
        .as_ref()
        .filter(|_| matches!(tool, Tool::Sockleak(_)))
        .map(|t| CpuMeter::new(t.pid));
    // Past start-up work (seeding, the first interval's reads) before measuring.
    std::thread::sleep(Duration::from_millis(1000));
    let s0 = bpfstats::since(&before);
    let c0 = meter.as_ref().and_then(CpuMeter::seconds);
    w.go()?;
    let e2e_ns = w.result(Duration::from_secs(600))?;
    let s1 = bpfstats::since(&before);
    let c1 = meter.as_ref().and_then(CpuMeter::seconds);
    let mut stack_lost = f64::NAN;
    let (mut walked, mut fallbacks) = (f64::NAN, f64::NAN);
    let mut leak_stack = Vec::new();
    if let Some(t) = t {
        if matches!(tool, Tool::Sockleak(_)) {
            let report = t
                .stop_report()?
                .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .unwrap_or_default();
            stack_lost = report["lost"]["stack_lost"]
                .as_f64()
                .map_or(f64::NAN, |n| n / ops as f64);
            let tables = &report["own_cost"]["unwind_tables"];
            walked = tables["walked"].as_f64().unwrap_or(f64::NAN);
            fallbacks = tables["fallbacks"].as_f64().unwrap_or(f64::NAN);
            leak_stack = first_suspect_stack(&report, w.pid);
        } else {
            t.stop()?;
        }
    }
    let mut progs = BTreeMap::new();
    let mut total = 0u64;
    for (name, end) in s1 {
        let start = s0.get(&name).copied().unwrap_or_default();
        let d = ProgStat {
            run_time_ns: end.run_time_ns.saturating_sub(start.run_time_ns),
            run_cnt: end.run_cnt.saturating_sub(start.run_cnt),
        };
        total += d.run_time_ns;
        if d.run_cnt > 0 {
            progs.insert(name, d);
        }
    }
    let cpu_ns = match (c0, c1, tool) {
        (Some(a), Some(b), Tool::Sockleak(_)) => (b - a) * 1e9 / ops as f64,
        _ => f64::NAN,
    };
    Ok(Run {
        e2e_ns,
        bpf_ns: total as f64 / ops as f64,
        cpu_ns,
        stack_lost,
        walked,
        fallbacks,
        leak_stack,
        progs,
    })
}

/// The symbols of a process's first suspect's stack in a report.
fn first_suspect_stack(report: &serde_json::Value, pid: u32) -> Vec<String> {
    report["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
        .and_then(|p| p["suspects"].get(0))
        .and_then(|s| s["stack"].as_array())
        .map(|st| {
            st.iter()
                .map(|f| {
                    f["symbol"].as_str().map_or_else(
                        || f["addr"].as_str().unwrap_or("?").to_string(),
                        str::to_string,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A cgroup holding one process, for tracing by `--cgroup` (removed after).
struct BenchCgroup {
    dir: PathBuf,
    rel: String,
}

impl BenchCgroup {
    /// A cgroup named `tag` holding `pids`.
    fn holding(tag: &str, pids: &[u32]) -> Result<BenchCgroup> {
        let root = sockleak::host::cgroup::cgroup2_mount().context("no cgroup2 mount")?;
        let rel = format!("sockleak-bench-{tag}-{}", std::process::id());
        let dir = root.join(&rel);
        std::fs::create_dir_all(&dir)?;
        for pid in pids {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(BenchCgroup { dir, rel })
    }

    fn new(pid: u32) -> Result<BenchCgroup> {
        let root = sockleak::host::cgroup::cgroup2_mount().context("no cgroup2 mount")?;
        let rel = format!("sockleak-bench-{}", std::process::id());
        let dir = root.join(&rel);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        Ok(BenchCgroup { dir, rel })
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        // The process is killed first (Churn drops before this); then the cgroup can go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Scenario {
    what: &'static str,
    /// The workload: churn (None) or another program with its first arguments (`args`
    /// follow).
    prog: Option<Vec<String>>,
    args: Vec<String>,
    ops: u64,
    /// What one op is ("lifecycle", "request").
    unit: &'static str,
    target: Target,
    cfgs: Vec<Cfg>,
}

/// Medians per configuration, and the program breakdown summed over rounds.
struct Measured {
    name: &'static str,
    tool: Tool,
    e2e_ns: f64,
    bpf_ns: f64,
    cpu_ns: f64,
    stack_lost: f64,
    walked: f64,
    fallbacks: f64,
    /// The leaked sockets' stack in the last round.
    leak_stack: Vec<String>,
    /// BPF ns per lifecycle of each round, in round order (paired with other configurations').
    bpf_rounds: Vec<f64>,
    progs: BTreeMap<String, ProgStat>,
}

fn measure(sockleak: &Path, churn: &Path, sc: &Scenario, rounds: usize) -> Result<Vec<Measured>> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); sc.cfgs.len()];
    let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
    let nofp = crate::procs::churn_nofp(churn);
    let python = pyloop_cmd();
    for round in 0..rounds {
        for (i, c) in sc.cfgs.iter().enumerate() {
            let prog = sc.prog.as_deref();
            let r = match c.bin {
                Bin::Fp => one_run(sockleak, churn, prog, &args, sc.ops, &c.tool, sc.target)?,
                Bin::NoFp => one_run(sockleak, &nofp, prog, &args, sc.ops, &c.tool, sc.target)?,
                Bin::Python => {
                    let py = python
                        .as_ref()
                        .context("no CPython 3.11 for this scenario")?;
                    one_run(sockleak, py, prog, &args, sc.ops, &c.tool, sc.target)?
                }
            };
            eprintln!(
                "xtask bench: {} [{}] round {}: {:.0} ns BPF, {:.2} µs/op end to end",
                sc.what,
                c.name,
                round + 1,
                r.bpf_ns,
                r.e2e_ns / 1e3
            );
            runs[i].push(r);
        }
    }
    Ok(sc
        .cfgs
        .iter()
        .zip(runs)
        .map(|(c, rs)| {
            let mut progs: BTreeMap<String, ProgStat> = BTreeMap::new();
            for r in &rs {
                for (n, p) in &r.progs {
                    let e = progs.entry(n.clone()).or_default();
                    e.run_time_ns += p.run_time_ns;
                    e.run_cnt += p.run_cnt;
                }
            }
            let med = |f: fn(&Run) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
            Measured {
                name: c.name,
                tool: c.tool.clone(),
                e2e_ns: med(|r| r.e2e_ns),
                bpf_ns: med(|r| r.bpf_ns),
                cpu_ns: med(|r| r.cpu_ns),
                stack_lost: med(|r| r.stack_lost),
                walked: med(|r| r.walked),
                fallbacks: med(|r| r.fallbacks),
                leak_stack: rs.last().map(|r| r.leak_stack.clone()).unwrap_or_default(),
                bpf_rounds: rs.iter().map(|r| r.bpf_ns).collect(),
                progs,
            }
        })
        .collect())
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio <= target { "met" } else { "missed" }
}

fn write_scenario(out: &mut String, sc: &Scenario, rows: &[Measured], rounds: usize) {
    let base = rows
        .iter()
        .find(|r| r.tool == Tool::Baseline)
        .map(|r| r.e2e_ns);
    // Without a baseline (paced scenarios: every run takes 1/rate per lifecycle end to end,
    // traced or not) only the tools' own costs are shown.
    let Some(base) = base else {
        let _ = writeln!(
            out,
            "\n### {}\n\n{} lifecycles per run, {rounds} round(s), paced: the loop's own time is fixed by its rate, \
             so the costs are the BPF programs' run time and sockleak's userspace CPU (its cgroup's `usage_usec`).\n",
            sc.what, sc.ops
        );
        let _ = writeln!(
            out,
            "| configuration | BPF ns / lifecycle | sockleak userspace ns / lifecycle |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: |");
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} |",
                r.name,
                r.bpf_ns,
                count(r.cpu_ns)
            );
        }
        write_programs(out, sc, rows, rounds);
        return;
    };
    let u = sc.unit;
    let _ = writeln!(
        out,
        "\n### {}\n\n{} {u}s per run, {rounds} rounds; baseline {:.2} µs per {u}.\n",
        sc.what,
        sc.ops,
        base / 1e3
    );
    let _ = writeln!(
        out,
        "| configuration | BPF ns / {u} | end-to-end µs / {u} | added µs | sockleak userspace ns / {u} |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        let cpu = if r.cpu_ns.is_nan() {
            "".to_string()
        } else {
            format!("{:.0}", r.cpu_ns)
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:+.2} | {cpu} |",
            r.name,
            r.bpf_ns,
            r.e2e_ns / 1e3,
            (r.e2e_ns - base) / 1e3
        );
    }
    write_programs(out, sc, rows, rounds);
}

/// Runs per op and ns per run of each program, summed over rounds.
fn write_programs(out: &mut String, sc: &Scenario, rows: &[Measured], rounds: usize) {
    let u = sc.unit;
    let _ = writeln!(
        out,
        "\nPer program (all rounds): runs per {u} and ns per run.\n"
    );
    let _ = writeln!(out, "| configuration | program | runs / {u} | ns / run |");
    let _ = writeln!(out, "| --- | --- | ---: | ---: |");
    for r in rows.iter().filter(|r| r.tool != Tool::Baseline) {
        for (n, p) in &r.progs {
            let per = p.run_cnt as f64 / (sc.ops as f64 * rounds as f64);
            if per < 0.01 {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {n} | {per:.2} | {:.0} |",
                r.name,
                p.run_time_ns as f64 / p.run_cnt.max(1) as f64
            );
        }
    }
}

/// BPF time of `a` against `b`: the median of the per-round ratios (each round runs every
/// configuration back to back, so pairing cancels the machine's drift between rounds), and
/// the two medians.
fn ratio(rows: &[Measured], a: &str, b: &str) -> (f64, f64, f64) {
    let get = |n: &str| rows.iter().find(|r| r.name == n);
    let (Some(x), Some(y)) = (get(a), get(b)) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let mut paired = round_ratios(x, y);
    (median(&mut paired), x.bpf_ns, y.bpf_ns)
}

fn round_ratios(x: &Measured, y: &Measured) -> Vec<f64> {
    x.bpf_rounds
        .iter()
        .zip(&y.bpf_rounds)
        .map(|(a, b)| a / b)
        .collect()
}

/// "rounds 0.61-0.70": how far the per-round ratios spread.
fn spread(rows: &[Measured], a: &str, b: &str) -> String {
    let get = |n: &str| rows.iter().find(|r| r.name == n);
    let (Some(x), Some(y)) = (get(a), get(b)) else {
        return String::new();
    };
    let r = round_ratios(x, y);
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("rounds {lo:.2}-{hi:.2}")
}

fn ratio_e2e(rows: &[Measured], a: &str, b: &str) -> f64 {
    let base = rows
        .iter()
        .find(|r| r.tool == Tool::Baseline)
        .map_or(f64::NAN, |r| r.e2e_ns);
    let get = |n: &str| {
        rows.iter()
            .find(|r| r.name == n)
            .map_or(f64::NAN, |r| r.e2e_ns - base)
    };
    get(a) / get(b)
}

/// Sections `--only` can run alone: their heading in docs/benchmarks.md, which the run
/// replaces there.
const SECTIONS: &[(&str, &str)] = &[
    ("go-http", GO_HTTP_HEADING),
    ("interpreted", INTERPRETED_HEADING),
    ("no-fp", NO_FP_HEADING),
];
const GO_HTTP_HEADING: &str = "## 8. Go HTTP clients: the origin uprobes, per request";
const INTERPRETED_HEADING: &str = "## 9. Interpreted code, no runtime flags (CPython, HotSpot)";
/// Code without frame pointers.
const NO_FP_HEADING: &str = "## 10. Stacks without frame pointers: kernel unwind tables";

pub fn bench(runs: usize, only: Option<&str>) -> Result<()> {
    if let Some(name) = only {
        let Some((_, heading)) = SECTIONS.iter().find(|(n, _)| *n == name) else {
            anyhow::bail!(
                "--only {name}: no such section (sections: {})",
                SECTIONS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let (sockleak, churn) = build_release(true)?;
        let _stats = StatsOn::new()?;
        let section = match name {
            "go-http" => go_http(&sockleak, runs)?,
            "no-fp" => no_fp_section(&sockleak, &churn, runs)?,
            _ => {
                let mut out = String::new();
                interpreted(&mut out, &sockleak, &churn, runs)?;
                out
            }
        };
        println!("{section}");
        let path = workspace_root().join("docs/benchmarks.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, splice(&doc, heading, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask bench: replaced `{heading}` in {}", path.display());
        return Ok(());
    }
    let (sockleak, churn) = build_release(true)?;
    let _stats = StatsOn::new()?;
    let root = workspace_root();
    let mut out = String::new();
    let _ = writeln!(out, "# sockleak benchmarks\n");
    let _ = writeln!(
        out,
        "Machine: {}. Produced by `cargo xtask bench --runs {runs}`. The deciding figure is the BPF programs' \
         own run time per socket lifecycle (`kernel.bpf_stats_enabled=1`, `bpftool prog show`: run_time_ns summed \
         over every program the tool loaded, divided by the loop's lifecycles); it stays stable on this noisy \
         machine, where end-to-end times do not. Every figure is the median of {runs} interleaved rounds, \
         compared with the others measured in the same run.\n",
        machine()
    );
    let _ = writeln!(
        out,
        "The bpftrace peers do the minimal version of sockleak's job for one pid:\n\n\
         ```\n{}\n```\n\nwith `nsecs` instead of `ustack` for the no-stack peer, and for the connect path also \
         `tracepoint:syscalls:sys_exit_connect /pid == PID/ {{ @c[pid] = count(); }}`.\n",
        bpftrace_script(0, true, false).replace("== 0", "== PID")
    );

    // 1 and 2: traced lifecycles.
    let _ = writeln!(out, "## 1. A traced process's socket lifecycles");
    let sc1 = Scenario {
        what: "socket()+close()",
        prog: None,
        args: vec!["socket".into(), "200000".into()],
        ops: 200_000,
        unit: "lifecycle",
        target: Target::Workload,
        cfgs: vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg("sockleak (stacks)", sockleak_args(&[])),
            cfg("sockleak --no-stacks", sockleak_args(&["--no-stacks"])),
            cfg(
                "sockleak --stack-mode dwarf (kernel unwind tables)",
                sockleak_args(&["--stack-mode", "dwarf"]),
            ),
            cfg(
                "sockleak --stack-mode dwarf --unwind-table-mib 0 (stack copies)",
                sockleak_args(&["--stack-mode", "dwarf", "--unwind-table-mib", "0"]),
            ),
            cfg(
                "sockleak --stack-mode dwarf --unwind-table-mib 0 --stack-sample 16",
                sockleak_args(&[
                    "--stack-mode",
                    "dwarf",
                    "--unwind-table-mib",
                    "0",
                    "--stack-sample",
                    "16",
                ]),
            ),
            cfg(
                "bpftrace with ustack",
                Tool::Bpftrace {
                    ustack: true,
                    connect: false,
                },
            ),
            cfg(
                "bpftrace without ustack",
                Tool::Bpftrace {
                    ustack: false,
                    connect: false,
                },
            ),
        ],
    };
    let rows1 = measure(&sockleak, &churn, &sc1, runs)?;
    write_scenario(&mut out, &sc1, &rows1, runs);
    let (r_st, s_st, b_st) = ratio(&rows1, "sockleak (stacks)", "bpftrace with ustack");
    let (r_ns, s_ns, b_ns) = ratio(&rows1, "sockleak --no-stacks", "bpftrace without ustack");
    let _ = writeln!(
        out,
        "\n**Target 1** (ratios are medians of per-round ratios, each round running every configuration back \
         to back) — with a stack per socket: {s_st:.0} vs {b_st:.0} ns, **{r_st:.2}x** bpftrace-with-ustack ({}; \
         target ≤ 0.75: **{}**; end to end {:.2}x). Without stacks: {s_ns:.0} vs {b_ns:.0} ns, **{r_ns:.2}x** \
         bpftrace-without-ustack ({}; target ≤ 1.0: **{}**; end to end {:.2}x).",
        spread(&rows1, "sockleak (stacks)", "bpftrace with ustack"),
        verdict(r_st, 0.75),
        ratio_e2e(&rows1, "sockleak (stacks)", "bpftrace with ustack"),
        spread(&rows1, "sockleak --no-stacks", "bpftrace without ustack"),
        verdict(r_ns, 1.0),
        ratio_e2e(&rows1, "sockleak --no-stacks", "bpftrace without ustack"),
    );
    let get = |n: &str| rows1.iter().find(|r| r.name == n);
    if let (Some(fp), Some(tb), Some(cp), Some(cs), Some(ns)) = (
        get("sockleak (stacks)"),
        get("sockleak --stack-mode dwarf (kernel unwind tables)"),
        get("sockleak --stack-mode dwarf --unwind-table-mib 0 (stack copies)"),
        get("sockleak --stack-mode dwarf --unwind-table-mib 0 --stack-sample 16"),
        get("sockleak --no-stacks"),
    ) {
        // What one copied stack costs, from the sampled run (which loses almost none): the
        // sampled-out sockets cost about what --no-stacks does.
        let per_copy_bpf = (cs.bpf_ns - ns.bpf_ns) * 16.0;
        let per_copy_user = cs.cpu_ns * 16.0;
        let _ = writeln!(
            out,
            "\n**DWARF unwinding, flat out** (`--stack-mode dwarf` forces it on this program, which has frame \
             pointers; section 8 measures programs without them at a realistic rate). With the kernel unwind \
             tables (the default) the stack is walked in the kernel with the binaries' compiled CFI: {:.0} ns \
             BPF per lifecycle, **{:.2}x** the frame-pointer walk's {:.0} ns, {:.0} ns of sockleak's userspace \
             CPU, {} of the stacks lost. With `--unwind-table-mib 0` the kernel copies the registers and the \
             top of the user stack (the largest of 16, 8, 4, 2, 1 KiB, 512, 256 or 128 bytes that the stack \
             holds) into a ring of its own for every walked socket, and sockleak unwinds each copy with the \
             binaries' `.eh_frame` (framehop): {:.0} ns BPF and {:.0} ns userspace per lifecycle; with \
             `--stack-sample 16` {:.0} ns BPF and {:.0} ns userspace. A copy that does not fit its ring (4 MiB) \
             is dropped and counted as lost (`lost.stack_lost`); its socket is still counted, without a \
             stack: at this loop's rate (one socket every ~10 µs) {} of the sockets lost their copy, {} with \
             `--stack-sample 16`, {} with frame pointers.{}",
            tb.bpf_ns,
            tb.bpf_ns / fp.bpf_ns,
            fp.bpf_ns,
            tb.cpu_ns,
            pct(tb.stack_lost),
            cp.bpf_ns,
            cp.cpu_ns,
            cs.bpf_ns,
            cs.cpu_ns,
            pct(cp.stack_lost),
            pct(cs.stack_lost),
            pct(fp.stack_lost),
            if cp.stack_lost > 0.01 {
                " Failed (cheap) reservations are part of the unsampled copy figure, so it understates \
                 what a copy that is made costs; the sampled figure is the one for a busy process."
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "\nPer socket whose stack is copied, that is about **{:.1} µs of BPF time** ((sampled − \
             `--no-stacks`) × 16) and **{:.1} µs of unwinding** in sockleak: the price of each fallback \
             from the tables (JIT code, code without CFI: the report's `stack_fallbacks` lists them).",
            per_copy_bpf / 1e3,
            per_copy_user / 1e3,
        );
    }

    let mut server = Churn::start_cmd(Command::new(&churn).arg("serve"))?;
    let port = server.expect("port", Duration::from_secs(5))?;
    let connect_peer = Tool::Bpftrace {
        ustack: true,
        connect: true,
    };
    let sc2 = Scenario {
        what: "socket()+connect()+close() over loopback, listener untraced, SO_LINGER 0",
        prog: None,
        args: vec!["connect".into(), port.clone(), "20000".into()],
        ops: 20_000,
        unit: "lifecycle",
        target: Target::Workload,
        cfgs: vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg("sockleak (stacks)", sockleak_args(&[])),
            cfg("sockleak --no-stacks", sockleak_args(&["--no-stacks"])),
            cfg("bpftrace (ustack, count connects)", connect_peer.clone()),
        ],
    };
    let rows2 = measure(&sockleak, &churn, &sc2, runs)?;
    write_scenario(&mut out, &sc2, &rows2, runs);
    let (r_c, s_c, b_c) = ratio(
        &rows2,
        "sockleak (stacks)",
        "bpftrace (ustack, count connects)",
    );
    let _ = writeln!(
        out,
        "\n**Target 2** — socket+connect+close with stacks: {s_c:.0} vs {b_c:.0} ns, **{r_c:.2}x** the bpftrace \
         script ({}; target ≤ 1.0: **{}**; end to end {:.2}x). These figures include every program run on the \
         host during the loop, the untraced listener's accepts and closes among them.",
        spread(
            &rows2,
            "sockleak (stacks)",
            "bpftrace (ustack, count connects)"
        ),
        verdict(r_c, 1.0),
        ratio_e2e(
            &rows2,
            "sockleak (stacks)",
            "bpftrace (ustack, count connects)"
        ),
    );

    // 3: an untraced process.
    let _ = writeln!(
        out,
        "\n## 2. An untraced process's connect+close while another process is traced"
    );
    let sc3 = Scenario {
        what: "untraced socket()+connect()+close()",
        prog: None,
        args: vec!["connect".into(), port.clone(), "20000".into()],
        ops: 20_000,
        unit: "lifecycle",
        target: Target::Other,
        cfgs: vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg("sockleak --pid OTHER", sockleak_args(&[])),
            cfg("bpftrace script, pid == OTHER", connect_peer.clone()),
        ],
    };
    let rows3 = measure(&sockleak, &churn, &sc3, runs)?;
    write_scenario(&mut out, &sc3, &rows3, runs);
    let sc3b = Scenario {
        what: "untraced socket()+connect()+close(), sockleak tracing another cgroup",
        prog: None,
        args: vec!["connect".into(), port.clone(), "20000".into()],
        ops: 20_000,
        unit: "lifecycle",
        target: Target::OtherCgroup,
        cfgs: vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg("sockleak --cgroup OTHER", sockleak_args(&[])),
            cfg("bpftrace script, pid == OTHER", connect_peer.clone()),
        ],
    };
    let rows3b = measure(&sockleak, &churn, &sc3b, runs)?;
    write_scenario(&mut out, &sc3b, &rows3b, runs);
    let (r_u, s_u, b_u) = ratio(
        &rows3,
        "sockleak --pid OTHER",
        "bpftrace script, pid == OTHER",
    );
    let (r_g, s_g, b_g) = ratio(
        &rows3b,
        "sockleak --cgroup OTHER",
        "bpftrace script, pid == OTHER",
    );
    let per_hook = |rows: &[Measured], name: &str| -> (f64, f64) {
        let Some(r) = rows.iter().find(|r| r.name == name) else {
            return (f64::NAN, f64::NAN);
        };
        let (t, c) = r
            .progs
            .values()
            .fold((0u64, 0u64), |(t, c), p| (t + p.run_time_ns, c + p.run_cnt));
        (
            t as f64 / c.max(1) as f64,
            c as f64 / (sc3.ops as f64 * runs as f64),
        )
    };
    let (hs, ns_) = per_hook(&rows3, "sockleak --pid OTHER");
    let (hg, _) = per_hook(&rows3b, "sockleak --cgroup OTHER");
    let (hb, nb) = per_hook(&rows3, "bpftrace script, pid == OTHER");
    // Each scenario's own bpftrace rounds: the two ran minutes apart.
    let (hbg, _) = per_hook(&rows3b, "bpftrace script, pid == OTHER");
    let _ = writeln!(
        out,
        "\n**Target 3** — per hook, what an untraced process pays: {hs:.0} ns per run with `--pid` and {hg:.0} ns \
         with `--cgroup`, against {hb:.0} and {hbg:.0} ns for the bpftrace script's pid filter in the same \
         scenarios: **{:.2}x** and **{:.2}x** \
         (target ≤ 1.0: **{}**, **{}**; this machine's noise on ~100 ns programs is ±20% between runs). \
         Per lifecycle: {s_u:.0} and {s_g:.0} ns against {b_u:.0}/{b_g:.0} ns (**{r_u:.2}x**, **{r_g:.2}x**): \
         sockleak's hooks run {ns_:.1} times per lifecycle and the script's {nb:.1}, the difference being \
         the listener's accept, which sockleak must see (an accepted socket is a socket) and the script does \
         not hook. An untraced process runs only each program's gate: one bit test in a bitmap of traced \
         pids, then return; the body is a BPF subprogram it never enters. (With the body inlined, the early \
         return jumped over kilobytes of code to the epilogue, and the largest programs cost 40-50 ns more \
         per run than bpftrace's; splitting them removed that.) What is left against bpftrace's filter is \
         the bitmap read from memory where bpftrace compares with a constant: a traced set that changes \
         (children are followed, cgroups gain processes) has to live in a map. Attaching the accept hooks \
         only once a traced process listens would remove the extra hook per lifecycle, at the price of \
         missing accepts until they are attached. sockleak runs no program on TCP state changes at all: \
         time in a state comes from the socket tables, polled for the states a report dates.",
        hs / hb,
        hg / hbg,
        verdict(hs / hb, 1.0),
        verdict(hg / hbg, 1.0)
    );

    // 4: serve --all as a DaemonSet would run it.
    let _ = writeln!(
        out,
        "\n## 3. `sockleak serve --all` under a connect-heavy load (the fleet cost)"
    );
    let sc4 = Scenario {
        what: "socket()+connect()+close() while `serve --all` runs",
        prog: None,
        args: vec!["connect".into(), port.clone(), "20000".into()],
        ops: 20_000,
        unit: "lifecycle",
        target: Target::Workload,
        cfgs: vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg(
                "sockleak --all (serve's tracing)",
                sockleak_args(&["--all"]),
            ),
        ],
    };
    let rows4 = measure(&sockleak, &churn, &sc4, runs)?;
    write_scenario(&mut out, &sc4, &rows4, runs);
    let serve_cpu = serve_cpu(&sockleak, &churn, &port)?;
    let _ = writeln!(
        out,
        "\n`sockleak serve --all`, scraped every 5 s during 20 s of this load at full speed: **{:.2}%** of one \
         core in userspace, {:.1} MiB resident.",
        serve_cpu.0 * 100.0,
        serve_cpu.1
    );
    drop(server);

    // 5-8: throughput, memory, quiet host, many processes.
    let _ = writeln!(
        out,
        "\n## 4. Throughput: two processes x 500k lifecycles at full speed, `--all`\n"
    );
    let (lost, exact, secs) = throughput(&sockleak, &churn)?;
    let _ = writeln!(
        out,
        "lost events: **{lost}** (target 0); final live counts exact: **{exact}**; wall time {secs:.1}s."
    );
    let _ = writeln!(
        out,
        "\n## 5. Memory: 100k live sockets across 10 processes\n"
    );
    let m = memory(&sockleak, &churn)?;
    let _ = writeln!(out, "| measure | value | target | verdict |");
    let _ = writeln!(out, "| --- | ---: | ---: | --- |");
    let _ = writeln!(
        out,
        "| sockleak peak RSS (heap, mapped ring buffers, binary) | {:.1} MiB | ≤ 64 MiB | {} |",
        m.rss_mib,
        verdict(m.rss_mib, 64.0)
    );
    let _ = writeln!(
        out,
        "| BPF map memory (memlock; live map preallocated for --max-sockets 131072) | {:.1} MiB | | |",
        m.map_mib
    );
    let _ = writeln!(
        out,
        "| final report (SIGINT to the report file written, symbolization included) | {:.2} s | ≤ 2 s | {} |",
        m.report_s,
        verdict(m.report_s, 2.0)
    );
    let _ = writeln!(
        out,
        "| live sockets reported / in /proc | {} / {} | equal | {} |",
        m.reported,
        m.truth,
        if m.reported == m.truth as u64 {
            "met"
        } else {
            "missed"
        }
    );
    let _ = writeln!(
        out,
        "\n## 6. Userspace CPU, `--all` on a quiet host (30 s)\n"
    );
    let cpu = quiet_cpu(&sockleak)?;
    let _ = writeln!(
        out,
        "sockleak used **{:.2}%** of one core (target < 2%: **{}**).",
        cpu * 100.0,
        verdict(cpu * 100.0, 2.0)
    );
    let _ = writeln!(
        out,
        "\n## 7. Scale: `--all` with 1000 processes holding 10 sockets each (20 s)\n"
    );
    let (scpu, srss) = many_processes(&sockleak, &churn, 1000)?;
    let _ = writeln!(
        out,
        "sockleak used **{:.2}%** of one core (target < 2%: **{}**) and **{srss:.1} MiB** resident (target ≤ \
         64 MiB: **{}**), at `--interval 2`. Per interval it reads the kernel's maps in batches and re-reads \
         /proc only for processes whose counters or failures changed, a few others in turn, and a bounded \
         number (64 processes) for reconciliation. Where that time goes (perf on a frame-pointer build of \
         this scenario, when this text was written): about a third in the kernel walking the live-socket \
         map's 131072 buckets for the batched read, whatever their use; a sixth in the sock_diag dump that \
         dates TCP states (the kernel visits every TCP socket of the namespace to pick the dated states); \
         a sixth in reconciliation's /proc/PID/fd reads (readlinkat on the open directory, not a path walk \
         per fd); the rest in the snapshot line and the exit checks. The next step, if needed: a \
         kernel-side change counter so an interval where nothing changed skips the live-map read.",
        scpu * 100.0,
        verdict(scpu * 100.0, 2.0),
        verdict(srss, 64.0)
    );
    out.push_str(&no_fp_section(&sockleak, &churn, runs)?);

    out.push_str(&go_http(&sockleak, runs)?);
    interpreted(&mut out, &sockleak, &churn, runs)?;

    println!("{out}");
    let path = root.join("docs/benchmarks.md");
    std::fs::write(&path, &out).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask bench: wrote {}", path.display());
    Ok(())
}

/// A wrapper that runs pyloop.py with Debian's CPython 3.11 (built without frame pointers),
/// when this host has it.
fn pyloop_cmd() -> Option<PathBuf> {
    let python = Path::new("/usr/bin/python3.11");
    if !python.exists() {
        return None;
    }
    let root = workspace_root();
    let w = root.join("target/xtask/pyloop");
    let script = format!(
        "#!/bin/sh\nexec {} {} \"$@\"\n",
        python.display(),
        root.join("xtask/workloads/pyloop.py").display()
    );
    std::fs::create_dir_all(w.parent()?).ok()?;
    std::fs::write(&w, script).ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).ok()?;
    Some(w)
}

fn pct(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.1}%", v * 100.0)
    }
}

fn count(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.0}")
    }
}

/// The no-frame-pointer scenarios' extra table: stacks lost, kernel walks and fallbacks, and
/// the leaked sockets' stack.
fn write_unwinding(out: &mut String, rows: &[Measured], ops: u64) {
    let _ = writeln!(
        out,
        "\n| configuration | stacks lost | stacks walked in the kernel / fallbacks to copies (median run) | leaked sockets' stack (last round) |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | --- |");
    for r in rows.iter().filter(|r| matches!(r.tool, Tool::Sockleak(_))) {
        let walks = if r.walked.is_nan() {
            "tables off".to_string()
        } else {
            format!("{} / {}", count(r.walked), count(r.fallbacks))
        };
        let _ = writeln!(
            out,
            "| {} | {} ({} of {ops}) | {walks} | `{}` |",
            r.name,
            pct(r.stack_lost),
            count(r.stack_lost * ops as f64),
            r.leak_stack.join(" < ")
        );
    }
}

/// Section 10: code without frame pointers, walked in the kernel with unwind tables.
fn no_fp_section(sockleak: &Path, churn: &Path, runs: usize) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "\n{NO_FP_HEADING}");
    let _ = writeln!(
        out,
        "\nThe same C source (`churn deep`: socket()+close() D calls below main, each level with a frame of its own \
         size, leaking 1 socket in 5000 so the report has a call site) built `-O2 -fomit-frame-pointer` and \
         `-O2 -fno-omit-frame-pointer`, at 10,000 sockets a second for 5 s, sockleak with default settings (and `--min-age 0`, so that the \
         report of a 5 s run lists the leaked sockets with their stack; it changes nothing in the kernel): \
         `--stack-mode auto` finds the first frame-pointer stack short and switches the process to DWARF, \
         walked in the kernel with its binaries' unwind tables (built at the switch: the program and libc). \
         `--unwind-table-mib 0` is the previous behaviour: a 16 KiB stack copy per socket, unwound in userspace."
    );
    let mut verdicts = Vec::new();
    for depth in ["3", "6"] {
        let sc = Scenario {
            what: if depth == "3" {
                "no frame pointers, 3 calls below main, 10,000/s"
            } else {
                "no frame pointers, 6 calls below main, 10,000/s"
            },
            args: vec![
                "deep".into(),
                depth.into(),
                "50000".into(),
                "10000".into(),
                "5000".into(),
            ],
            prog: None,
            ops: 50_000,
            unit: "lifecycle",
            target: Target::Workload,
            cfgs: vec![
                cfg_on(
                    Bin::Fp,
                    "frame-pointer build, sockleak",
                    sockleak_args(&["--min-age", "0"]),
                ),
                cfg_on(
                    Bin::NoFp,
                    "no-frame-pointer build, sockleak (kernel unwind tables)",
                    sockleak_args(&["--min-age", "0"]),
                ),
                cfg_on(
                    Bin::NoFp,
                    "no-frame-pointer build, sockleak --unwind-table-mib 0 (stack copies)",
                    sockleak_args(&["--min-age", "0", "--unwind-table-mib", "0"]),
                ),
            ],
        };
        let rows = measure(sockleak, churn, &sc, runs)?;
        write_scenario(&mut out, &sc, &rows, runs);
        write_unwinding(&mut out, &rows, sc.ops);
        let get = |n: &str| rows.iter().find(|r| r.name.starts_with(n));
        if let (Some(fp), Some(t), Some(c)) = (
            get("frame-pointer build"),
            get("no-frame-pointer build, sockleak (kernel"),
            get("no-frame-pointer build, sockleak --unwind"),
        ) {
            let same = !t.leak_stack.is_empty() && t.leak_stack == fp.leak_stack;
            let _ = writeln!(
                out,
                "\nDepth {depth}: with tables, {:.0} ns of BPF per lifecycle ({:.2}x the frame-pointer build's {:.0} ns, \
                 {:.2}x the copies' {:.0} ns) and {} of the stacks lost (copies: {}); the leaked sockets' stack is \
                 {} the frame-pointer build's.",
                t.bpf_ns,
                t.bpf_ns / fp.bpf_ns,
                fp.bpf_ns,
                t.bpf_ns / c.bpf_ns,
                c.bpf_ns,
                pct(t.stack_lost),
                pct(c.stack_lost),
                if same {
                    "the same as"
                } else {
                    "**not** the same as"
                }
            );
            verdicts.push((depth, t.bpf_ns, t.stack_lost, t.fallbacks));
        }
    }
    let line: Vec<String> = verdicts
        .iter()
        .map(|(d, ns, lost, fb)| {
            format!(
                "depth {d}: {ns:.0} ns per lifecycle (target ≤ 3,000: **{}**), {} stacks lost (target 0: **{}**), {} fallbacks",
                verdict(*ns, 3000.0),
                pct(*lost),
                if *lost == 0.0 { "met" } else { "missed" },
                count(*fb)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\n**Target (no frame pointers at 10,000 sockets/s, default settings)** — {}. That the call sites equal \
         the frame-pointer build's is asserted by a test (`sockleak/tests/unwind.rs`: a library without frame \
         pointers called three deep), not by this timing.",
        line.join("; ")
    );

    // CPython 3.11 (Debian's build has no frame pointers).
    if pyloop_cmd().is_some() {
        let sc = Scenario {
            what: "CPython 3.11 (Debian, no frame pointers), socket()+close() 3 Python calls deep, 10,000/s",
            args: vec![
                "deep".into(),
                "3".into(),
                "30000".into(),
                "10000".into(),
                "5000".into(),
            ],
            prog: None,
            ops: 30_000,
            unit: "lifecycle",
            target: Target::Workload,
            cfgs: vec![
                cfg_on(
                    Bin::Python,
                    "CPython, sockleak (kernel unwind tables)",
                    sockleak_args(&["--min-age", "0"]),
                ),
                cfg_on(
                    Bin::Python,
                    "CPython, sockleak --unwind-table-mib 0 (stack copies)",
                    sockleak_args(&["--min-age", "0", "--unwind-table-mib", "0"]),
                ),
            ],
        };
        let rows = measure(sockleak, churn, &sc, runs)?;
        write_scenario(&mut out, &sc, &rows, runs);
        write_unwinding(&mut out, &rows, sc.ops);
    } else {
        let _ = writeln!(
            out,
            "\n(No /usr/bin/python3.11 here: the CPython scenario was skipped.)"
        );
    }

    // trace --all on 1000 processes, half of them without frame pointers; then the same load
    // with frame pointers everywhere, to tell what the tables add to what the load costs.
    let a = all_with_tables(sockleak, churn, 1000, true, false)?;
    let f = all_with_tables(sockleak, churn, 1000, false, false)?;
    let c = all_with_tables(sockleak, churn, 1000, true, true)?;
    let _ = writeln!(
        out,
        "\n### `trace --all` with 1000 processes, 500 of them without frame pointers\n\n\
         Each process holds 10 sockets and makes one more (3 calls deep) when the bench writes a line to it, \
         each in turn every 2 s: 500 sockets a second, each with a stack, every process active in every \
         `--interval 2`. The 500 processes built without frame pointers switch to kernel unwinding at their \
         first socket; their program and libc are compiled once (keyed by build id) and shared. Columns: \
         `trace --all` (the target; it also traces whatever else runs on the host: here other sessions' \
         builds and tests on the 2 shared cores); the same load with all 1000 built with frame pointers (no \
         table of theirs: what the load costs without unwinding); and `trace --cgroup` of the 1000 alone \
         (what they cost without the host's others). CPU is sockleak's cgroup's `usage_usec`.\n"
    );
    let _ = writeln!(
        out,
        "| measure | --all, 500 without frame pointers | --all, all with frame pointers | --cgroup of the 1000, 500 without | target |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    let row = |out: &mut String, what: &str, v: &dyn Fn(&AllTables) -> String, target: &str| {
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {target} |",
            v(&a),
            v(&f),
            v(&c)
        );
    };
    let total = |x: &AllTables| x.rss_mib + x.kernel_mib;
    row(
        &mut out,
        &format!("sockleak CPU, attach to +{:.0} s", a.total_s),
        &|x| format!("{:.2}%", x.cpu_total * 100.0),
        "",
    );
    row(
        &mut out,
        "sockleak CPU, steady state (the last 20 s)",
        &|x| {
            format!(
                "{:.2}% ({})",
                x.cpu_steady * 100.0,
                verdict(x.cpu_steady * 100.0, 2.0)
            )
        },
        "≤ 2% of a core",
    );
    row(
        &mut out,
        "peak RSS + unwind tables in the kernel not in it",
        &|x| format!("{:.1} MiB ({})", total(x), verdict(total(x), 64.0)),
        "≤ 64 MiB",
    );
    row(
        &mut out,
        "of which peak RSS (VmHWM)",
        &|x| format!("{:.1} MiB", x.rss_mib),
        "",
    );
    row(
        &mut out,
        &format!(
            "of the RSS, the row array (`--unwind-table-mib` {:.0}: sockleak maps it to fill it)",
            a.cap_mib
        ),
        &|x| format!("{:.1} MiB", x.array_resident_mib),
        "",
    );
    row(
        &mut out,
        "kernel: rest of the row array, process entries, row cache",
        &|x| format!("{:.1} MiB", x.kernel_mib),
        "",
    );
    row(
        &mut out,
        "rows in use",
        &|x| format!("{:.2} MiB in {} file(s)", x.rows_mib, x.files),
        "",
    );
    row(
        &mut out,
        "processes switched to kernel unwinding",
        &|x| x.procs.to_string(),
        "",
    );
    row(
        &mut out,
        "stacks walked in the kernel / fallbacks to copies",
        &|x| format!("{} / {}", x.walked, x.fallbacks),
        "",
    );
    row(
        &mut out,
        "table build CPU",
        &|x| format!("{:.3} s", x.build_s),
        "",
    );
    let _ = writeln!(
        out,
        "\nWhere it goes (perf, /proc/PID/smaps and each big file compiled alone, when this text was written). \
         **The 1000 processes alone** (`--cgroup` column): the 500 without frame pointers need their program and \
         libc (187 KiB of rows, about 10 ms to compile); the peak RSS holds the 16 MiB row array (a mappable BPF \
         array is resident in full once sockleak maps it to fill it), 10 MiB of its other mapped BPF maps (the \
         rings), about 18 MiB of heap and 6 MiB of sockleak's own text; the steady CPU is the per-interval work on every process that changed (all 1000 \
         in every interval here): /proc reads, the live-socket map's batched read and the TCP state dump that \
         section 7 describes. Before this measurement a quarter of the perf samples were the listing of each \
         changed process's /proc/PID/fd and the /proc lookups around it; the open-fd count is now one `stat` \
         (its size is the count since Linux 6.2) and the fd limit one `prlimit`. **`--all` on this host** also \
         traces other sessions' `cargo`, `rustc`, `rustup` and debug `sockleak` binaries (Rust, no frame \
         pointers) and `bash` (NSS sockets): they make sockets, are switched to DWARF, and their files are \
         compiled, whether our 500 are there or not (the frame-pointer column): librustc_driver alone is 1.04M \
         rows (8 MiB, 0.26 s), cargo 365k, rustup 173k, each debug sockleak about 150k, most of the 16 MiB cap \
         and about 1 s of CPU. Compiling librustc_driver peaks at 49 MiB of heap (60 MiB before its span list \
         was packed to 16 bytes and sorted in place), freed after; symbolizing those processes' stacks (blazesym \
         over 130 MB debug binaries) adds the rest. Times are on 2 cores shared with that other work, so CPU \
         shares are high rather than low. What would close the `--all` gap on such a host: compile in address \
         order from `.eh_frame_hdr` (no span list: the peak becomes the rows, 8 bytes each), a per-file row \
         budget, and building tables only for processes whose sockets outlive `--min-age` (short-lived tools \
         would keep the copies, which cost them little); for the CPU with every process active, reading an \
         active process's /proc facts (open fds, limit) at most every few intervals instead of every one."
    );
    Ok(out)
}

/// `doc` with the section under `heading` (up to the next `## ` heading) replaced by
/// `section`, or `section` appended.
fn splice(doc: &str, heading: &str, section: &str) -> String {
    let Some(start) = doc.find(heading) else {
        return format!("{}\n{}", doc.trim_end(), section);
    };
    let after = start + heading.len();
    let end = doc[after..]
        .find("\n## ")
        .map_or(doc.len(), |i| after + i + 1);
    format!("{}{}{}", &doc[..start], section.trim_start(), &doc[end..])
}

/// Builds a Go program of the repository into target/xtask/.
fn build_go(src: &str, name: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let dir = root.join("target/xtask");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(name);
    crate::util::run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(root.join(src))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", dir.join("gocache")),
    )?;
    Ok(out)
}

/// Starts the test HTTP server (untraced): the process and its address.
fn http_server(bin: &Path) -> Result<(std::process::Child, String)> {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("server stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening ")
        .map(|a| a.trim().to_string())
        .with_context(|| format!("the HTTP server said {line:?}"))?;
    Ok((child, addr))
}

/// Section 8: what the Go origin probes cost per HTTP request, on a healthy keep-alive client
/// and on one that builds a Transport per request, against the same client untraced and
/// traced with `--no-uprobes`.
fn go_http(sockleak: &Path, runs: usize) -> Result<String> {
    let client = build_go("xtask/workloads/httpbench.go", "httpbench")?;
    let server_bin = build_go("sockleak/tests/workloads/httpserver.go", "httpserver")?;
    let (mut server, addr) = http_server(&server_bin)?;
    let cfgs = || {
        vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg("sockleak (origin uprobes)", sockleak_args(&[])),
            cfg("sockleak --no-uprobes", sockleak_args(&["--no-uprobes"])),
            cfg(
                "bpftrace: one empty uprobe (persistConn.roundTrip)",
                Tool::EmptyUprobe("net/http.(*persistConn).roundTrip"),
            ),
        ]
    };
    let keepalive = Scenario {
        what: "a healthy keep-alive client: one Transport, bodies closed (net/http, go1.19)",
        prog: None,
        args: vec!["keepalive".into(), "20000".into(), addr.clone()],
        ops: 20_000,
        unit: "request",
        target: Target::Workload,
        cfgs: cfgs(),
    };
    let leaky = Scenario {
        what: "a leaking client: a new Transport per request (seed incident 1, go1.19)",
        prog: None,
        args: vec!["leaky".into(), "2000".into(), addr.clone()],
        ops: 2_000,
        unit: "request",
        target: Target::Workload,
        cfgs: cfgs(),
    };
    let rows_k = measure(sockleak, &client, &keepalive, runs)?;
    let rows_l = measure(sockleak, &client, &leaky, runs)?;
    let _ = server.kill();
    let _ = server.wait();
    let mut out = String::new();
    let _ = writeln!(out, "\n{GO_HTTP_HEADING}\n");
    let _ = writeln!(
        out,
        "sockleak joins a Go client's sockets to the code that sent the requests with uprobes on \
         net/http (`queueForDial`, `tryDeliver`, `persistConn.roundTrip`, `tryPutIdleConn`, beside \
         `dialConn`, which counts Transports). They fire per request, not per socket: \
         `persistConn.roundTrip` walks the sending goroutine's stack and follows the connection to its \
         socket on every HTTP/1 request. The BPF figure is the programs' own run time; a uprobe's trap \
         (a breakpoint exception and its return) is paid on top of it, and shows in the end-to-end column \
         against `--no-uprobes`."
    );
    write_scenario(&mut out, &keepalive, &rows_k, runs);
    write_scenario(&mut out, &leaky, &rows_l, runs);
    let summary = |rows: &[Measured]| {
        let get = |n: &str| rows.iter().find(|r| r.name == n);
        match (
            get("sockleak (origin uprobes)"),
            get("sockleak --no-uprobes"),
            get("baseline (no tracer)"),
            get("bpftrace: one empty uprobe (persistConn.roundTrip)"),
        ) {
            (Some(on), Some(off), Some(base), Some(trap)) => (
                on.bpf_ns,
                on.bpf_ns - off.bpf_ns,
                (on.e2e_ns - off.e2e_ns) / 1e3,
                (trap.e2e_ns - base.e2e_ns) / 1e3,
            ),
            _ => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
        }
    };
    let per_request = |rows: &[Measured], sc: &Scenario| {
        rows.iter()
            .find(|r| r.name == "sockleak (origin uprobes)")
            .map_or(f64::NAN, |r| {
                r.progs
                    .iter()
                    .filter(|(n, _)| n.starts_with("go_"))
                    .map(|(_, p)| p.run_cnt)
                    .sum::<u64>() as f64
                    / (sc.ops as f64 * runs as f64)
            })
    };
    let (kb, kd, ke, kt) = summary(&rows_k);
    let (lb, ld, le, lt) = summary(&rows_l);
    let (kh, lh) = (
        per_request(&rows_k, &keepalive),
        per_request(&rows_l, &leaky),
    );
    let _ = writeln!(
        out,
        "\n**Per request**: on the healthy keep-alive client, {kb:.0} ns of BPF time with the origin \
         uprobes, {kd:+.0} ns against `--no-uprobes`, over {kh:.1} uprobe hits per request \
         (`persistConn.roundTrip`, `tryPutIdleConn`, and `tryDeliver`, which an idle connection's reuse \
         calls too); on the leaking client, {lb:.0} ns, {ld:+.0} ns against `--no-uprobes`, over {lh:.1} \
         hits (a dial's probes fire twice when Go grows the dial goroutine's stack at their entry). End to \
         end the probes add {ke:.1} µs per request on the keep-alive client and {le:.1} µs on the leaking \
         one: almost all of it is the traps, not the programs. On this machine one empty bpftrace uprobe \
         on `persistConn.roundTrip` (one hit per request) adds {kt:.1} µs per request ({lt:.1} µs on the \
         leaking client), so a trap costs about that here, and the probes' cost is their hit count times \
         it. A client sending thousands of requests a second per core pays that on every one: trace it \
         briefly, or with `--no-uprobes` (the Go diagnoses are then `likely` and name no call site)."
    );
    Ok(out)
}

/// What `all_with_tables` measured.
struct AllTables {
    total_s: f64,
    cpu_total: f64,
    cpu_steady: f64,
    rss_mib: f64,
    /// Of the peak RSS, the row array's pages (sockleak maps it to fill it).
    array_resident_mib: f64,
    /// Kernel memory of the tables not already in the RSS: the rest of the row array, the
    /// process entries, the row cache.
    kernel_mib: f64,
    cap_mib: f64,
    rows_mib: f64,
    files: u64,
    procs: u64,
    walked: u64,
    fallbacks: u64,
    build_s: f64,
}

/// `trace --all` with `n` processes holding 10 sockets, half built without frame pointers
/// (or none: the same load without anything to unwind), each making a socket every 2 s.
fn all_with_tables(
    sockleak: &Path,
    churn: &Path,
    n: usize,
    half_nofp: bool,
    only_them: bool,
) -> Result<AllTables> {
    let nofp = crate::procs::churn_nofp(churn);
    let mut ws = Vec::with_capacity(n);
    for i in 0..n {
        let bin = if i % 2 == 0 || !half_nofp {
            churn
        } else {
            nofp.as_path()
        };
        let mut w = Churn::start(bin, &["tick", "10"])?;
        w.go()?;
        w.result(Duration::from_secs(30))?;
        ws.push(w);
    }
    let dir = std::env::temp_dir().join(format!("sockleak-bench-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let report = dir.join("report.json");
    // `--cgroup` of the 1000 instead of `--all`: what they cost without the host's others.
    let group = if only_them {
        let pids: Vec<u32> = ws.iter().map(|w| w.pid).collect();
        Some(BenchCgroup::holding("all", &pids)?)
    } else {
        None
    };
    let scope: Vec<&str> = match &group {
        Some(g) => vec!["--cgroup", g.rel.as_str()],
        None => vec!["--all"],
    };
    let t = Tracer::start(
        Command::new(sockleak)
            .arg("trace")
            .args(&scope)
            .args([
                "--format",
                "json",
                "--interval",
                "2",
                "--log",
                "info",
                "--output",
            ])
            .arg(&report),
        "attached:",
    )?;
    let meter = CpuMeter::new(t.pid);
    let start = Instant::now();
    let c0 = meter.seconds().unwrap_or(0.0);
    // Each process makes a socket every 2 s, in turn: one line on its stdin every 2 ms.
    let period = Duration::from_secs(2) / n.max(1) as u32;
    let (mut c1, mut t1) = (None, start);
    let mut next = start;
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(25) {
        if c1.is_none() && start.elapsed() >= Duration::from_secs(5) {
            c1 = meter.seconds();
            t1 = Instant::now();
        }
        ws[i % n].go()?;
        i += 1;
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let c2 = meter.seconds().unwrap_or(0.0);
    let steady_s = t1.elapsed().as_secs_f64();
    let total_s = start.elapsed().as_secs_f64();
    let rss =
        sockleak::host::procfs::status_bytes(t.pid, "VmHWM").map_or(0.0, |b| b as f64 / 1048576.0);
    let mapped = bpf_map_mappings(t.pid);
    t.stop()?;
    drop(meter);
    drop(ws);
    drop(group);
    let v = read_report(&report)?;
    let _ = std::fs::remove_dir_all(&dir);
    let tables = &v["own_cost"]["unwind_tables"];
    let u = |k: &str| tables[k].as_u64().unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cap_mib = u("cap_bytes") as f64 / 1048576.0;
    // The process map holds 2056-byte entries; the row cache 1024 x 24 bytes per CPU.
    // sockleak maps the row array to fill it: its pages are in the RSS already when resident.
    let array_resident_mib = mapped
        .iter()
        .filter(|(size, _)| *size * 1024 == u("cap_bytes"))
        .map(|(_, rss)| *rss as f64 / 1024.0)
        .sum::<f64>()
        .min(cap_mib);
    let kernel_mib = cap_mib - array_resident_mib
        + (u("processes") as f64 * 2056.0 + cpus * 1024.0 * 24.0) / 1048576.0;
    Ok(AllTables {
        total_s,
        cpu_total: (c2 - c0) / total_s,
        cpu_steady: (c2 - c1.unwrap_or(c0)) / steady_s,
        rss_mib: rss,
        array_resident_mib,
        kernel_mib,
        cap_mib,
        rows_mib: u("bytes") as f64 / 1048576.0,
        files: u("files"),
        procs: u("processes"),
        walked: u("walked"),
        fallbacks: u("fallbacks"),
        build_s: tables["build_cpu_s"].as_f64().unwrap_or(0.0),
    })
}

/// (size, resident) KiB of each BPF map a process has mapped (`anon_inode:bpf-map` in smaps).
fn bpf_map_mappings(pid: u32) -> Vec<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let kib = |v: &str| {
        v.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut in_map = false;
    for l in smaps.lines() {
        let head = l.split_whitespace().next().unwrap_or("");
        if head.contains('-') && head.split('-').all(|h| u64::from_str_radix(h, 16).is_ok()) {
            in_map = l.ends_with("bpf-map");
            if in_map {
                out.push((0, 0));
            }
        } else if in_map && let Some(last) = out.last_mut() {
            if let Some(v) = l.strip_prefix("Size:") {
                last.0 = kib(v);
            } else if let Some(v) = l.strip_prefix("Rss:") {
                last.1 = kib(v);
            }
        }
    }
    out
}

/// Interpreted code with no flags: a CPython and a JVM (interpreted) process making sockets
/// two calls below main, their frames walked by sockleak; against the frame-pointer walk of
/// the C loop, measured alongside. Then a CPython process at 10,000 sockets a second: its call
/// sites all kept.
fn interpreted(out: &mut String, sockleak: &Path, churn: &Path, runs: usize) -> Result<()> {
    let root = workspace_root();
    let python = "/usr/bin/python3".to_string();
    let churn_py = root.join("xtask/workloads/churn.py").display().to_string();
    let classes = root.join("target/xtask/java");
    std::fs::create_dir_all(&classes)?;
    crate::util::run(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(root.join("xtask/workloads/Churn.java")),
    )?;
    let java = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java".to_string();
    let _ = writeln!(out, "\n{INTERPRETED_HEADING}\n");
    let _ = writeln!(
        out,
        "A CPython process (Debian's python3.11, a static build without frame pointers) and a JVM (JDK 17 \
         with `-Xint`, so every Java frame stays interpreted) each make sockets from a function two calls \
         below main. sockleak walks the interpreter's own frames in the kernel: CPython's frame chain from \
         the thread state CPython binds to the thread (no native stack per socket), the JVM's interpreter \
         frames on the frame-pointer chain (a `Method*` and bytecode index per frame, hashed with the \
         return addresses). A call path seen before costs the walk and a cache lookup; only a new one \
         captures the native stack and sends its frames to userspace."
    );
    let cfgs = || {
        vec![
            cfg("baseline (no tracer)", Tool::Baseline),
            cfg("sockleak (stacks)", sockleak_args(&[])),
            cfg("sockleak --no-stacks", sockleak_args(&["--no-stacks"])),
        ]
    };
    let c = Scenario {
        what: "C (frame pointers): socket()+close()",
        prog: None,
        args: vec!["socket".into(), "100000".into()],
        ops: 100_000,
        unit: "lifecycle",
        target: Target::Workload,
        cfgs: cfgs(),
    };
    let rows_c = measure(sockleak, churn, &c, runs)?;
    write_scenario(out, &c, &rows_c, runs);
    let py = Scenario {
        what: "CPython 3.11: socket()+close() two calls below main",
        prog: Some(vec![python.clone(), churn_py.clone()]),
        args: vec!["socket".into(), "100000".into()],
        ops: 100_000,
        unit: "lifecycle",
        target: Target::Workload,
        cfgs: cfgs(),
    };
    let rows_py = measure(sockleak, churn, &py, runs)?;
    write_scenario(out, &py, &rows_py, runs);
    let jv = Scenario {
        what: "JDK 17 interpreted (-Xint): SocketChannel.open()+close() two calls below main",
        prog: Some(vec![
            java,
            "-Xint".into(),
            "-cp".into(),
            classes.display().to_string(),
            "Churn".into(),
        ]),
        args: vec!["socket".into(), "50000".into()],
        ops: 50_000,
        unit: "lifecycle",
        target: Target::Workload,
        cfgs: cfgs(),
    };
    let rows_jv = measure(sockleak, churn, &jv, runs)?;
    write_scenario(out, &jv, &rows_jv, runs);
    let stack_ns = |rows: &[Measured]| {
        let get = |n: &str| {
            rows.iter()
                .find(|r| r.name == n)
                .map_or(f64::NAN, |r| r.bpf_ns)
        };
        get("sockleak (stacks)") - get("sockleak --no-stacks")
    };
    let (fp, pyc, jvc) = (stack_ns(&rows_c), stack_ns(&rows_py), stack_ns(&rows_jv));
    let _ = writeln!(
        out,
        "\n**Per socket, the stack's share of the BPF time** (stacks − `--no-stacks`, same run): CPython \
         frame walk **{pyc:.0} ns**, JVM frame-pointer walk with interpreted frames **{jvc:.0} ns**, against \
         **{fp:.0} ns** for the frame-pointer walk of the C loop ({:.1}x and {:.1}x). The CPython walk \
         reads the thread state's slot (3-4 reads), then one read per Python frame (5 here: `socket.__init__`, \
         `make_socket`, `churn`, `main`, the module); the JVM walk reads each frame-pointer step (a window \
         of the stack at a time) and, per interpreted frame, the method's ConstMethod and code size (which \
         check the bytecode index).",
        pyc / fp,
        jvc / fp
    );
    let (lost, named, kept, secs) = python_rate(sockleak, &python, &churn_py)?;
    let _ = writeln!(
        out,
        "\n**10,000 sockets a second** (CPython, 50,000 sockets in {secs:.1} s, 1 in 100 kept open): \
         **{lost}** stacks lost (`lost.stack_lost`), **{named} of {kept}** kept sockets with the call site \
         `make_socket (churn.py:N)`, with the default settings. A call path's frames reach userspace \
         once; the sockets after it cost the walk, not a copy of the stack (CPython used to need a copy \
         of the native stack per socket, unwound in userspace: most of them were lost at such rates)."
    );
    Ok(())
}

/// CPython at 10,000 sockets a second for 5 s, keeping 1 in 100: (stacks lost, kept sockets
/// whose call site is named, kept sockets, seconds).
fn python_rate(sockleak: &Path, python: &str, churn_py: &str) -> Result<(u64, u64, u64, f64)> {
    let mut w =
        Churn::start_cmd(Command::new(python).args([churn_py, "socket", "50000", "10000", "100"]))?;
    let t = Tracer::start(
        Command::new(sockleak).args([
            "--log",
            "info",
            "trace",
            "--format",
            "json",
            "--interval",
            "1",
            "--min-age",
            "0",
            "--pid",
            &w.pid.to_string(),
        ]),
        "attached:",
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    w.go()?;
    w.result(Duration::from_secs(120))?;
    let secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    let report = t
        .stop_report()?
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .context("no report from sockleak")?;
    let lost = report["lost"]["stack_lost"].as_u64().unwrap_or(u64::MAX);
    let p = report["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == w.pid))
        .context("the workload is not in the report")?;
    let named: u64 = p["suspects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["call_site"]
                .as_str()
                .is_some_and(|c| c.starts_with("make_socket (churn.py:"))
        })
        .filter_map(|s| s["count"].as_u64())
        .sum();
    Ok((lost, named, 500, secs))
}

/// Port `serve` listens on in the bench.
const SERVE_ADDR: &str = "127.0.0.1:19669";

/// One plain HTTP scrape of /metrics.
fn scrape() -> Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(SERVE_ADDR)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    Ok(())
}

/// `serve --all` under the connect loop, scraped every 5 s: (CPU fraction of one core, MiB).
fn serve_cpu(sockleak: &Path, churn: &Path, port: &str) -> Result<(f64, f64)> {
    let t = Tracer::start(
        Command::new(sockleak).args(["serve", "--all", "--listen", SERVE_ADDR, "--log", "info"]),
        "serving",
    )?;
    let c0 = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let start = Instant::now();
    let mut last_scrape = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let mut w = Churn::start(churn, &["connect", port, "20000"])?;
        w.go()?;
        w.result(Duration::from_secs(120))?;
        if last_scrape.elapsed() >= Duration::from_secs(5) {
            scrape().context("scraping serve's /metrics")?;
            last_scrape = Instant::now();
        }
    }
    let el = start.elapsed().as_secs_f64();
    let c1 = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let rss = rss_kib(t.pid).map_or(0.0, |r| r.0 as f64 / 1024.0);
    t.stop()?;
    Ok(((c1 - c0) / el, rss))
}

fn throughput(sockleak: &Path, churn: &Path) -> Result<(u64, bool, f64)> {
    let dir = std::env::temp_dir().join(format!("sockleak-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let report = dir.join("report.json");
    let t = Tracer::start(
        Command::new(sockleak)
            .args([
                "trace",
                "--all",
                "--format",
                "json",
                "--interval",
                "1",
                "--output",
            ])
            .arg(&report),
        "attached:",
    )?;
    let mut a = Churn::start(churn, &["socket", "500000"])?;
    let mut b = Churn::start(churn, &["socket", "500000"])?;
    let start = Instant::now();
    a.go()?;
    b.go()?;
    a.result(Duration::from_secs(600))?;
    b.result(Duration::from_secs(600))?;
    let secs = start.elapsed().as_secs_f64();
    let truth = (socket_fds(a.pid), socket_fds(b.pid));
    t.stop()?;
    let v = read_report(&report)?;
    let lost = v["lost_events"].as_u64().unwrap_or(u64::MAX);
    let exact = reported_live(&v, a.pid) == Some(truth.0 as u64)
        && reported_live(&v, b.pid) == Some(truth.1 as u64);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((lost, exact, secs))
}

fn read_report(p: &PathBuf) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_str(text.trim())?)
}

struct Mem {
    rss_mib: f64,
    map_mib: f64,
    report_s: f64,
    reported: u64,
    truth: usize,
}

fn memory(sockleak: &Path, churn: &Path) -> Result<Mem> {
    let mut ws = Vec::new();
    for _ in 0..10 {
        ws.push(Churn::start(churn, &["leak", "10000"])?);
    }
    let dir = std::env::temp_dir().join(format!("sockleak-bench-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let report = dir.join("report.json");
    let mut c = Command::new(sockleak);
    c.args([
        "trace",
        "--format",
        "json",
        "--interval",
        "1",
        "--min-age",
        "0",
        "--output",
    ])
    .arg(&report);
    for w in &ws {
        c.args(["--pid", &w.pid.to_string()]);
    }
    let maps_before = map_ids();
    let t = Tracer::start(&mut c, "attached:")?;
    for w in &mut ws {
        w.go()?;
    }
    for w in &mut ws {
        w.result(Duration::from_secs(120))?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let maps = map_memory(&maps_before);
    let truth: usize = ws.iter().map(|w| socket_fds(w.pid)).sum();
    let pid = t.pid;
    let hwm_before = rss_kib(pid).map_or(0, |r| r.1);
    // Peak RSS includes report building: sample it from a thread until exit.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(hwm_before));
    let p2 = peak.clone();
    let sampler = std::thread::spawn(move || {
        while let Some((_, hwm)) = rss_kib(pid) {
            p2.fetch_max(hwm, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // The report is written before the programs are detached: time until it is there.
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(t.pid as i32, libc::SIGINT) };
    while !report.exists() && sent.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = sent.elapsed();
    t.stop()?;
    let _ = sampler.join();
    let v = read_report(&report)?;
    let reported: u64 = v["processes"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["live_sockets"].as_u64()).sum())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Mem {
        rss_mib: peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0,
        map_mib: maps as f64 / 1048576.0,
        report_s: took.as_secs_f64(),
        reported,
        truth,
    })
}

fn bpftool_maps() -> Vec<serde_json::Value> {
    Command::new("bpftool")
        .args(["map", "show", "-j"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn map_ids() -> Vec<u64> {
    bpftool_maps()
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

/// Bytes of BPF map memory (bpftool's memlock accounting) of the maps created since `before`:
/// this bpftool cannot tell a map's owner, so sockleak's are the ones that appeared with it.
fn map_memory(before: &[u64]) -> u64 {
    bpftool_maps()
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| !before.contains(&id)))
        .filter_map(|m| m["bytes_memlock"].as_u64())
        .sum()
}

fn quiet_cpu(sockleak: &Path) -> Result<f64> {
    let t = Tracer::start(
        Command::new(sockleak).args([
            "trace",
            "--all",
            "--format",
            "json",
            "--interval",
            "2",
            "--log",
            "info",
        ]),
        "attached:",
    )?;
    let c0 = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let c1 = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let el = t0.elapsed().as_secs_f64();
    t.stop()?;
    Ok((c1 - c0) / el)
}

/// `trace --all` for 20 s with `n` idle processes holding 10 sockets each: (CPU fraction of one
/// core, peak MiB resident).
fn many_processes(sockleak: &Path, churn: &Path, n: usize) -> Result<(f64, f64)> {
    let mut ws = Vec::with_capacity(n);
    for _ in 0..n {
        let mut w = Churn::start(churn, &["leak", "10"])?;
        w.go()?;
        w.result(Duration::from_secs(30))?;
        ws.push(w);
    }
    let t = Tracer::start(
        Command::new(sockleak).args([
            "trace",
            "--all",
            "--format",
            "json",
            "--interval",
            "2",
            "--log",
            "info",
        ]),
        "attached:",
    )?;
    // Past start-up (seeding every process), then a steady 20 s.
    std::thread::sleep(Duration::from_secs(3));
    let c0 = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let c1 = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let el = t0.elapsed().as_secs_f64();
    let rss = rss_kib(t.pid).map_or(0.0, |r| r.1 as f64 / 1024.0);
    t.stop()?;
    drop(ws);
    Ok(((c1 - c0) / el, rss))
}
