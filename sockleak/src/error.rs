//! Errors a user can act on. Each prints as one line naming the input and what to do.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum UserError {
    #[error("--pid {0}: not a process id (expected a positive integer)")]
    BadPid(i64),
    #[error("--pid {0}: no such process; check the pid with `ps -p {0}`")]
    NoSuchPid(u32),
    #[error(
        "--pid {pid}: {comm} is a kernel thread; it has no file descriptors to leak. Give the pid of a user-space process"
    )]
    KernelThread { pid: u32, comm: String },
    #[error(
        "nothing to trace: give --pid PID, --cgroup PATH, --container ID (each repeatable), --namespace NS [--pod NAME], --container-name NAME, --selector k=v, or --all"
    )]
    NoTarget,
    #[error(
        "--all conflicts with --pid/--cgroup/--container/--namespace/--pod/--container-name/--selector: --all already traces every process"
    )]
    PidWithAll,
    #[error("--pod {0}: give its --namespace too (pod names are unique only within a namespace)")]
    PodWithoutNamespace(String),
    #[error("--{flag} {value:?}: {reason}")]
    BadK8sName {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--selector {input}: {reason}")]
    BadSelector { input: String, reason: String },
    #[error("--metrics-labels {input}: {reason}")]
    BadMetricsLabels { input: String, reason: String },
    /// The CRI runtime could not be used for a filter: one line from host::cri.
    #[error("{filter}: needs the node's CRI runtime, and {reason}")]
    Cri { filter: String, reason: String },
    /// `--cri-socket` names something that is not a CRI runtime's socket.
    #[error("--cri-socket {0}")]
    CriSocket(String),
    /// A Kubernetes filter matches nothing on this node (the line names the input and what is near).
    #[error("{0}")]
    K8sNoMatch(String),
    #[error("--duration {0}: must be a positive number of seconds")]
    BadDuration(f64),
    #[error("--interval {0}: must be a positive number of seconds")]
    BadInterval(f64),
    #[error("--min-age {0}: must be zero or a positive number of seconds")]
    BadMinAge(f64),
    #[error("--max-sockets {0}: must be between 1 and 16777216")]
    BadMaxSockets(u32),
    #[error(
        "missing privileges: {missing} (run as root, e.g. `sudo sockleak ...`, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
    )]
    Privileges { missing: String },
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({reason}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    Tracefs { reason: String },
    #[error(
        "kernel BTF not found at {0}; sockleak needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf(PathBuf),
    #[error(
        "this sockleak binary was built without its eBPF object; run `cargo xtask build-ebpf --release` and rebuild (or use `cargo xtask run -- ...`)"
    )]
    StubObject,
    /// The whole line, from `kernel::features`: what the kernel lacks, and what is needed.
    #[error("{0}")]
    KernelLacks(String),
    #[error("the kernel lacks the required tracepoint {0}; sockleak cannot run without it")]
    MissingTracepoint(String),
    #[error(
        "the kernel's tracepoint {tracepoint} has another layout ({detail}); sockleak cannot read it"
    )]
    TracepointLayout { tracepoint: String, detail: String },
    #[error("--ring-buffer-kib {0}: must be a power of two of at least 4")]
    BadRingBuffer(u32),
    #[error("--cgroup {}: {reason}", path.display())]
    BadCgroup { path: PathBuf, reason: String },
    #[error("--container {id}: {reason}")]
    BadContainer { id: String, reason: String },
    #[error("--cgroup/--container: at most {0} cgroups can be traced at once")]
    TooManyCgroups(u32),
    #[error("--stack-sample {0}: must be at least 1 (1 walks every stack)")]
    BadStackSample(u32),
    #[error("--unwind-table-mib {0}: must be between 0 (no kernel unwind tables) and 1024")]
    BadUnwindTableMib(u32),
    #[error("--top 0: must be at least 1")]
    BadTop,
    #[error("--listen {addr}: {reason}")]
    Listen {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("--web-config {}: {reason}", path.display())]
    WebConfig { path: PathBuf, reason: String },
    #[error("--output {path}: {reason}")]
    Output { path: PathBuf, reason: String },
}
