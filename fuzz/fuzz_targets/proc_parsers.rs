//! Text from /proc, /sys and tracefs: every parser takes any input without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockleak::{bpf, cgroup, netns, preflight, procfs};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
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
});
