//! `cargo xtask soak`: minutes of socket churn across processes that start and exit, traced by
//! cgroup. sockleak's RSS must stay flat, nothing may be lost, and the long-lived processes'
//! live counts must match /proc at the end. Writes docs/soak.md. Not run in CI.

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    procs::{Churn, Tracer, build_release, machine, reported_live, rss_kib, socket_fds},
    util::workspace_root,
};

const WORKERS: u64 = 4;
/// Each worker lives this long, then a new one replaces it.
const WORKER_SECS: u64 = 30;
const HOLDERS: usize = 2;
const HELD: u64 = 500;

fn in_cgroup(dir: &std::path::Path, bin: &std::path::Path, args: &[String]) -> Result<Churn> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            dir.display()
        ))
        .arg("sh")
        .arg(bin)
        .args(args);
    Churn::start_cmd(&mut c)
}

pub fn soak(minutes: f64, rate: u64) -> Result<()> {
    let (sockleak, churn) = build_release(false)?;
    let root = workspace_root();
    let cg = sockleak::host::cgroup::cgroup2_mount()
        .context("no cgroup2 hierarchy is mounted")?
        .join(format!("sockleak-soak-{}", std::process::id()));
    std::fs::create_dir_all(&cg)?;
    let report = std::env::temp_dir().join(format!("sockleak-soak-{}.json", std::process::id()));

    let t = Tracer::start(
        Command::new(&sockleak)
            .args(["trace", "--cgroup"])
            .arg(&cg)
            .args([
                "--format",
                "json",
                "--interval",
                "5",
                "--min-age",
                "0",
                "--output",
            ])
            .arg(&report),
        "attached:",
    )?;
    let mut holders = Vec::new();
    for _ in 0..HOLDERS {
        let mut h = in_cgroup(&cg, &churn, &["leak".into(), HELD.to_string()])?;
        h.go()?;
        h.result(Duration::from_secs(30))?;
        holders.push(h);
    }
    let per_worker = rate / WORKERS;
    let total = Duration::from_secs_f64(minutes * 60.0);
    let start = Instant::now();
    let mut workers: Vec<(Churn, Instant)> = Vec::new();
    let mut rss = Vec::new();
    let mut next_sample = start;
    let mut started = 0u64;
    let mut ops = 0u64;
    while start.elapsed() < total {
        // Keep WORKERS running; each does WORKER_SECS of paced churn, then exits.
        workers.retain_mut(|(w, since)| {
            if since.elapsed() > Duration::from_secs(WORKER_SECS + 5) {
                if w.result(Duration::from_millis(10)).is_ok() {
                    ops += per_worker * WORKER_SECS;
                }
                false
            } else {
                true
            }
        });
        while (workers.len() as u64) < WORKERS {
            let n = (per_worker * WORKER_SECS).to_string();
            let mut w = in_cgroup(&cg, &churn, &["socket".into(), n, per_worker.to_string()])?;
            w.go()?;
            workers.push((w, Instant::now()));
            started += 1;
        }
        if Instant::now() >= next_sample {
            let r = rss_kib(t.pid).map_or(0, |r| r.0);
            eprintln!(
                "xtask soak: {:>4.0}s  sockleak RSS {:.1} MiB  workers started {started}",
                start.elapsed().as_secs_f64(),
                r as f64 / 1024.0
            );
            rss.push((start.elapsed().as_secs_f64(), r));
            next_sample += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = sockleak::host::procfs::cpu_seconds(t.pid).unwrap_or(0.0);
    let truth: Vec<usize> = holders.iter().map(|h| socket_fds(h.pid)).collect();
    drop(workers);
    t.stop()?;
    let v: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&report)?.trim())?;
    let exact = holders
        .iter()
        .zip(&truth)
        .all(|(h, t)| reported_live(&v, h.pid) == Some(*t as u64));
    let lost = v["lost_events"].as_u64().unwrap_or(u64::MAX);
    drop(holders);
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_dir(&cg);

    // Flat: after the first minute's warm-up, RSS grows by at most 10% + 2 MiB.
    let warm: Vec<u64> = rss
        .iter()
        .filter(|(s, _)| *s >= 60.0)
        .map(|(_, r)| *r)
        .collect();
    let (first, last, max) = (
        warm.first().copied().unwrap_or(0),
        warm.last().copied().unwrap_or(0),
        rss.iter().map(|r| r.1).max().unwrap_or(0),
    );
    let flat = last as f64 <= first as f64 * 1.10 + 2048.0;
    let elapsed = start.elapsed().as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(out, "# sockleak soak run\n");
    let _ = writeln!(
        out,
        "Machine: {}. `cargo xtask soak --minutes {minutes} --rate {rate}`: {WORKERS} churn workers at \
         {per_worker}/s each (socket+close), each living {WORKER_SECS}s before a new one replaces it \
         ({started} processes in all), plus {HOLDERS} long-lived processes holding {HELD} sockets; \
         all in one cgroup traced with `--cgroup`.\n",
        machine()
    );
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "| --- | ---: |");
    let _ = writeln!(out, "| duration | {elapsed:.0} s |");
    let _ = writeln!(out, "| socket lifecycles (completed workers) | {ops} |");
    let _ = writeln!(out, "| lost events | {lost} |");
    let _ = writeln!(
        out,
        "| long-lived processes' live counts = /proc | {exact} ({truth:?}) |"
    );
    let _ = writeln!(
        out,
        "| sockleak RSS after warm-up: first / last / max | {:.1} / {:.1} / {:.1} MiB |",
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0
    );
    let _ = writeln!(out, "| RSS flat (last ≤ first x 1.1 + 2 MiB) | {flat} |");
    let _ = writeln!(
        out,
        "| sockleak CPU | {:.1}% of one core |",
        cpu / elapsed * 100.0
    );
    let _ = writeln!(
        out,
        "\nRSS samples (s, MiB): {}",
        rss.iter()
            .map(|(s, r)| format!("{s:.0}:{:.1}", *r as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{out}");
    std::fs::write(root.join("docs/soak.md"), &out)?;
    if !(flat && exact && lost == 0) {
        anyhow::bail!("soak failed: flat={flat} exact={exact} lost={lost}");
    }
    Ok(())
}
