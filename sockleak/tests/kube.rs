//! Kubernetes names and filters against a real CRI runtime: Debian's containerd (its CRI plugin
//! built in), started here with a private config (cgroupfs, host network so no CNI, a local
//! pause image), with two tiny static images imported with `ctr` (no registry is reachable).
//! The test plays the kubelet through sockleak's own CRI client: it runs pod sandboxes
//! `team-a/leaky` and `team-b/quiet`, each with a container named `app`, and later more pods,
//! then checks what sockleak traces and how it names it against /proc.
//!
//! Everything is torn down when the test ends, also when it fails: pods through the CRI, then
//! containerd, leftover shims and processes, mounts, the state directory and the pod cgroups.

mod common;

use std::{
    io::{Read, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Trace, build_c_opts, http_get, proc_socket_fds, process, sleep_ms};
use serde_json::Value;
use sockleak::host::cri::{client, v1};
use tonic::transport::Channel;

type Rt = v1::runtime_service_client::RuntimeServiceClient<Channel>;

/// Pod uids start with this, so cleanup finds exactly the test's pod cgroups.
const UID_PREFIX: &str = "5c1eaa00-0000-4000-8000-";
const PAUSE_IMAGE: &str = "localhost/sockleak/pause:test";
const APP_IMAGE: &str = "localhost/sockleak/leaky:test";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// containerd, runc and ctr are installed (`cargo xtask test` installs containerd); in CI
/// their absence fails the test.
fn require_containerd() -> bool {
    if !common::require_bpf() {
        return false;
    }
    let missing: Vec<&str> = ["containerd", "ctr", "runc"]
        .into_iter()
        .filter(|b| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{} not installed: `cargo xtask test` installs them (apt-get install containerd)",
        missing.join(", ")
    );
    if in_ci() {
        panic!("CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn which(bin: &str) -> String {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The private containerd and the pods made through it. Dropping it tears everything down.
struct Node {
    dir: PathBuf,
    sock: PathBuf,
    containerd: Option<Child>,
    tokio: tokio::runtime::Runtime,
    rt: Option<Rt>,
    /// Sandbox ids made.
    pods: Vec<String>,
    /// `kubepods` directories of the cgroup hierarchies that had none before: removed at the
    /// end.
    new_kubepods: Vec<PathBuf>,
}

/// One pod as the kubelet would describe it.
struct Pod {
    namespace: &'static str,
    name: &'static str,
    uid_n: u32,
    labels: &'static [(&'static str, &'static str)],
    /// The app's arguments: connections to open, seconds to wait first.
    args: &'static [&'static str],
}

impl Pod {
    fn uid(&self) -> String {
        format!("{UID_PREFIX}{:012}", self.uid_n)
    }
}

impl Node {
    fn start() -> Node {
        let dir = std::env::temp_dir().join(format!("sockleak-kube-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cni")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let config = std::fs::read_to_string(tests_dir().join("kube/containerd.toml.in"))
            .unwrap()
            .replace("@T@", dir.to_str().unwrap())
            .replace("@RUNC@", &which("runc"));
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut node = Node {
            sock: dir.join("containerd.sock"),
            dir,
            containerd: None,
            tokio,
            rt: None,
            pods: Vec::new(),
            new_kubepods: kubepods_dirs()
                .into_iter()
                .filter(|d| !d.exists())
                .collect(),
        };
        node.run_containerd();
        // Two static binaries as images: the sandbox's pause and the app.
        let flags = ["-static", "-O2"];
        for (src, name, image) in [
            ("kube_pause", "pause", PAUSE_IMAGE),
            ("kube_leaky", "leaky", APP_IMAGE),
        ] {
            let bin = node.dir.join("bin").join(name);
            std::fs::copy(build_c_opts(src, &flags, &[]), &bin).unwrap();
            let tar = node.dir.join(format!("{name}.tar"));
            let st = Command::new("sh")
                .arg(tests_dir().join("kube/mkimage.sh"))
                .args([image, tar.to_str().unwrap(), bin.to_str().unwrap()])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "mkimage {name}");
            node.ctr(&["images", "import", tar.to_str().unwrap()]);
        }
        node
    }

    fn ctr(&self, args: &[&str]) -> String {
        let o = Command::new("ctr")
            .arg("-a")
            .arg(&self.sock)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr runs");
        assert!(
            o.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts containerd and waits until its CRI answers `Version`.
    fn run_containerd(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        self.containerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let sock = self.sock.clone();
        loop {
            if self.tokio.block_on(client::Runtime::open(&sock)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not answer within 30s: {}",
                std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
            );
            sleep_ms(50);
        }
        let _in_runtime = self.tokio.enter(); // the channel spawns its connection task
        self.rt = Some(client::channel(&self.sock));
    }

    /// Stops containerd (SIGTERM): the pods' shims and containers keep running, as when the
    /// runtime is restarted on a node.
    fn stop_containerd(&mut self) {
        if let Some(mut c) = self.containerd.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                sleep_ms(20);
            }
            let _ = c.wait();
        }
        self.rt = None;
    }

    fn rt(&mut self) -> Rt {
        self.rt.clone().expect("containerd runs")
    }

    /// RunPodSandbox, CreateContainer `app`, StartContainer. Returns the app's container id.
    fn run_pod(&mut self, p: &Pod) -> String {
        let mut rt = self.rt();
        let uid = p.uid();
        let mut labels: std::collections::HashMap<String, String> = p
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // What the kubelet adds to every sandbox.
        labels.insert("io.kubernetes.pod.name".into(), p.name.into());
        labels.insert("io.kubernetes.pod.namespace".into(), p.namespace.into());
        labels.insert("io.kubernetes.pod.uid".into(), uid.clone());
        let log_dir = self
            .dir
            .join(format!("pods/{}_{}_{uid}", p.namespace, p.name));
        std::fs::create_dir_all(&log_dir).unwrap();
        let sandbox = v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: p.name.into(),
                uid: uid.clone(),
                namespace: p.namespace.into(),
                attempt: 0,
            }),
            // No hostname: a host-network pod shares the host's UTS namespace.
            log_directory: log_dir.to_str().unwrap().into(),
            labels,
            linux: Some(v1::LinuxPodSandboxConfig {
                // What the kubelet's cgroupfs driver passes for a BestEffort pod.
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: v1::NamespaceMode::Node as i32,
                        pid: v1::NamespaceMode::Pod as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sb = self
            .tokio
            .block_on(rt.run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox {}/{}: {e}", p.namespace, p.name))
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(sb.clone());
        let container = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: APP_IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["/leaky".into()],
            args: p.args.iter().map(|s| s.to_string()).collect(),
            log_path: "app/0.log".into(),
            linux: Some(v1::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let id = self
            .tokio
            .block_on(rt.create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sb,
                config: Some(container),
                sandbox_config: Some(sandbox),
            }))
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        self.tokio
            .block_on(rt.start_container(v1::StartContainerRequest {
                container_id: id.clone(),
            }))
            .expect("StartContainer");
        id
    }

    /// Stops and removes every pod (best effort).
    fn remove_pods(&mut self) {
        let Some(mut rt) = self.rt.clone() else {
            return;
        };
        let listed: Vec<String> = self
            .tokio
            .block_on(rt.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None }))
            .map(|r| r.into_inner().items.into_iter().map(|p| p.id).collect())
            .unwrap_or_default();
        for id in listed.iter().chain(&self.pods) {
            let _ = self
                .tokio
                .block_on(rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }));
            let _ = self
                .tokio
                .block_on(rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }));
        }
        self.pods.clear();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The runtime may have been frozen or stopped by a failed test: the pods are removed
        // through it.
        if let Some(c) = &self.containerd {
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        }
        if self.containerd.is_none() {
            self.run_containerd_quietly();
        }
        self.remove_pods();
        // Tasks the CRI could not remove: killed while containerd runs, so their shims exit.
        if self.containerd.is_some() {
            let ctr = |args: &[&str]| {
                Command::new("ctr")
                    .arg("-a")
                    .arg(&self.sock)
                    .args(["-n", "k8s.io"])
                    .args(args)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            };
            for id in ctr(&["tasks", "ls", "-q"]).lines() {
                ctr(&["tasks", "delete", "-f", id]);
            }
            for id in ctr(&["containers", "ls", "-q"]).lines() {
                ctr(&["containers", "delete", id]);
            }
        }
        self.stop_containerd();
        // Last resort: shims still alive, then any process left in the test's pod cgroups.
        if let Ok(shims) = glob_dirs(&self.dir.join("state/io.containerd.runtime.v2.task"), 2) {
            for d in shims {
                if let Ok(pid) = std::fs::read_to_string(d.join("shim.pid"))
                    && let Ok(pid) = pid.trim().parse::<i32>()
                {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let cgroups = test_pod_cgroups();
        for d in &cgroups {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Mounts under the test directory (rootfs, shm), deepest first.
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .filter(|m| m.starts_with(self.dir.to_str().unwrap_or("/nonexistent")))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The pod cgroups (the kubelet's job, not the CRI's), deepest first.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = test_pod_cgroups();
        while !left.is_empty() && Instant::now() < deadline {
            left.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
            for d in &left {
                let _ = std::fs::remove_dir(d);
            }
            left = test_pod_cgroups();
            if !left.is_empty() {
                sleep_ms(50);
            }
        }
        if !left.is_empty() {
            eprintln!("cgroups left behind: {left:?}");
        }
        for d in &self.new_kubepods {
            let _ = std::fs::remove_dir(d.join("besteffort"));
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Where the pods' cgroup parent `/kubepods` lives in each hierarchy (v1 controllers, the
/// unified one, or pure v2).
fn kubepods_dirs() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/sys/fs/cgroup/kubepods")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        out.extend(
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join("kubepods")),
        );
    }
    out.retain(|d| d.parent().is_some_and(|p| p.join("cgroup.procs").exists()));
    out
}

impl Node {
    fn run_containerd_quietly(&mut self) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_containerd())).is_err()
        {
            eprintln!("containerd did not restart for cleanup");
        }
    }
}

