//! The report's data model: the JSON output contract (docs/json-output.md), whose field names
//! are a public interface, and how kernel values are named in it (`names`). Plain data: the
//! report builder fills it, the diagnoses read it, text, JSON and metrics render it.

pub mod names;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::symbols::stacks::Frame;

#[derive(Debug, Clone, Serialize)]
pub struct FdLimitJson {
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    pub endpoint: String,
    pub count: u64,
}

/// A process that passed sockets to this one (SCM_RIGHTS, pidfd_getfd).
#[derive(Debug, Clone, Serialize)]
pub struct Sender {
    pub pid: u32,
    /// Its name, when it still runs.
    pub comm: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suspect {
    pub count: u64,
    /// Age of the oldest socket; for sockets open before tracing began, the time traced (a
    /// lower bound: see `before_tracing`).
    pub oldest_age_s: f64,
    /// Of `count`, sockets already open when tracing began: their age is unknown.
    pub before_tracing: u64,
    pub origin: String,
    pub kinds: BTreeMap<String, u64>,
    /// Peers. For accepted sockets, by client address without its (ephemeral) port.
    pub remotes: Vec<Remote>,
    /// For accepted sockets: the local address they were accepted on (empty otherwise: a
    /// client's local ports are ephemeral noise).
    pub locals: Vec<Remote>,
    pub states: BTreeMap<String, u64>,
    /// Longest idle time (no data sent or received) among the group's TCP sockets.
    pub max_idle_s: Option<f64>,
    /// Per TCP state (the closing states and SYN_SENT), the longest time one of the group's
    /// sockets has been in it, to within one interval.
    pub state_age_s: BTreeMap<String, f64>,
    /// States whose age is a lower bound: a socket was already in it when tracing began.
    pub state_age_at_least: Vec<String>,
    /// For received sockets: who sent them, where the kernel told (empty otherwise).
    pub senders: Vec<Sender>,
    /// The first application frame ("symbol (file:line)"), past the runtime's own frames, of
    /// the origin's stack when there is one (`origin_call`), else of the socket's stack;
    /// suspects are grouped by it.
    pub call_site: Option<String>,
    /// With an origin: how it was joined, and that the socket itself was made by the runtime
    /// (on Go's dial goroutine, on a later Node tick). Without one: set when the runtime made
    /// the socket asynchronously or frames could not be named, saying so.
    pub call_site_note: Option<String>,
    /// The most frequent stack of this call site, and how many of the sockets have it: the
    /// stack the socket was made on (for a joined origin, the runtime's).
    pub stack: Vec<Frame>,
    pub stack_count: u64,
    /// The call site's other stacks (JIT tiers, callers), most frequent first.
    pub other_stacks: Vec<StackCount>,
    /// Where the user asked for these connections when a runtime made them later (Go's
    /// net/http, Node's libuv), joined by uprobes; null otherwise.
    pub origin_call: Option<OriginCall>,
}

/// The code that asked for a connection a runtime made later on its behalf.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OriginCall {
    /// How it was joined to the socket: `go-wantconn`, `go-roundtrip` or `node-handle`.
    pub join: &'static str,
    /// Its call site (as `Suspect::call_site`); null when its frames could not be named.
    pub call_site: Option<String>,
    /// The origin's stack (the most frequent one when the call site has several).
    pub stack: Vec<Frame>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StackCount {
    pub count: u64,
    pub stack: Vec<Frame>,
}

/// How sure a diagnosis is: `certain` when every check it needs was made, `likely` when one
/// could not be (its evidence says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Certain,
    Likely,
}

/// A known leak pattern recognised in a process (docs/json-output.md lists the ids).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub pattern: &'static str,
    pub summary: String,
    /// Short statements with the measured numbers.
    pub evidence: Vec<String>,
    pub fix: String,
    pub call_site: Option<String>,
    pub confidence: Confidence,
    /// The origin of the suspect the diagnosis is about, when it has one (as
    /// `Suspect::origin_call`).
    pub origin_call: Option<OriginCall>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    pub queued: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortRange {
    pub low: u32,
    pub high: u32,
    pub size: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostFiles {
    pub allocated: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub syscall: String,
    pub errno: String,
    pub count: u64,
    pub first_s: f64,
    pub last_s: f64,
    /// Thread of the last failure.
    pub tid: u32,
    pub open_fds_at_failure: Option<u64>,
    /// Destination of a failed connect.
    pub remote: Option<String>,
    /// accept/accept4 failing with EMFILE/ENFILE fast and often.
    pub spinning: bool,
    /// The listener's accept queue (for accept failures, when the listener is still open).
    pub listen_backlog: Option<Backlog>,
    /// Ephemeral port range of the process's network namespace (connect failures).
    pub port_range: Option<PortRange>,
    /// Local ports tied up towards `remote`, TIME_WAIT included (connect failures).
    pub ports_in_use_to_remote: Option<u64>,
    /// fs.file-nr of the host (ENFILE).
    pub host_files: Option<HostFiles>,
    /// What the failure means and what to do.
    pub note: Option<String>,
    pub call_site: Option<String>,
    /// As `Suspect::call_site_note`.
    pub call_site_note: Option<String>,
    pub stack: Vec<Frame>,
}

/// A failure as it happens (`--format json`), at most once a second per call site.
#[derive(Debug, Clone, Serialize)]
pub struct FailureLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub t_s: f64,
    pub pid: u32,
    pub comm: String,
    pub tid: u32,
    pub syscall: String,
    pub errno: String,
    /// Failures at this call site so far.
    pub count: u64,
    /// Failures at this call site not streamed since the previous line.
    pub suppressed: u64,
    pub open_fds: Option<u64>,
    pub remote: Option<String>,
    pub stack: Vec<Frame>,
}

