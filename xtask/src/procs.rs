//! Helpers for bench and soak: the churn workload, tracers, /proc readings.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::{run, workspace_root};

/// Builds what bench and soak run: the release sockleak (with its kernel object) and the
/// churn workload. Returns their paths.
pub fn build_release(test_deps: bool) -> Result<(PathBuf, PathBuf)> {
    crate::setup::setup(test_deps)?;
    crate::build::build_ebpf(true)?;
    run(crate::util::cargo().args(["build", "--release", "--package", "sockleak"]))?;
    Ok((
        workspace_root().join("target/release/sockleak"),
        build_churn()?,
    ))
}

/// A process's live socket count in a sockleak JSON report.
pub fn reported_live(report: &serde_json::Value, pid: u32) -> Option<u64> {
    report["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)?["live_sockets"]
        .as_u64()
}

/// Compiles the churn workload into target/xtask/, with frame pointers (`churn`) and
/// without (`churn_nofp`, as most distribution packages are built). Returns the first.
pub fn build_churn() -> Result<PathBuf> {
    let root = workspace_root();
    let out_dir = root.join("target/xtask");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("churn");
    for (name, fp) in [
        ("churn", "-fno-omit-frame-pointer"),
        ("churn_nofp", "-fomit-frame-pointer"),
    ] {
        run(Command::new("gcc")
            .args(["-O2", "-g", fp, "-o"])
            .arg(out_dir.join(name))
            .arg(root.join("xtask/workloads/churn.c")))?;
    }
    Ok(out)
}

/// The churn workload built without frame pointers (beside `churn`).
pub fn churn_nofp(churn: &Path) -> PathBuf {
    churn.with_file_name("churn_nofp")
}

/// A running churn process: waits for `go`, reports `ns_per_op`, holds until dropped.
pub struct Churn {
    pub child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

fn reader(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

impl Churn {
    pub fn start(bin: &Path, args: &[&str]) -> Result<Churn> {
        Self::start_cmd(Command::new(bin).args(args))
    }

    pub fn start_cmd(cmd: &mut Command) -> Result<Churn> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting churn")?;
        let lines = reader(child.stdout.take().context("stdout")?);
        let stdin = child.stdin.take();
        let mut c = Churn {
            pid: child.id(),
            child,
            stdin,
            lines,
        };
        let ready = c.expect("ready", Duration::from_secs(10))?;
        if let Ok(p) = ready.trim().parse() {
            c.pid = p; // the real workload pid (behind `sh -c ... exec`)
        }
        Ok(c)
    }

    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("churn {}: no `{prefix}` line", self.pid))?;
            if let Some(rest) = l.strip_prefix(prefix) {
                return Ok(rest.trim().to_string());
            }
        }
    }

    /// Starts the work and waits for its ns/op.
    pub fn go(&mut self) -> Result<()> {
        let s = self.stdin.as_mut().context("stdin")?;
        writeln!(s, "go")?;
        s.flush()?;
        Ok(())
    }

    pub fn result(&mut self, timeout: Duration) -> Result<f64> {
        let r = self.expect("ns_per_op", timeout)?;
        r.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("parsing ns_per_op")
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tracer process (sockleak or bpftrace) that prints a line containing `ready_marker` once
/// attached.
pub struct Tracer {
    pub child: Child,
    pub pid: u32,
    /// Kept open: dropping it would close the tracer's stdout pipe under it.
    _stdout: mpsc::Receiver<String>,
}

impl Tracer {
    pub fn start(cmd: &mut Command, ready_marker: &str) -> Result<Tracer> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tracer")?;
        let stdout = reader(child.stdout.take().context("stdout")?);
        let stderr = reader(child.stderr.take().context("stderr")?);
        let deadline = Instant::now() + Duration::from_secs(60);
        let marker = ready_marker.to_string();
        loop {
            // sockleak says it on stderr, bpftrace on stdout.
            let got = stderr
                .recv_timeout(Duration::from_millis(50))
                .ok()
                .or_else(|| stdout.try_recv().ok());
            if let Some(l) = got
                && l.contains(&marker)
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tracer did not attach");
            }
            if let Ok(Some(st)) = child.try_wait() {
                bail!("tracer exited early: {st}");
            }
        }
        thread::spawn(move || while stderr.recv().is_ok() {});
        Ok(Tracer {
            pid: child.id(),
            child,
            _stdout: stdout,
        })
    }

    /// SIGINT; waits for exit and returns how long the exit took.
    pub fn stop(mut self) -> Result<Duration> {
        let t = Instant::now();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        Ok(t.elapsed())
    }

    /// Stops it and returns the last line it printed (sockleak's JSON report).
    pub fn stop_report(mut self) -> Result<Option<String>> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        let mut last = None;
        // The reader thread ends at EOF, after the last line.
        while let Ok(l) = self._stdout.recv_timeout(Duration::from_secs(5)) {
            last = Some(l);
        }
        Ok(last)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let get = |f| sockleak::host::procfs::status_bytes(pid, f).map(|b| b / 1024);
    Some((get("VmRSS")?, get("VmHWM")?))
}

pub fn socket_fds(pid: u32) -> usize {
    sockleak::host::procfs::socket_fds(pid).map_or(0, |v| v.len())
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or("?".into(), |k| format!("{:.0} GiB", k as f64 / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} x {cpu}, {mem} RAM, Linux {}", kernel.trim())
}

/// A process's CPU time to the microsecond: /proc/PID/stat counts clock ticks (10 ms here,
/// 20 % of what a 5 s run at 10,000 sockets/s costs sockleak), so the process is moved into a
/// cgroup of its own and its `cpu.stat` `usage_usec` is read. Without cgroup v2, the ticks.
pub struct CpuMeter {
    pid: u32,
    dir: Option<PathBuf>,
}

impl CpuMeter {
    pub fn new(pid: u32) -> CpuMeter {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = sockleak::host::cgroup::cgroup2_mount().and_then(|root| {
            let dir = root.join(format!("sockleak-bench-cpu-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).ok()?;
            Some(dir)
        });
        CpuMeter { pid, dir }
    }

    /// CPU seconds (user + system) the process used since it was moved (or since it started).
    pub fn seconds(&self) -> Option<f64> {
        let Some(dir) = &self.dir else {
            return sockleak::host::procfs::cpu_seconds(self.pid);
        };
        let s = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let us: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(us / 1e6)
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        // Removable once the process has exited (the tracer is stopped before this).
        if let Some(d) = &self.dir {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
