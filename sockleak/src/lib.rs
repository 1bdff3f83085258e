//! sockleak's userspace: loads the kernel programs, mirrors each traced process's live
//! sockets from their events, and reports leak suspects and failed calls.

pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod preflight;
pub mod procfs;
pub mod report;
pub mod serve;
pub mod sockdiag;
pub mod stacks;
pub mod trace;
pub mod tracker;

#[cfg(test)]
mod fuzz_props;

/// Runs every parser of text sockleak does not control (/proc, /sys, mountinfo, cgroup files,
/// tracefs formats) on `s`. Shared by the proptest properties and the cargo-fuzz target.
#[doc(hidden)]
pub fn exercise_parsers(s: &str) {
    let _ = procfs::parse_status(s);
    let _ = procfs::parse_fd_limit(s);
    let _ = procfs::parse_stat_start_time(s);
    let _ = procfs::parse_stat_ppid(s);
    let _ = procfs::parse_socket_link(s);
    let _ = procfs::parse_maps(s);
    let _ = cgroup::parse_cgroup2_mount(s);
    let _ = cgroup::parse_proc_cgroup(s);
    let _ = cgroup::container_id(s);
    let _ = netns::parse_port_range(s);
    let _ = netns::parse_file_nr(s);
    let _ = preflight::parse_cap_eff(s);
    let _ = bpf::parse_field_offset(s, "group_dead");
}
