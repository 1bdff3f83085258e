//! Shared helpers for the privileged integration tests: privilege gate, workloads, the real
//! sockleak binary, and ground truth from /proc.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Gate for tests that load BPF. In CI (CI=true) a missing privilege is a failure; elsewhere
/// the test is skipped with the reason printed.
pub fn require_bpf() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let reason = "integration tests load eBPF programs and must run as root (cargo xtask test)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// How much slower than a developer's host the machine under test runs:
/// `SOCKLEAK_TEST_TIME_SCALE` (`cargo xtask vmtest` sets it for kernels under emulation).
/// It stretches the harness's waits (attach, replies, log lines), never what a test expects
/// of sockleak on a normal machine.
pub fn time_scale() -> f64 {
    std::env::var("SOCKLEAK_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v >= 1.0)
        .unwrap_or(1.0)
}

/// A wait of the harness, stretched by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

pub fn sockleak_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sockleak"))
}

/// Serializes builds: tests run in parallel threads and must not race on one output file.
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Compiles a C workload from tests/workloads once per test binary run.
pub fn build_c(name: &str) -> PathBuf {
    build_c_with(name, &[])
}

/// Compiles a C workload, linking `libs` (e.g. `-luring`, from liburing-dev, which
/// `cargo xtask test` installs).
pub fn build_c_with(name: &str, libs: &[&str]) -> PathBuf {
    build_c_opts(name, &["-g", "-O0", "-fno-omit-frame-pointer"], libs)
}

