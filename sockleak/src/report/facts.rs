//! What a report needs from outside the tracker, as plain data. The session gathers it in one
//! place (`trace::facts`) from /proc, the socket tables and the kernel's maps; the builder is a
//! pure function of the tracker's state and these facts, so recorded facts build the same
//! report every time.

use std::net::SocketAddr;

use hashbrown::HashMap;

use crate::{
    host::{sockdiag::NetView, tcp_ages::StateAges},
    symbols::stacks::Stacks,
};

/// Facts about the host and the traced processes at report time.
#[derive(Default)]
pub struct Facts {
    /// Socket tables per network-namespace inode.
    pub views: HashMap<u64, NetView>,
    /// Network namespace of each process, where known; others are in `default_netns`.
    pub netns: HashMap<u32, u64>,
    /// sockleak's own network namespace.
    pub default_netns: Option<u64>,
    /// Connects per (process, destination) while traced (the kernel's DESTS).
    pub connects: HashMap<u32, Vec<(SocketAddr, u64)>>,
    /// Per live process: what /proc says of its sockets.
    pub procs: HashMap<u32, ProcFacts>,
    /// Stack sampling: the latest sampled stack id of a (process, leaf caller), for sockets
    /// whose own stack was sampled out.
    pub sampled: HashMap<(u32, u64), i32>,
    /// Names of processes that sent sockets to traced ones (those still running).
    pub comms: HashMap<u32, String>,
    /// The host's file handles (allocated, max), read when a process failed with ENFILE.
    pub host_files: Option<(u64, u64)>,
    /// Kubernetes names by container id (from the CRI runtime).
    pub k8s: HashMap<String, crate::model::K8s>,
    /// Per process: stacks the kernel's table walk handed over to copies, by reason and place.
    pub stack_fallbacks: HashMap<u32, Vec<crate::model::StackFallback>>,
}

/// What /proc says of one live process's sockets.
#[derive(Debug, Default, Clone)]
pub struct ProcFacts {
    /// Socket fd → inode, from `/proc/PID/fd`.
    pub inodes: HashMap<u32, u64>,
    /// Socket fd → kind from sockfs, for sockets neither the kernel record nor the socket
    /// tables name (made before tracing, or by a path sockleak does not hook).
    pub kinds: HashMap<u32, &'static str>,
}

static NO_PROC: std::sync::LazyLock<ProcFacts> = std::sync::LazyLock::new(ProcFacts::default);

impl Facts {
    /// The socket tables of `pid`'s network namespace.
    pub fn view(&self, pid: u32) -> Option<&NetView> {
        let ns = self.netns.get(&pid).copied().or(self.default_netns)?;
        self.views.get(&ns)
    }

    /// What /proc said of `pid` (nothing for a process that has exited).
    pub fn of(&self, pid: u32) -> &ProcFacts {
        self.procs.get(&pid).unwrap_or(&NO_PROC)
    }

    /// `pid`'s connects per destination while traced.
    pub fn connects_of(&self, pid: u32) -> &[(SocketAddr, u64)] {
        self.connects.get(&pid).map_or(&[][..], Vec::as_slice)
    }
}

/// Settings and the session's own state the builder reads (symbolized stacks, TCP state
/// ages): in memory, no I/O.
pub struct BuildCtx<'a> {
    pub stacks: &'a Stacks,
    pub ages: &'a StateAges,
    pub now_ns: u64,
    pub start_ns: u64,
    pub min_age_ns: u64,
    pub min_count: u64,
    /// Remotes listed per suspect.
    pub max_remotes: usize,
}