/// Directories `depth` levels below `dir`.
fn glob_dirs(dir: &Path, depth: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for d in level {
            for e in std::fs::read_dir(d)?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    Ok(level)
}

/// The test pods' cgroup directories (and their children) in every hierarchy.
fn test_pod_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/kubepods/besteffort")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path().join("kubepods/besteffort")));
    }
    for r in roots {
        let Ok(rd) = std::fs::read_dir(&r) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("pod{UID_PREFIX}")) {
                let pod = e.path();
                if let Ok(kids) = std::fs::read_dir(&pod) {
                    out.extend(
                        kids.flatten()
                            .filter(|k| k.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|k| k.path()),
                    );
                }
                out.push(pod);
            }
        }
    }
    out
}

/// The host pid of a container's process (its cgroup path holds the id).
fn pid_of(container_id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if cg
                .lines()
                .any(|l| l.starts_with("0::") && l.contains(container_id))
                && comm.trim() == "leaky"
            {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leaky process in container {container_id}"
        );
        sleep_ms(50);
    }
}

/// Waits until `pid` holds `n` sockets (the app opened them all).
fn wait_sockets(pid: u32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while proc_socket_fds(pid).len() != n {
        assert!(
            Instant::now() < deadline,
            "pid {pid} holds {} sockets, not {n}",
            proc_socket_fds(pid).len()
        );
        sleep_ms(50);
    }
}

