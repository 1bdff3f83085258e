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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A live summary every interval, then a leak report.
    Text,
    /// JSON Lines: `snapshot` objects every interval, then one `report`.
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Process to trace (repeatable). Children it forks after sockleak starts are traced too.
    #[arg(long = "pid", short = 'p', value_name = "PID")]
    pub pids: Vec<i64>,

    /// Trace every process in this cgroup v2 directory and below (repeatable; absolute, or
    /// relative to the cgroup2 mount).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,

    /// Trace a container by id (full or unique prefix; docker, containerd, CRI-O, podman).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,

    /// Trace every process on the host.
    #[arg(long)]
    pub all: bool,

    /// Stop after this many seconds (default: until Ctrl-C or every target has exited).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Seconds between live summaries / snapshots.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub interval: f64,

    /// A socket is a leak suspect once it has been open this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub min_age: f64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the final report to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Capacity of the kernel's live-socket map (sockets tracked at once).
    #[arg(long, value_name = "N", default_value_t = 262_144)]
    pub max_sockets: u32,

    /// Report a call site only when at least this many of its sockets are suspect.
    /// A single idle socket per call site is usually a connection pool, not a leak; sockets in
    /// CLOSE_WAIT are reported regardless.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub min_count: u64,

    /// Capacity of the kernel's stack map (distinct call sites).
    #[arg(long, value_name = "N", default_value_t = 8192, hide = true)]
    pub stack_entries: u32,

    /// Do not capture user stacks (cheaper; suspects are then grouped by process only).
    #[arg(long)]
    pub no_stacks: bool,
}