/// TIME_WAIT sockets towards one destination (outgoing: they hold local ports towards it), or
/// from one client address to a listening port (incoming).
#[derive(Debug, Clone, Serialize)]
pub struct TimeWait {
    /// Network namespace inode (several namespaces may be traced).
    pub netns: u64,
    /// `outgoing` or `incoming`.
    pub direction: &'static str,
    /// Outgoing: the destination endpoint. Incoming: the client address (its ports are
    /// ephemeral noise).
    pub remote: String,
    /// Incoming: the listening port they were accepted on.
    pub local_port: Option<u16>,
    pub count: u64,
    pub port_range_size: Option<u32>,
    pub ratio: Option<f64>,
    /// Above half of the port range: connect() to this destination will soon fail with
    /// EADDRNOTAVAIL.
    pub flagged: bool,
}

/// A container's place in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K8s {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The container's name in the pod spec.
    pub container: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub ns_pid: Option<u32>,
    pub comm: String,
    /// cgroup v2 path, and the container id found in it.
    pub cgroup: Option<String>,
    pub container: Option<String>,
    /// The Kubernetes names of that container, from the node's CRI runtime (null outside a
    /// pod, or when no runtime answered).
    pub k8s: Option<K8s>,
    pub exited: bool,
    pub fd_limit: Option<FdLimitJson>,
    pub open_fds: Option<u64>,
    pub live_sockets: u64,
    pub opened: u64,
    pub closed: u64,
    pub preexisting: u64,
    /// Sockets that appeared (adopted from /proc) or went away without sockleak seeing the
    /// syscall: non-zero is a path sockleak does not hook yet.
    pub unseen_opened: u64,
    pub unseen_closed: u64,
    /// io_uring fixed-file ("direct") sockets open now: not fds, not in `live_sockets`.
    pub direct_sockets: u64,
    pub growth_per_s: f64,
    pub seconds_to_fd_limit: Option<f64>,
    /// open_fds / soft limit.
    pub fd_usage_ratio: Option<f64>,
    /// How to raise a limit that is part of the problem: the `fd-limit-too-low` diagnosis's
    /// fix, null when the limit does not matter.
    pub limit_advice: Option<String>,
    /// Known leak patterns, most important first.
    pub diagnoses: Vec<Diagnosis>,
    pub warnings: Vec<String>,
    /// TCP states of all live socket fds (not only suspects).
    pub tcp_states: BTreeMap<String, u64>,
    /// Addresses it listens on (TCP).
    pub listening: Vec<String>,
    pub suspects: Vec<Suspect>,
    pub failures: Vec<Failure>,
    /// Stacks the kernel could not walk with its unwind tables (code without frame pointers),
    /// copied and unwound in userspace instead: by reason and where the walk stopped.
    pub stack_fallbacks: Vec<StackFallback>,
}

/// Stacks that fell back from the kernel's table walk to a copy, for one reason at one place.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackFallback {
    /// `no CFI`, `CFI beyond the kernel tables`, `signal frame`, `no executable file mapping`
    /// (JIT code, the vDSO), `no table loaded` (being built), `stack unreadable`, `CFI does
    /// not describe the code`.
    pub reason: String,
    /// Where the walk stopped: "function+0xoff in /path" or the address and its module.
    pub at: String,
    pub count: u64,
}

/// sockleak's own cost, as `/metrics` gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OwnCost {
    /// BPF run time of sockleak's programs per socket made by a traced process, measured
    /// while the kernel's run-time statistics were on (`bpf_measured_s`); null when no socket
    /// was made then.
    pub bpf_ns_per_socket: Option<f64>,
    pub bpf_measured_s: f64,
    /// Sockets made while it was measured.
    pub bpf_sockets: u64,
    /// sockleak's CPU time over the trace, as a share of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    /// Kernel unwind tables; null when off (`--unwind-table-mib 0`).
    pub unwind_tables: Option<TablesCost>,
}

/// The kernel unwind tables' share of the own cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TablesCost {
    /// Bytes of rows in use, and the array's size (kernel memory, preallocated).
    pub bytes: u64,
    pub cap_bytes: u64,
    pub files: u64,
    pub processes: u64,
    pub evictions: u64,
    /// CPU time spent building tables.
    pub build_cpu_s: f64,
    /// Stacks walked in the kernel with them, and walks that fell back to a stack copy.
    pub walked: u64,
    pub fallbacks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_s: f64,
    pub lost_events: u64,
    /// Per cause: ring_buffer_full, live_map_full, stack_lost.
    pub lost: BTreeMap<&'static str, u64>,
    /// True when events were lost: counts are then lower bounds.
    pub counts_are_lower_bounds: bool,
    /// Sum of the processes' `unseen_opened` / `unseen_closed`.
    pub unseen_opened: u64,
    pub unseen_closed: u64,
    /// TIME_WAIT that matters: with `--all` the host's (and traced namespaces') view; else only
    /// towards the traced processes' destinations and listening ports.
    pub time_wait: Vec<TimeWait>,
    pub processes: Vec<ProcessReport>,
    /// sockleak's own cost (BPF time per socket, CPU, memory, unwind tables).
    pub own_cost: OwnCost,
}

/// One line per interval in `--format json`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub t_s: f64,
    pub lost_events: u64,
    pub processes: Vec<SnapshotProcess>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotProcess {
    pub pid: u32,
    pub comm: String,
    pub live_sockets: u64,
    pub opened: u64,
    pub closed: u64,
    pub open_fds: Option<u64>,
    pub fd_limit: Option<FdLimitJson>,
    pub growth_per_s: f64,
    pub seconds_to_fd_limit: Option<f64>,
    /// Failed calls so far (all call sites).
    pub failures: u64,
}
