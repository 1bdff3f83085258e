//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sockleak",
    version,
    about = "Find socket leaks in live Linux processes with eBPF",
    long_about = "sockleak attaches eBPF tracepoints to socket creation, connect, accept and close, \
                  keeps every traced process's live sockets, and reports the call sites that open \
                  sockets without closing them, and the socket/accept/connect calls that fail \
                  with EMFILE and friends. It only reads: traced processes are never changed."
)]
pub struct Cli {
    /// Log level for sockleak's own diagnostics (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace processes and report sockets opened without a matching close.
    Trace(TraceArgs),
    /// Keep tracing and serve Prometheus/OpenMetrics metrics, the JSON report and a health check.
    Serve(ServeArgs),
}

/// How user stacks are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StackMode {
    /// Frame pointers; DWARF unwinding for processes found to lack them (CPython, or any
    /// whose first stack does not reach its thread's start): in the kernel with the binaries'
    /// compiled CFI, or from stack copies where that cannot walk.
    Auto,
    /// Frame pointers only (the cheapest; stacks of code without them are cut short).
    Fp,
    /// DWARF unwinding for every process (kernel tables, else stack copies).
    Dwarf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A live summary every interval, then a leak report.
    Text,
    /// JSON Lines: `snapshot` objects every interval, then one `report`.
    Json,
}