fn pids_in(report: &Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

/// `sockleak trace ARGS` that must fail: its stderr, which must be one line.
fn fails(args: &[&str]) -> String {
    let o = Command::new(common::sockleak_bin())
        .arg("trace")
        .args(args)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Scrapes /metrics once sockleak serves it.
fn metrics(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = format!("http://127.0.0.1:{port}/metrics");
        if let Ok(r) = std::panic::catch_unwind(|| http_get(&url, None))
            && r.0 == 200
        {
            return r.2;
        }
        assert!(Instant::now() < deadline, "no /metrics on {port}");
        sleep_ms(100);
    }
}

/// Scrapes /metrics until `done` holds (or a deadline passes: the last scrape then shows
/// what was wrong in the assertions that follow).
fn metrics_until(port: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(15));
    loop {
        let m = metrics(port);
        if done(&m) || Instant::now() > deadline {
            return m;
        }
        sleep_ms(200);
    }
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const LEAKY: Pod = Pod {
    namespace: "team-a",
    name: "leaky",
    uid_n: 1,
    labels: &[("app", "leaky"), ("tier", "web")],
    args: &["20", "0"],
};
const QUIET: Pod = Pod {
    namespace: "team-b",
    name: "quiet",
    uid_n: 2,
    labels: &[("app", "quiet")],
    args: &["5", "0"],
};
/// Started after sockleak: waits a second, then opens its sockets.
const LATE: Pod = Pod {
    namespace: "team-a",
    name: "late",
    uid_n: 3,
    labels: &[("app", "late"), ("tier", "web")],
    args: &["10", "1"],
};
/// Up before sockleak, opens its sockets after sockleak attached.
const SLOW: Pod = Pod {
    namespace: "team-a",
    name: "slow",
    uid_n: 5,
    labels: &[("app", "slow")],
    args: &["10", "4"],
};
const LATE_OTHER: Pod = Pod {
    namespace: "team-b",
    name: "quiet2",
    uid_n: 4,
    labels: &[("app", "quiet")],
    args: &["3", "1"],
};

#[test]
fn kubernetes_pods_through_the_cri() {
    if !require_containerd() {
        return;
    }
    let t0 = Instant::now();
    let mut node = Node::start();
    let sock = node.sock.to_str().unwrap().to_string();
    let leaky_id = node.run_pod(&LEAKY);
    let quiet_id = node.run_pod(&QUIET);
    let leaky = pid_of(&leaky_id);
    let quiet = pid_of(&quiet_id);
    // A listener, 20 connects, 20 accepts; 1 + 5 + 5.
    wait_sockets(leaky, 41);
    wait_sockets(quiet, 11);
    eprintln!("containerd and two pods up in {:?}", t0.elapsed());

    // Bad input: one line naming it and what is near.
    let e = fails(&["--cri-socket", &sock, "--namespace", "team-x"]);
    assert_eq!(
        e,
        "sockleak: --namespace team-x: no pod of namespace team-x runs on this node; namespaces with pods here: team-a, team-b"
    );
    let e = fails(&[
        "--cri-socket",
        &sock,
        "--namespace",
        "team-a",
        "--pod",
        "leakyy",
    ]);
    assert_eq!(
        e,
        "sockleak: --pod leakyy: no pod leakyy in namespace team-a on this node; pods there: leaky"
    );
    let e = fails(&[
        "--cri-socket",
        &sock,
        "--namespace",
        "team-b",
        "--pod",
        "leaky",
    ]);
    assert!(
        e.ends_with("pods there: quiet (a pod leaky runs in namespace team-a)"),
        "{e}"
    );
    let e = fails(&["--cri-socket", &sock, "--selector", "app=nope"]);
    assert!(e.contains("their labels: app=leaky, app=quiet"), "{e}");

    // --namespace team-a --pod leaky: exactly the leaking container, counts as /proc has them.
    let tr = Trace::start(&[
        "--cri-socket",
        &sock,
        "--namespace",
        "team-a",
        "--pod",
        "leaky",
        "--interval",
        "0.5",
        "--min-age",
        "0",
    ]);
    let attached = tr.wait_log("attached:");
    assert!(
        attached.contains("1 container(s) matching --namespace team-a --pod leaky")
            && attached.contains("Kubernetes names from containerd ")
            && attached.contains(&format!(" (CRI v1) at {sock};")),
        "{attached}"
    );
    sleep_ms(1500); // a few syncs
    let truth = proc_socket_fds(leaky).len() as u64;
    let report = tr.stop();
    assert_eq!(pids_in(&report), vec![u64::from(leaky)], "{report}");
    let p = process(&report, leaky);
    assert_eq!(p["live_sockets"], truth, "{p}");
    assert_eq!(truth, 41);
    assert_eq!(
        p["k8s"],
        serde_json::json!({"namespace": "team-a", "pod": "leaky", "pod_uid": LEAKY.uid(), "container": "app"})
    );
    assert_eq!(p["container"], leaky_id.as_str());

    // --selector: the pod labels the kubelet copied to the sandbox.
    let tr = Trace::start(&[
        "--cri-socket",
        &sock,
        "--selector",
        "tier=web,app!=late",
        "--interval",
        "0.5",
    ]);
    sleep_ms(1000);
    let report = tr.stop();
    assert_eq!(pids_in(&report), vec![u64::from(leaky)], "{report}");

    // Both containers are named app: --namespace tells them apart (text report).
    let tr = Trace::text(&[
        "--cri-socket",
        &sock,
        "--namespace",
        "team-b",
        "--container-name",
        "app",
        "--interval",
        "0.5",
    ]);
    sleep_ms(1500);
    let (out, _) = tr.stop_output();
    let header = out
        .lines()
        .find(|l| l.starts_with(&format!("PID {quiet} (leaky)")))
        .unwrap_or_else(|| panic!("no header for pid {quiet}: {out}"));
    assert!(
        header.ends_with(" pod team-b/quiet container app"),
        "{header}"
    );
    assert!(
        out.contains(&format!(
            "== pod team-b/quiet container app ({}) ==",
            &quiet_id[..12]
        )),
        "{out}"
    );
    assert!(!out.contains(&format!("PID {leaky} ")), "{out}");
    assert!(!out.contains("team-a"), "{out}");

    // serve --namespace team-a: pods started later are followed (team-a/late from its first
    // socket, team-b/quiet2 never), labels in /metrics and /report, and the runtime stopping
    // mid-trace is said once while tracing goes on.
    let slow_id = node.run_pod(&SLOW);
    let slow = pid_of(&slow_id);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let tr = Trace::serve(&[
        "--cri-socket",
        &sock,
        "--namespace",
        "team-a",
        "--listen",
        &listen,
        "--interval",
        "0.5",
        "--min-age",
        "0",
        "--cri-resync",
        "1",
    ]);
    let late_id = node.run_pod(&LATE);
    let other_id = node.run_pod(&LATE_OTHER);
    let late = pid_of(&late_id);
    let other = pid_of(&other_id);
    wait_sockets(late, 21);
    wait_sockets(other, 7);
    wait_sockets(slow, 21);
    // A sync, a listing for the new ids, another sync.
    let late_labels = ["namespace=\"team-a\"", "pod=\"late\"", "container=\"app\""];
    let m = metrics_until(port, |m| {
        sample(m, "sockleak_live_sockets", &late_labels) == Some(21.0)
            && sample(m, "sockleak_live_sockets", &["pod=\"slow\""]) == Some(21.0)
            && !m.contains("team-b")
    });
    assert_eq!(
        sample(&m, "sockleak_live_sockets", &late_labels),
        Some(21.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "sockleak_live_sockets",
            &["pod=\"leaky\"", "namespace=\"team-a\""]
        ),
        Some(41.0),
        "{m}"
    );
    assert!(!m.contains("team-b"), "{m}");
    assert!(!m.contains(&format!("pid=\"{other}\"")), "{m}");
    let (status, _, body) = http_get(&format!("http://{listen}/report"), None);
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&body).unwrap();
    let mut pids = pids_in(&report);
    pids.sort();
    let mut want = vec![u64::from(leaky), u64::from(late), u64::from(slow)];
    want.sort();
    assert_eq!(pids, want, "{report}");
    let p = process(&report, late);
    assert_eq!(p["k8s"]["pod"], "late");
    assert_eq!(p["live_sockets"], proc_socket_fds(late).len() as u64, "{p}");
    // Traced from its first socket: each of the app's 21 sockets seen opened (a runtime sync
    // socket inherited by `runc init` and closed before the exec may add one preexisting).
    assert_eq!(p["opened"], 21, "{p}");
    for s in p["suspects"].as_array().unwrap() {
        assert_eq!(s["before_tracing"], 0, "{s}");
        assert_eq!(s["call_site"], "main", "{s}");
    }

    // Running before sockleak, its sockets made after: all seen opened, accepted ones too.
    let p = process(&report, slow);
    assert_eq!(p["k8s"]["pod"], "slow");
    assert_eq!(p["live_sockets"], proc_socket_fds(slow).len() as u64, "{p}");
    assert_eq!(p["opened"], 21, "{p}");
    assert_eq!(p["preexisting"], 0, "{p}");

    node.stop_containerd();
    let warned = tr.wait_log("the CRI runtime stopped answering");
    assert!(warned.contains(&sock), "{warned}");
    sleep_ms(3000); // three more listings fail
    let m = metrics(port);
    assert_eq!(
        sample(&m, "sockleak_live_sockets", &late_labels),
        Some(21.0),
        "names known before stay: {m}"
    );
    node.run_containerd();
    tr.wait_log("answers again");
    let (_, err) = tr.stop_output();
    assert_eq!(
        err.matches("stopped answering").count(),
        1,
        "said once: {err}"
    );

    // The DaemonSet's way: every process, Kubernetes names as labels, pod and pid left off.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let tr = Trace::serve(&[
        "--all",
        "--cri-socket",
        &sock,
        "--listen",
        &listen,
        "--interval",
        "0.5",
        "--top",
        "100000",
        "--metrics-labels",
        "namespace,container,comm",
    ]);
    let team_a = ["namespace=\"team-a\",container=\"app\",comm=\"leaky\""];
    let team_b = ["namespace=\"team-b\",container=\"app\",comm=\"leaky\""];
    let m = metrics_until(port, |m| {
        sample(m, "sockleak_live_sockets", &team_a) == Some(83.0)
            && sample(m, "sockleak_live_sockets", &team_b) == Some(18.0)
    });
    // team-a's three app containers (leaky 41, late 21, slow 21) are one series.
    assert_eq!(
        sample(
            &m,
            "sockleak_live_sockets",
            &["namespace=\"team-a\",container=\"app\",comm=\"leaky\""]
        ),
        Some(83.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "sockleak_live_sockets",
            &["namespace=\"team-b\",container=\"app\",comm=\"leaky\""]
        ),
        Some(18.0),
        "{m}"
    );
    assert!(!m.contains("pod=\""), "{m}");

    // A runtime that hangs (frozen: it accepts, never answers) holds only its own calls, up
    // to their deadline: the session goes on answering scrapes meanwhile.
    let containerd = node.containerd.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(containerd, libc::SIGSTOP) };
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(7) {
        let t = Instant::now();
        let m = metrics(port);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a scrape took {:?} while the runtime hangs",
            t.elapsed()
        );
        assert_eq!(sample(&m, "sockleak_live_sockets", &team_a), Some(83.0));
        sleep_ms(300);
    }
    let warned = tr.wait_log("the CRI runtime stopped answering");
    assert!(warned.contains("no answer to"), "{warned}");
    unsafe { libc::kill(containerd, libc::SIGCONT) };
    tr.wait_log("answers again");
    let (_, err) = tr.stop_output();
    assert_eq!(err.matches("stopped answering").count(), 1, "{err}");
    eprintln!("kubernetes scenario done in {:?}", t0.elapsed());
}