/// Where built workloads are kept, named by a hash of what went into them: a test run reuses
/// what an earlier run (or another test binary, or the host before a VM run) built.
fn workload_cache() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn content_key(parts: &[&[u8]]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Builds `out` with `build` (given a temporary path) unless it exists; the rename makes a
/// concurrent build of the same key harmless.
fn build_once(out: &Path, build: impl FnOnce(&Path)) {
    if out.exists() {
        return;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    build(&tmp);
    std::fs::rename(&tmp, out).unwrap();
}

/// Compiles a C workload with the given compiler flags (each set of flags its own binary).
pub fn build_c_opts(name: &str, cflags: &[&str], libs: &[&str]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(format!("{name}.c"));
    let code = std::fs::read(&src).unwrap();
    let key = content_key(&[
        &code,
        cflags.join(" ").as_bytes(),
        libs.join(" ").as_bytes(),
    ]);
    let out = workload_cache().join(format!("{name}-{key}"));
    build_once(&out, |tmp| {
        let st = Command::new("gcc")
            .args(cflags)
            .arg("-o")
            .arg(tmp)
            .arg(&src)
            .args(libs)
            .status()
            .expect("gcc runs");
        assert!(st.success(), "compiling {}", src.display());
    });
    out
}

/// Builds a Go workload (stdlib only) from tests/workloads/<name>.go.
pub fn build_go(name: &str) -> PathBuf {
    build_go_with(name, &[])
}

/// Builds a Go workload with extra `go build` flags (e.g. `-ldflags=-s -w` for a stripped
/// binary, as production images often are).
pub fn build_go_with(name: &str, flags: &[&str]) -> PathBuf {
    build_go_using(Path::new("go"), name, flags)
}

/// A Go toolchain of a given minor version, as Debian installs it (`cargo xtask test` installs
/// go1.19, Debian's golang-go, and go1.23 from bookworm-backports).
pub fn go_toolchain(minor: u32) -> PathBuf {
    let go = PathBuf::from(format!("/usr/lib/go-1.{minor}/bin/go"));
    assert!(
        go.exists(),
        "{} is missing: cargo xtask test installs golang-1.{minor}-go",
        go.display()
    );
    go
}

/// Builds a Go workload with a given toolchain and `go build` flags; each (toolchain, flags)
/// is a binary of its own.
pub fn build_go_using(go: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(format!("{name}.go"));
    // Under target/: the Go build cache survives between runs (net/http is slow to build).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    std::fs::create_dir_all(&dir).unwrap();
    let code = std::fs::read(&src).unwrap();
    let key = content_key(&[
        &code,
        go.as_os_str().as_encoded_bytes(),
        flags.join(" ").as_bytes(),
    ]);
    let out = workload_cache().join(format!("{name}-go-{key}"));
    build_once(&out, |tmp| {
        let st = Command::new(go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(tmp)
            .arg(&src)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .status()
            .expect("go runs (golang-go; cargo xtask test installs it)");
        assert!(st.success(), "building {}", src.display());
    });
    out
}

/// The line of a workload's source that holds `marker` (1-based): where a test expects a
/// call site.
pub fn source_line(file: &str, marker: &str) -> u32 {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/workloads")
            .join(file),
    )
    .unwrap();
    let i = src
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` in {file}"));
    i as u32 + 1
}

/// A line-oriented child: commands on stdin, replies on stdout (read by a thread so waits can
/// time out).
pub struct Workload {
    pub child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

fn line_reader(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Workload {
    pub fn spawn(cmd: &mut Command) -> Workload {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn workload");
        let lines = line_reader(child.stdout.take().unwrap());
        let pid = child.id();
        let mut w = Workload {
            child,
            pid,
            stdin: None,
            lines,
        };
        w.stdin = w.child.stdin.take();
        w
    }

    /// Waits for a line starting with `prefix` and returns the rest.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("workload {} gave no `{prefix}` line", self.pid));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Sends a command that gets no reply (e.g. `exit`).
    pub fn cmd_no_reply(&mut self, c: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{c}")?;
        stdin.flush()
    }

    /// Sends a command and returns the numbers of its `ok` reply.
    pub fn cmd(&mut self, c: &str) -> Vec<i64> {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{c}").unwrap();
        stdin.flush().unwrap();
        self.expect("ok")
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // The whole process group: forked children too.
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Socket fds in /proc/PID/fd: the ground truth.
pub fn proc_socket_fds(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_str()?
                .starts_with("socket:")
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect();
    v.sort();
    v
}

/// The real sockleak binary running `trace`, JSON output.
pub struct Trace {
    child: Child,
    stdout: mpsc::Receiver<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Trace {
    /// Starts `sockleak trace --format json <args>` and waits until it has attached.
    pub fn start(args: &[&str]) -> Trace {
        Self::spawn(&["trace", "--format", "json"], args)
    }

    /// Starts `sockleak trace --format text <args>` and waits until it has attached.
    pub fn text(args: &[&str]) -> Trace {
        Self::spawn(&["trace", "--format", "text"], args)
    }

    /// Starts `sockleak serve <args>` and waits until it has attached.
    pub fn serve(args: &[&str]) -> Trace {
        Self::spawn(&["serve"], args)
    }

    fn spawn(sub: &[&str], args: &[&str]) -> Trace {
        let mut child = Command::new(sockleak_bin())
            .args(sub)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockleak");
        let stdout = line_reader(child.stdout.take().unwrap());
        let stderr_lines = {
            let err = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let deadline = Instant::now() + scaled(Duration::from_secs(60));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("sockleak: {line}");
                    let attached = line.contains("attached:");
                    stderr.lock().unwrap().push_str(&(line + "\n"));
                    if attached {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "sockleak did not attach (exit {:?}): {}{}",
                        out.status,
                        stderr.lock().unwrap(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        // Keep collecting stderr in the background.
        let sink = stderr.clone();
        thread::spawn(move || {
            while let Ok(line) = stderr_lines.recv() {
                eprintln!("sockleak: {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Trace {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr line containing `marker` and returns it.
    pub fn wait_log(&self, marker: &str) -> String {
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while Instant::now() < deadline {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains(marker))
            {
                return l.to_string();
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no `{marker}` in sockleak's log: {}",
            self.stderr.lock().unwrap()
        );
    }

    /// SIGINT, then the final report (the last JSON line of type "report").
    pub fn stop(mut self) -> Value {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// SIGINT, then everything it wrote: (stdout, stderr), after a successful exit.
    pub fn stop_output(mut self) -> (String, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "sockleak exited with {status}: {}",
            self.stderr.lock().unwrap()
        );
        let mut out = String::new();
        while let Ok(line) = self.stdout.recv_timeout(scaled(Duration::from_secs(5))) {
            out.push_str(&line);
            out.push('\n');
        }
        // The stderr reader ends with the pipe; give it a moment to append the last lines.
        thread::sleep(Duration::from_millis(100));
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }

    /// Waits for sockleak to exit by itself; its status.
    pub fn wait_status(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Waits for sockleak to exit by itself and returns its report.
    pub fn finish(&mut self) -> Value {
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "sockleak exited with {status}: {}",
            self.stderr.lock().unwrap()
        );
        let mut report = None;
        while let Ok(line) = self.stdout.recv_timeout(scaled(Duration::from_secs(5))) {
            let v: Value = serde_json::from_str(&line).expect("JSON line");
            if v["type"] == "report" {
                report = Some(v);
            }
        }
        report.expect("a final report line")
    }

    /// The next JSON line of any type.
    pub fn next_line(&mut self) -> Value {
        let line = self
            .stdout
            .recv_timeout(scaled(Duration::from_secs(30)))
            .expect("a JSON line");
        serde_json::from_str(&line).expect("JSON line")
    }

    /// The next snapshot line.
    pub fn next_snapshot(&mut self) -> Value {
        loop {
            let line = self
                .stdout
                .recv_timeout(scaled(Duration::from_secs(30)))
                .expect("a snapshot line");
            let v: Value = serde_json::from_str(&line).expect("JSON line");
            if v["type"] == "snapshot" {
                return v;
            }
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The report entry of one process.
pub fn process(report: &Value, pid: u32) -> &Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in report: {report:#}"))
}

/// Symbol names of a stack.
pub fn symbols(stack: &Value) -> Vec<String> {
    stack
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["symbol"].as_str().map(str::to_string))
        .collect()
}

/// The suspect whose stack contains `symbol`.
pub fn suspect_at<'a>(proc_: &'a Value, symbol: &str) -> Option<&'a Value> {
    proc_["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| symbols(&s["stack"]).iter().any(|f| f == symbol))
}

pub fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

/// A TCP server (untraced) that accepts and closes each connection after the client's FIN, so
/// the client side ends in TIME_WAIT. `prefix` runs it elsewhere (e.g. `ip netns exec NS`).
pub fn closing_server(prefix: &[&str]) -> (Workload, u16) {
    const PY: &str = concat!(
        "import socket\n",
        "s=socket.socket()\n",
        "s.bind(('127.0.0.1',0))\n",
        "s.listen(128)\n",
        "print('listening', s.getsockname()[1], flush=True)\n",
        "while True:\n",
        "    c,_=s.accept()\n",
        "    c.recv(1)\n",
        "    c.close()\n",
    );
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("python3");
            c
        }
        None => Command::new("python3"),
    };
    cmd.args(["-c", PY]);
    let mut w = Workload::spawn(&mut cmd);
    let port = w.expect("listening").parse().unwrap();
    (w, port)
}

/// A network namespace made for one test and deleted after it.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("sockleak-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs (iproute2)");
        assert!(ok.success(), "ip netns add {name}");
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The failure entry of a process for (syscall, errno).
pub fn failure<'a>(proc_: &'a Value, syscall: &str, errno: &str) -> &'a Value {
    proc_["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["syscall"] == syscall && f["errno"] == errno)
        .unwrap_or_else(|| panic!("no {syscall} {errno} failure in {proc_:#}"))
}

pub fn set_nofile(pid: u32, soft: u64, hard: u64) {
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

/// The process's diagnoses with this pattern id.
pub fn diagnoses<'a>(proc_: &'a Value, pattern: &str) -> Vec<&'a Value> {
    proc_["diagnoses"]
        .as_array()
        .unwrap_or_else(|| panic!("no diagnoses array: {proc_:#}"))
        .iter()
        .filter(|d| d["pattern"] == pattern)
        .collect()
}

/// The one diagnosis with this pattern id.
pub fn diagnosis<'a>(proc_: &'a Value, pattern: &str) -> &'a Value {
    match diagnoses(proc_, pattern)[..] {
        [d] => d,
        _ => panic!(
            "expected one {pattern} diagnosis in {:#}",
            proc_["diagnoses"]
        ),
    }
}

/// Whether some evidence line of a diagnosis contains `text`.
pub fn evidence_has(d: &Value, text: &str) -> bool {
    d["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().is_some_and(|e| e.contains(text)))
}

/// Asserts that no diagnosis has one of these ids.
pub fn no_diagnosis(proc_: &Value, patterns: &[&str]) {
    for p in patterns {
        assert!(
            diagnoses(proc_, p).is_empty(),
            "unexpected {p}: {:#}",
            proc_["diagnoses"]
        );
    }
}

/// An HTTP GET with an optional Accept header: (status, content type, body).
pub fn http_get(url: &str, accept: Option<&str>) -> (u16, String, String) {
    // Error statuses are answers here, not failures of the request.
    let mut req = ureq::get(url).config().http_status_as_error(false).build();
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let mut resp = req.call().expect("HTTP GET");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.body_mut().read_to_string().unwrap();
    (status, ctype, body)
}
