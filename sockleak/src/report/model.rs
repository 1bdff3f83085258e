//! The JSON output contract (docs/json-output.md). Field names are a public interface.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stacks::Frame;

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

#[derive(Debug, Clone, Serialize)]
pub struct Suspect {
    pub count: u64,
    pub oldest_age_s: f64,
    pub origin: String,
    pub kinds: BTreeMap<String, u64>,
    pub remotes: Vec<Remote>,
    pub states: BTreeMap<String, u64>,
    /// Longest idle time (no data sent or received) among the group's TCP sockets.
    pub max_idle_s: Option<f64>,
    pub stack: Vec<Frame>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub syscall: String,
    pub errno: String,
    pub count: u64,
    pub first_s: f64,
    pub last_s: f64,
    pub open_fds_at_failure: Option<u64>,
    /// Destination of a failed connect.
    pub remote: Option<String>,
    pub stack: Vec<Frame>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub ns_pid: Option<u32>,
    pub comm: String,
    pub exited: bool,
    pub fd_limit: Option<FdLimitJson>,
    pub open_fds: Option<u64>,
    pub live_sockets: u64,
    pub opened: u64,
    pub closed: u64,
    pub preexisting: u64,
    pub growth_per_s: f64,
    pub seconds_to_fd_limit: Option<f64>,
    pub suspects: Vec<Suspect>,
    pub failures: Vec<Failure>,
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
    pub processes: Vec<ProcessReport>,
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
}