/// A socket that is not a CRI runtime's: one line, at once.
#[test]
fn cri_socket_that_is_not_cri() {
    if !common::require_bpf() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockleak-notcri-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("http.sock");
    let l = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                // Like a server that reads a whole request first: the client's first call is
                // on the wire when the answer comes.
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                sleep_ms(200);
                let _ = c.set_nonblocking(true);
                let _ = c.read(&mut buf);
                let _ = c.set_nonblocking(false);
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            });
        }
    });
    let p = path.to_str().unwrap();
    let t = Instant::now();
    let e = fails(&["--cri-socket", p, "--namespace", "payments"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        e.starts_with(&format!(
            "sockleak: --namespace payments: needs the node's CRI runtime, and {p}: not a CRI gRPC server"
        )),
        "{e}"
    );
    // Without a filter an explicit socket that is no CRI runtime's is an error too.
    let t = Instant::now();
    let e = fails(&["--cri-socket", p, "--all"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        e.starts_with(&format!(
            "sockleak: --cri-socket {p}: not a CRI gRPC server"
        )),
        "{e}"
    );
    // A missing one: the runtime is not running; a filter cannot work without it.
    let gone = dir.join("gone.sock");
    let e = fails(&[
        "--cri-socket",
        gone.to_str().unwrap(),
        "--namespace",
        "payments",
    ]);
    assert!(e.contains("no such socket"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