/// Which processes to trace and how; shared by `trace` and `serve`.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Process to trace (repeatable). Children it forks after sockleak starts are traced too.
    #[arg(
        long = "pid",
        short = 'p',
        value_name = "PID",
        allow_negative_numbers = true
    )]
    pub pids: Vec<i64>,

    /// Trace every process in this cgroup v2 directory and below (repeatable; absolute, or
    /// relative to the cgroup2 mount).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,

    /// Trace a container by id (full or unique prefix; docker, containerd, CRI-O, podman).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,

    /// Trace the containers of the pods in this Kubernetes namespace (names come from the
    /// node's CRI runtime; see --cri-socket). Pods started later are traced from their first
    /// socket.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// Trace the containers of this pod (give its --namespace too).
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,

    /// Trace only containers with this name (as in the pod spec; with --namespace/--pod/
    /// --selector, or alone for every pod's container of that name).
    #[arg(long = "container-name", value_name = "NAME")]
    pub container_name: Option<String>,

    /// Trace the containers of pods whose labels match (kubectl's equality selectors:
    /// `app=web,tier!=db,canary,!legacy`).
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// The CRI runtime's socket, for Kubernetes names and the filters above (default: the
    /// first of /run/containerd/containerd.sock, /run/k3s/containerd/containerd.sock,
    /// /var/run/crio/crio.sock that exists). Without a runtime, names stay empty.
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,

    /// Seconds between listings of the CRI runtime's pods (it is also listed as soon as an
    /// unknown container id shows up).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, hide = true)]
    pub cri_resync: f64,

    /// Trace every process on the host.
    #[arg(long)]
    pub all: bool,

    /// Seconds between live summaries / snapshots.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 2.0,
        allow_negative_numbers = true
    )]
    pub interval: f64,

    /// A socket is a leak suspect once it has been open this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub min_age: f64,

    /// Capacity of the kernel's live-socket map (sockets tracked at once; preallocated, about
    /// 130 bytes each).
    #[arg(long, value_name = "N", default_value_t = 131_072)]
    pub max_sockets: u32,

    /// Size of the kernel-to-userspace event ring buffer in KiB (a power of two, at least 4).
    /// Only rare events use it (fork, exec, exit, failures, new call sites).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub ring_buffer_kib: u32,

    /// Report a call site only when at least this many of its sockets are suspect.
    /// A single idle socket per call site is usually a connection pool, not a leak; sockets in
    /// CLOSE_WAIT are reported regardless.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub min_count: u64,

    /// Capacity of the kernel's stack map (distinct call sites).
    #[arg(long, value_name = "N", default_value_t = 8192, hide = true)]
    pub stack_entries: u32,

    /// Walk the user stack for 1 in N socket creations (the walk is most of the per-socket
    /// cost); the others are attributed to the latest sampled stack with the same caller.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub stack_sample: u32,

    /// Do not capture user stacks (cheaper; suspects are then grouped by process only).
    #[arg(long)]
    pub no_stacks: bool,

    /// How user stacks are taken: frame pointers, or the binaries' DWARF unwind information
    /// (docs/benchmarks.md gives the cost of each).
    #[arg(long, value_enum, default_value_t = StackMode::Auto)]
    pub stack_mode: StackMode,

    /// Kernel memory for unwind tables, in MiB (preallocated; 0: none). Code without frame
    /// pointers is unwound in the kernel with its CFI compiled into these tables, built only
    /// for files seen on a socket's stack and shared by every process mapping the same file;
    /// when full, the least used are evicted. Without tables, such stacks are copied (16 KiB
    /// per socket) and unwound in userspace.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub unwind_table_mib: u32,

    /// For JVMs: run `jcmd PID Compiler.perfmap` (as the JVM's user) when a new stack needs
    /// names, so JIT-compiled Java methods are named. This asks the JVM to write
    /// /tmp/perf-PID.map: an action on the traced process, so it is off unless asked for.
    #[arg(long)]
    pub java_perfmap: bool,

    /// Never attach uprobes. By default sockleak places them in traced Go HTTP clients
    /// (net/http: `dialConn` counts their Transports, `queueForDial`, `tryDeliver`,
    /// `persistConn.roundTrip` and `tryPutIdleConn` name the code that sent each connection's
    /// requests) and node processes (libuv's `uv_tcp_init`, `uv_tcp_connect`, `uv_tcp_bind`,
    /// `uv_close`: the code that called net.connect). Without them, Go diagnoses are "likely"
    /// and such sockets are named by the stack they were made on.
    #[arg(long)]
    pub no_uprobes: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Stop after this many seconds (default: until Ctrl-C or every target has exited).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the final report to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Address to serve /metrics, /report and /healthz on. Loopback by default: a non-loopback
    /// address exposes stacks, peers and limits of every traced process to whoever can reach it
    /// (see --web-config).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9669")]
    pub listen: std::net::SocketAddr,

    /// TLS (and client certificates) and basic auth, in the Prometheus exporter-toolkit
    /// web-configuration format: `tls_server_config` (cert_file, key_file, client_ca_file,
    /// client_auth_type, min_version, max_version) and `basic_auth_users` (bcrypt hashes).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<std::path::PathBuf>,

    /// Serve only /metrics and /healthz: /report (every traced process's stacks, peers and
    /// findings as JSON) answers 404. For exporters that only feed Prometheus.
    #[arg(long)]
    pub no_report_endpoint: bool,

    /// Processes with their own metric labels (the most suspicious); the rest are summed.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,

    /// Which labels identify a process in /metrics, comma-separated, from pid, comm, cgroup,
    /// container_id, namespace, pod, container (the Kubernetes container name). Series that
    /// then share their labels are summed (limits: the highest; time to the limit: the
    /// shortest). Leaving out pid and pod keeps the series count steady while pods churn.
    #[arg(
        long,
        value_name = "LABELS",
        default_value = "pid,comm,cgroup,container_id,namespace,pod,container"
    )]
    pub metrics_labels: String,

    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// The shipped deployment examples run commands this CLI accepts.
    #[test]
    fn deploy_examples_parse() {
        let ds: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../deploy/daemonset.yaml")).unwrap();
        let args: Vec<String> = ds["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("sockleak".to_string()).chain(args))
            .expect("the DaemonSet's args parse");
        let Command::Serve(s) = cli.command else {
            panic!("the DaemonSet runs serve")
        };
        assert!(s.no_report_endpoint, "the DaemonSet serves /metrics only");
        assert!(s.target.all, "the DaemonSet traces every pod");
        let labels = crate::serve::metrics::parse_labels(&s.metrics_labels).unwrap();
        use crate::serve::metrics::Label;
        assert!(labels.contains(&Label::Namespace) && labels.contains(&Label::Container));
        assert!(
            !labels.contains(&Label::Pod) && !labels.contains(&Label::Pid),
            "pods churn: no pod or pid label by default"
        );
        // The CRI runtime's socket directory, read-only.
        let spec = &ds["spec"]["template"]["spec"];
        let mount = spec["containers"][0]["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/run/containerd")
            .expect("the CRI socket is mounted");
        assert_eq!(mount["readOnly"], true);
        let sockets = crate::host::cri::client::DEFAULT_SOCKETS;
        assert!(sockets[0].starts_with("/run/containerd/"), "{sockets:?}");

        let unit = include_str!("../../deploy/sockleak.service");
        for line in unit.lines() {
            let line = line.trim_start_matches("#   ");
            if let Some(cmd) = line.strip_prefix("ExecStart=") {
                let words = cmd.split_whitespace().map(|w| w.to_string());
                Cli::try_parse_from(words).unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        }
    }
}
